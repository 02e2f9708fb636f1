"""Heartbeat blobs (`<job>/heartbeats/<host>.json`, format contract.heartbeats): written by
scoring hosts, read by the job's monitor, which also writes `stop` into them.

Both sides write conditionally on the ETag they last saw, so neither loses the other's
change: a host whose write is refused reads the blob (`HeartbeatChanged`), takes the stop
list, and writes again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.contract import layout
from shared.contract.heartbeats import Heartbeat, InvalidHeartbeat


class HeartbeatChanged(Exception):
    """The blob changed since the host's last write (the monitor asked for a stop)."""


@dataclass(frozen=True)
class StoredHeartbeat:
    """A heartbeat as read back: the beat, when storage last wrote it, and its ETag."""

    beat: Heartbeat
    written: datetime
    etag: str


def write_heartbeat(state: ContainerClient, job_id: str, beat: Heartbeat,
                    etag: str | None) -> str:
    """Write `beat`; over the version `etag` only (None: whatever is there). Returns the new
    ETag; raises HeartbeatChanged when the blob is not that version any more."""
    blob = state.get_blob_client(layout.heartbeat(job_id, beat.host))
    conditions = {} if etag is None else {"etag": etag,
                                          "match_condition": MatchConditions.IfNotModified}
    try:
        written = blob.upload_blob(beat.to_bytes(), overwrite=True, **conditions)
    except (ResourceModifiedError, ResourceNotFoundError):
        raise HeartbeatChanged(beat.host) from None
    return written["etag"]


def read_heartbeat(state: ContainerClient, job_id: str, host: str) -> StoredHeartbeat | None:
    """One host's heartbeat for the job (None: missing, or not a heartbeat)."""
    try:
        download = state.download_blob(layout.heartbeat(job_id, host))
        beat = Heartbeat.from_bytes(download.readall())
    except (ResourceNotFoundError, InvalidHeartbeat):
        return None
    return StoredHeartbeat(beat, download.properties.last_modified, download.properties.etag)


def read_heartbeats(state: ContainerClient, job_id: str) -> list[StoredHeartbeat]:
    """Every host's heartbeat for the job: one listing, then one read per host."""
    prefix = layout.heartbeats_prefix(job_id)
    hosts = [name[len(prefix):].removesuffix(".json")
             for name in state.list_blob_names(name_starts_with=prefix)]
    return [stored for host in hosts
            if (stored := read_heartbeat(state, job_id, host)) is not None]


def request_stop(state: ContainerClient, job_id: str, stored: StoredHeartbeat,
                 indices: Iterable[int]) -> bool:
    """Ask the host of `stored` to stop its copies of `indices` at its next heartbeat.
    False when the blob changed meanwhile (the monitor asks again at its next check)."""
    stop = tuple(sorted(set(stored.beat.stop) | set(indices)))
    beat = replace(stored.beat, stop=stop)
    try:
        write_heartbeat(state, job_id, beat, stored.etag)
    except HeartbeatChanged:
        return False
    return True
