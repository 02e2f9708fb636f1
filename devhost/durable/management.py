"""Instance management behind the Durable HTTP API: start, status, events, terminate, purge."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devhost.durable.history import EventType, format_time, new_event, parse_time, utcnow
from devhost.durable.records import (
    RUNTIME_STATUSES,
    TERMINAL_STATUSES,
    ControlMessage,
    InstanceRecord,
)
from devhost.durable.store import TaskHubStorage

_FORBIDDEN_ID_CHARS = set("/\\#?")


class ManagementError(Exception):
    """A request the Durable HTTP API answers with a 4xx status."""

    status = 400
    code = "BadRequest"


class BadManagementRequest(ManagementError):
    status, code = 400, "BadRequest"


class InstanceNotFound(ManagementError):
    status, code = 404, "NotFound"


class InstanceConflict(ManagementError):
    status, code = 409, "Conflict"


class InstanceGone(ManagementError):
    status, code = 410, "Gone"


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass(frozen=True)
class InstanceQuery:
    """Filters of the list and purge-by requests."""

    created_from: datetime | None = None
    created_to: datetime | None = None
    statuses: frozenset[str] = frozenset()
    id_prefix: str = ""

    @classmethod
    def from_params(cls, params: Any) -> InstanceQuery:
        """Read `createdTimeFrom`, `createdTimeTo`, `runtimeStatus` (comma list),
        `instanceIdPrefix`."""
        try:
            created_from = (parse_time(params["createdTimeFrom"])
                            if params.get("createdTimeFrom") else None)
            created_to = (parse_time(params["createdTimeTo"])
                          if params.get("createdTimeTo") else None)
        except ValueError as exc:
            raise BadManagementRequest(f"invalid createdTimeFrom/createdTimeTo: {exc}") from exc
        statuses = frozenset(s.strip() for s in params.get("runtimeStatus", "").split(",")
                             if s.strip())
        unknown = statuses - RUNTIME_STATUSES
        if unknown:
            raise BadManagementRequest(f"unknown runtimeStatus {sorted(unknown)}; expected "
                                       f"some of {sorted(RUNTIME_STATUSES)}")
        return cls(created_from, created_to, statuses, params.get("instanceIdPrefix", ""))

    def matches(self, status: str, created: str) -> bool:
        if self.statuses and status not in self.statuses:
            return False
        if self.created_from is None and self.created_to is None:
            return True
        try:
            moment = parse_time(created)
        except ValueError:
            return False
        return ((self.created_from is None or moment >= self.created_from)
                and (self.created_to is None or moment <= self.created_to))


def serialized_payload(body: bytes) -> str | None:
    """A request body as the serialized JSON payload the history keeps.

    The Python client posts `json=df_dumps(value)`, i.e. a JSON string holding the JSON;
    other callers post the JSON value itself. Both end up as the serialized value.
    """
    if not body.strip():
        return None
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise BadManagementRequest(f"request body is not JSON: {exc}") from exc
    if isinstance(value, str):
        try:
            json.loads(value)
            return value
        except ValueError:
            return json.dumps(value)
    return json.dumps(value)


def validate_instance_id(instance_id: str) -> str:
    """Instance ids as the Durable extension allows them."""
    if not instance_id or len(instance_id) > 256:
        raise BadManagementRequest("instance id must be 1-256 characters")
    if any(c in _FORBIDDEN_ID_CHARS or ord(c) < 32 for c in instance_id):
        raise BadManagementRequest("instance id must not contain '/', '\\', '#', '?' or control "
                             "characters")
    return instance_id


class InstanceManager:
    """The operations of the Durable client API, over the hub's storage."""

    def __init__(self, storage: TaskHubStorage, orchestrators: Collection[str],
                 locks: KeyedLocks, wake_control: Callable[[], None]) -> None:
        self.storage = storage
        self.orchestrators = orchestrators
        self.locks = locks
        self._wake_control = wake_control

    async def start(self, name: str, instance_id: str | None, payload: str | None,
                    version: str = "") -> InstanceRecord:
        """Create a Pending instance and queue its start (409 if one is still running)."""
        if name not in self.orchestrators:
            raise BadManagementRequest(
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator "
                f"function. Known orchestrators: {sorted(self.orchestrators)}")
        instance_id = validate_instance_id(instance_id or uuid.uuid4().hex)
        async with self.locks.hold(instance_id):
            existing, etag = await self.storage.load(instance_id)
            if existing is not None and existing.status not in TERMINAL_STATUSES:
                raise InstanceConflict(f"An orchestration with instance id '{instance_id}' is "
                                       f"already {existing.status}")
            now = utcnow()
            record = InstanceRecord(instance_id=instance_id, name=name,
                                    execution_id=uuid.uuid4().hex, status="Pending",
                                    created=format_time(now), updated=format_time(now),
                                    input=payload)
            # Message first: if we die before the record is written, the start message alone
            # still creates the instance.
            await self.storage.send_control(ControlMessage(
                uuid.uuid4().hex, instance_id, record.execution_id,
                new_event(EventType.EXECUTION_STARTED, now, Name=name, Input=payload,
                          Version=version)))
            await self.storage.save(record, etag)
        self._wake_control()
        return record

    async def get(self, instance_id: str) -> InstanceRecord:
        record, _ = await self.storage.load(instance_id)
        if record is None:
            raise InstanceNotFound(f"No instance with ID '{instance_id}' found.")
        return record

    async def raise_event(self, instance_id: str, event_name: str,
                          payload: str | None) -> None:
        record = await self._running(instance_id)
        await self.storage.send_control(ControlMessage(
            uuid.uuid4().hex, record.instance_id, None,
            new_event(EventType.EVENT_RAISED, utcnow(), Name=event_name, Input=payload)))
        self._wake_control()

    async def terminate(self, instance_id: str, reason: str) -> None:
        record = await self._running(instance_id)
        await self.storage.send_control(ControlMessage(
            uuid.uuid4().hex, record.instance_id, None,
            new_event(EventType.EXECUTION_TERMINATED, utcnow(), Input=reason)))
        self._wake_control()

    async def purge(self, instance_id: str) -> int:
        async with self.locks.hold(instance_id):
            return int(await self.storage.delete(instance_id))

    async def query(self, query: InstanceQuery) -> list[InstanceRecord]:
        records = []
        async for entry in self.storage.entries(query.id_prefix):
            if query.matches(entry.status, entry.created):
                record, _ = await self.storage.load(entry.instance_id)
                if record is not None:
                    records.append(record)
        return records

    async def purge_by(self, query: InstanceQuery) -> int:
        deleted = 0
        async for entry in self.storage.entries(query.id_prefix):
            if query.matches(entry.status, entry.created):
                deleted += await self.purge(entry.instance_id)
        return deleted

    async def _running(self, instance_id: str) -> InstanceRecord:
        record = await self.get(instance_id)
        if record.terminal:
            raise InstanceGone(f"Instance with ID '{instance_id}' is gone: it is "
                               f"{record.status}")
        return record
