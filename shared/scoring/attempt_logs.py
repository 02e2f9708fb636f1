"""Where the scoring host keeps each attempt's log (script output, tracebacks).

A failed or timed-out attempt's log is written at once to its own blob
(`<job>/logs/<index>/attempt-<n>.log`): it is what a user opens first. Successful attempts
that printed something are buffered in the process and appended every `flush_seconds`
(and when the process exits) to one append blob per job and host process,
`<job>/logs/succeeded-<host>.log`, each entry headed by its mini-batch and attempt. A
mini-batch of a chatty script (the MNIST samples print a line per run()) so costs no
storage round trip of its own; a crash loses at most the last `flush_seconds` of
successful attempts' output.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import uuid
import weakref

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError
from azure.storage.blob import ContainerClient

from shared.contract import layout

log = logging.getLogger(__name__)

FLUSH_SECONDS = 3.0
APPEND_BLOCK_LIMIT = 4 * 1024 * 1024  # bytes of one append_block call (the service's limit)


def host_name() -> str:
    """A name unique to this process among all hosts: <host>-<pid>-<random>."""
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())
    return f"{host[:40] or 'host'}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def entry_header(index: int, attempt: int) -> str:
    """The line that starts one attempt's entry in a succeeded-attempts log."""
    return f"===== mini-batch {index} attempt {attempt} succeeded =====\n"


class AttemptLogs:
    """Writes attempt logs: failures at once, successes batched per job (thread-safe)."""

    def __init__(self, state: ContainerClient, *, flush_seconds: float = FLUSH_SECONDS,
                 host: str | None = None) -> None:
        self._state = state
        self._flush_seconds = flush_seconds
        self.host = host or host_name()
        self._pending: dict[str, list[bytes]] = {}  # job id -> entries not yet appended
        self._created: set[str] = set()  # jobs whose append blob exists
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time keeps entries in order
        self._wake = threading.Event()
        self._closed = False
        self._flusher: threading.Thread | None = None
        _live.add(self)

    def write_failed(self, job_id: str, index: int, attempt: int, text: str) -> None:
        """Store a failed attempt's log in its own blob now."""
        self._state.upload_blob(layout.attempt_log(job_id, index, attempt),
                                text.encode(errors="replace"), overwrite=True)

    def add_succeeded(self, job_id: str, index: int, attempt: int, text: str) -> None:
        """Queue a successful attempt's output for the job's next append."""
        if not text:
            return
        entry = (entry_header(index, attempt) + text
                 + ("" if text.endswith("\n") else "\n")).encode(errors="replace")
        with self._lock:
            self._pending.setdefault(job_id, []).append(entry)
            if self._flusher is None and not self._closed:
                self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                                 name="batchfn-attempt-logs")
                self._flusher.start()

    def flush(self) -> None:
        """Append every buffered entry now; entries that fail stay for the next flush."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            for job_id, entries in pending.items():
                try:
                    self._append(job_id, entries)
                except AzureError as exc:
                    log.warning("could not append attempt logs of job %s: %s", job_id, exc)
                    with self._lock:
                        self._pending[job_id] = entries + self._pending.get(job_id, [])

    def close(self) -> None:
        """Stop the background flushes and write what is buffered."""
        with self._lock:
            self._closed = True
            flusher = self._flusher
        self._wake.set()
        if flusher is not None:
            flusher.join(timeout=30)
        self.flush()

    def _flush_loop(self) -> None:
        while not self._closed:
            self._wake.wait(self._flush_seconds)
            if self._closed:
                return
            self.flush()

    def _append(self, job_id: str, entries: list[bytes]) -> None:
        blob = self._state.get_blob_client(layout.succeeded_log(job_id, self.host))
        if job_id not in self._created:
            try:
                blob.create_append_blob(if_none_match="*")
            except (ResourceExistsError, ResourceModifiedError):
                pass
            self._created.add(job_id)
        for block in _blocks(entries):
            blob.append_block(block)


def _blocks(entries: list[bytes]) -> list[bytes]:
    """Entries joined into append blocks no larger than the service allows."""
    blocks: list[bytes] = []
    current = bytearray()
    for entry in entries:
        for start in range(0, len(entry), APPEND_BLOCK_LIMIT):
            piece = entry[start:start + APPEND_BLOCK_LIMIT]
            if len(current) + len(piece) > APPEND_BLOCK_LIMIT:
                blocks.append(bytes(current))
                current = bytearray()
            current += piece
    if current:
        blocks.append(bytes(current))
    return blocks


_live: weakref.WeakSet[AttemptLogs] = weakref.WeakSet()


@atexit.register
def _flush_live() -> None:
    for logs in list(_live):
        try:
            logs.close()
        except Exception as exc:  # noqa: BLE001 - storage may be gone at exit; say so
            log.warning("attempt logs not flushed at exit: %s", exc)
