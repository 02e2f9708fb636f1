"""The task hub in Azure Storage: instance records in blobs, work in two queues.

Layout for hub `h` (names in the spirit of the Durable extension's Azure Storage provider):
- container `h-instances`: one blob per instance (`<quoted instance id>.json`), holding the
  `InstanceRecord` with its history; blob metadata repeats status, name and created time so
  listing instances needs no downloads. Writes are ETag-conditional: one writer per episode.
- queue `h-control`: `ControlMessage`s; a timer is a message whose visibility starts at its
  fire time, rounded down to a whole second (at most 7 days ahead; a longer timer is
  re-armed when it shows up early).
- queue `h-workitems`: `ActivityWork`.
- container `h-largemessages`: bodies of messages too big for a queue message (64 KB).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from devhost.durable.history import utcnow
from devhost.durable.records import ActivityWork, ControlMessage, InstanceRecord

MAX_VISIBILITY_SECONDS = 7 * 24 * 3600
# Queue messages hold 64 KB; bigger bodies go to a blob (the base64-free text stays well under).
_INLINE_LIMIT = 60_000
_HUB_NAME = re.compile(r"^[a-z][a-z0-9]{2,44}$")


class HubNameError(ValueError):
    """The task hub name cannot name storage containers and queues."""


class ConcurrencyError(RuntimeError):
    """The instance record changed since it was read (another episode wrote it)."""


def normalize_hub_name(hub_name: str) -> str:
    """Task hub names are 3–45 letters and digits starting with a letter; storage wants them
    lowercase."""
    name = (hub_name or "").strip().lower()
    if not _HUB_NAME.match(name):
        raise HubNameError(f"task hub name {hub_name!r} must be 3-45 letters or digits, "
                           f"starting with a letter (host.json extensions.durableTask.hubName)")
    return name


@dataclass
class Received:
    """A queue message being processed; `pop_receipt` changes on every lease renewal."""

    queue: str
    message_id: str
    pop_receipt: str
    dequeue_count: int
    body: dict[str, Any]
    overflow_blob: str | None


@dataclass(frozen=True)
class InstanceEntry:
    """An instance as the blob listing shows it (no download)."""

    instance_id: str
    status: str
    name: str
    created: str


class TaskHubStorage:
    """Blob and queue access for one task hub; open() before use, close() after."""

    def __init__(self, connection_string: str, hub_name: str) -> None:
        self.hub = normalize_hub_name(hub_name)
        self.control_queue = f"{self.hub}-control"
        self.work_queue = f"{self.hub}-workitems"
        self._instances_container = f"{self.hub}-instances"
        self._overflow_container = f"{self.hub}-largemessages"
        self._connection_string = connection_string
        self._blobs: BlobServiceClient | None = None
        self._queues: QueueServiceClient | None = None

    async def open(self) -> None:
        """Connect and create the hub's containers and queues if missing."""
        self._blobs = BlobServiceClient.from_connection_string(self._connection_string)
        self._queues = QueueServiceClient.from_connection_string(self._connection_string)
        for container in (self._instances_container, self._overflow_container):
            try:
                await self._blobs.create_container(container)
            except ResourceExistsError:
                pass
        for queue in (self.control_queue, self.work_queue):
            try:
                await self._queues.create_queue(queue)
            except ResourceExistsError:
                pass

    async def close(self) -> None:
        for client in (self._blobs, self._queues):
            if client is not None:
                await client.close()
        self._blobs = self._queues = None

    # ---- instances ---------------------------------------------------------------------

    async def load(self, instance_id: str) -> tuple[InstanceRecord | None, str | None]:
        """The instance record and its ETag, or (None, None)."""
        blob = self._instance_blob(instance_id)
        try:
            download = await blob.download_blob()
            data = await download.readall()
        except ResourceNotFoundError:
            return None, None
        return InstanceRecord.from_json(data), download.properties.etag

    async def save(self, record: InstanceRecord, etag: str | None) -> str:
        """Write the record if nobody else did since `etag` (None: only if absent)."""
        blob = self._instance_blob(record.instance_id)
        metadata = {"status": record.status, "name": quote(record.name, safe=""),
                    "created": record.created}
        try:
            if etag is None:
                result = await blob.upload_blob(record.to_json(), overwrite=False,
                                                metadata=metadata)
            else:
                result = await blob.upload_blob(record.to_json(), overwrite=True,
                                                metadata=metadata, etag=etag,
                                                match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise ConcurrencyError(f"instance {record.instance_id} changed meanwhile") from exc
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                raise ConcurrencyError(
                    f"instance {record.instance_id} changed meanwhile") from exc
            raise
        return str(result["etag"])

    async def delete(self, instance_id: str) -> bool:
        """Delete an instance record; False when there was none."""
        try:
            await self._instance_blob(instance_id).delete_blob()
        except ResourceNotFoundError:
            return False
        return True

    async def entries(self, id_prefix: str = "") -> AsyncIterator[InstanceEntry]:
        """All instances (optionally by id prefix), from the blob listing."""
        container = self._blobs_client().get_container_client(self._instances_container)
        async for blob in container.list_blobs(name_starts_with=quote(id_prefix, safe="") or None,
                                               include=["metadata"]):
            meta = blob.metadata or {}
            yield InstanceEntry(instance_id=unquote(blob.name.removesuffix(".json")),
                                status=meta.get("status", ""),
                                name=unquote(meta.get("name", "")),
                                created=meta.get("created", ""))

    # ---- queues ------------------------------------------------------------------------

    async def send_control(self, message: ControlMessage,
                           visible_at: datetime | None = None) -> None:
        """Enqueue a control message, invisible until about `visible_at` (capped at 7 days).

        Queue visibility counts whole seconds: the delay is rounded down, so the message shows
        up at most a second early and the runtime holds it in memory until `visible_at`.
        """
        delay = 0
        if visible_at is not None:
            delay = min(MAX_VISIBILITY_SECONDS,
                        max(0, int((visible_at - utcnow()).total_seconds())))
        await self._send(self.control_queue, message.to_json(), delay)

    async def send_activity(self, work: ActivityWork) -> None:
        await self._send(self.work_queue, work.to_json(), 0)

    async def receive(self, queue: str, count: int, lease_seconds: int) -> list[Received]:
        """Up to `count` (≤ 32) visible messages, leased for `lease_seconds`."""
        client = self._queues_client().get_queue_client(queue)
        received: list[Received] = []
        async for message in client.receive_messages(messages_per_page=count,
                                                     max_messages=count,
                                                     visibility_timeout=lease_seconds):
            body = json.loads(message.content)
            overflow = body.get("overflow") if body.get("kind") == "overflow" else None
            if overflow is not None:
                blob = self._blobs_client().get_blob_client(self._overflow_container, overflow)
                try:
                    body = json.loads(await (await blob.download_blob()).readall())
                except ResourceNotFoundError:
                    body = {"kind": "lost", "overflow": overflow}
            received.append(Received(queue, message.id, message.pop_receipt,
                                     message.dequeue_count or 1, body, overflow))
        return received

    async def renew(self, message: Received, lease_seconds: int) -> None:
        """Extend a message's lease (its pop receipt changes)."""
        client = self._queues_client().get_queue_client(message.queue)
        updated = await client.update_message(message.message_id, message.pop_receipt,
                                              visibility_timeout=lease_seconds)
        message.pop_receipt = updated.pop_receipt

    async def complete(self, message: Received) -> None:
        """Delete a processed message (and its overflow blob)."""
        client = self._queues_client().get_queue_client(message.queue)
        try:
            await client.delete_message(message.message_id, message.pop_receipt)
        except ResourceNotFoundError:
            pass  # already gone: its lease ran out and another receiver finished it
        if message.overflow_blob is not None:
            blob = self._blobs_client().get_blob_client(self._overflow_container,
                                                        message.overflow_blob)
            try:
                await blob.delete_blob()
            except ResourceNotFoundError:
                pass

    async def _send(self, queue: str, text: str, delay: int) -> None:
        if len(text.encode()) > _INLINE_LIMIT:
            name = f"{uuid.uuid4().hex}.json"
            blob = self._blobs_client().get_blob_client(self._overflow_container, name)
            await blob.upload_blob(text, overwrite=True)
            text = json.dumps({"kind": "overflow", "overflow": name})
        client = self._queues_client().get_queue_client(queue)
        await client.send_message(text, visibility_timeout=delay or None, time_to_live=-1)

    def _instance_blob(self, instance_id: str) -> Any:
        return self._blobs_client().get_blob_client(self._instances_container,
                                                    f"{quote(instance_id, safe='')}.json")

    def _blobs_client(self) -> BlobServiceClient:
        if self._blobs is None:
            raise RuntimeError("TaskHubStorage is not open")
        return self._blobs

    def _queues_client(self) -> QueueServiceClient:
        if self._queues is None:
            raise RuntimeError("TaskHubStorage is not open")
        return self._queues
