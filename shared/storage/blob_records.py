"""Records kept as JSON blobs: create-only writes and ETag-conditional updates.

The registry (endpoints, deployments), the job store and the asset versions all keep
small JSON records that several hosts may write at once. This is their one way of doing
it: a create never replaces (of two concurrent creates one wins), an update reads the
record with its ETag, applies a change and writes only if nobody wrote in between,
retrying a bounded number of times; when the tries run out the caller gets one error, a
409 `busy` (contract.errors.Busy), never a 500. Timestamps in records use contract.timestamps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import ContainerClient

from shared.contract.errors import Busy

T = TypeVar("T")
DEFAULT_ATTEMPTS = 10


class BlobRecords(Generic[T]):
    """Typed JSON records in one container (`load`/`dump` convert to and from dicts)."""

    def __init__(self, container: ContainerClient, *, load: Callable[[dict[str, Any]], T],
                 dump: Callable[[T], Mapping[str, Any]], what: str,
                 attempts: int = DEFAULT_ATTEMPTS) -> None:
        self.container = container
        self._load = load
        self._dump = dump
        self._what = what
        self._attempts = attempts

    # ----- reading ------------------------------------------------------------------------

    def read(self, name: str) -> T | None:
        """The record `name`, or None when there is none."""
        found = self.read_versioned(name)
        return None if found is None else found[0]

    def read_versioned(self, name: str) -> tuple[T, str] | None:
        """(record, ETag) of `name`, or None when there is none."""
        try:
            download = self.container.download_blob(name)
            data = json.loads(download.readall())
        except ResourceNotFoundError:
            return None
        return self._load(data), download.properties.etag

    def list(self, prefix: str) -> list[T]:
        """The records directly under `prefix` (not in sub-folders), by name."""
        try:
            names = sorted(self.container.list_blob_names(name_starts_with=prefix))
        except ResourceNotFoundError:
            return []
        records = []
        for name in names:
            if "/" in name[len(prefix):]:
                continue
            record = self.read(name)
            if record is not None:  # deleted between the listing and the read
                records.append(record)
        return records

    # ----- writing ------------------------------------------------------------------------

    def create(self, name: str, record: T, *, metadata: dict[str, str] | None = None) -> bool:
        """Write `record` only if `name` does not exist; False when it already did."""
        body = _encode(self._dump(record))
        try:
            self._upload_new(name, body, metadata)
        except ResourceExistsError:
            return False
        return True

    def update(self, name: str, change: Callable[[T], T | None], *,
               missing: Callable[[], Exception]) -> T:
        """Apply `change` to the stored record under its ETag, retrying lost races.

        `change` returns the new record, or None (or an equal record) to leave it as it is;
        it may run more than once. `missing()` is the error raised when there is no record.
        """
        for _ in range(self._attempts):
            found = self.read_versioned(name)
            if found is None:
                raise missing()
            current, etag = found
            updated = change(current)
            if updated is None or updated == current:
                return current
            try:
                self._replace(name, updated, etag)
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # written or deleted meanwhile: read it again
            return updated
        raise self._busy(name)

    def put(self, name: str, build: Callable[[T | None], T]) -> tuple[T, bool]:
        """Create the record or replace it; `build(current)` makes the record to store.

        Returns (record, created). Like `update`, a lost race is retried, boundedly.
        """
        for _ in range(self._attempts):
            found = self.read_versioned(name)
            if found is None:
                record = build(None)
                if self.create(name, record):
                    return record, True
                continue  # created meanwhile: replace that one instead
            current, etag = found
            record = build(current)
            try:
                self._replace(name, record, etag)
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
            return record, False
        raise self._busy(name)

    def delete(self, name: str) -> bool:
        """Delete `name`; False when it did not exist."""
        try:
            self.container.delete_blob(name)
        except ResourceNotFoundError:
            return False
        return True

    # ----- internals ----------------------------------------------------------------------

    def _upload_new(self, name: str, body: bytes, metadata: dict[str, str] | None) -> None:
        try:
            self.container.upload_blob(name, body, overwrite=False, metadata=metadata)
        except ResourceNotFoundError as exc:
            if exc.error_code != "ContainerNotFound":
                raise
            # The first record of a fresh account: make the container, then write.
            try:
                self.container.create_container()
            except ResourceExistsError:
                pass
            self.container.upload_blob(name, body, overwrite=False, metadata=metadata)

    def _replace(self, name: str, record: T, etag: str) -> None:
        self.container.upload_blob(name, _encode(self._dump(record)), overwrite=True,
                                   etag=etag, match_condition=MatchConditions.IfNotModified)

    def _busy(self, name: str) -> Busy:
        return Busy(f"{self._what} {name!r} changed concurrently {self._attempts} times in "
                          "a row; try again", details={"record": name})


def _encode(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
