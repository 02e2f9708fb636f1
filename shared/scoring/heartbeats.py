"""The scoring host's heartbeats: what it holds of each job, written every few seconds.

Every mini-batch message the host works on is a `Holding` from the moment the handler takes
it until its result is recorded (or it is given back for a retry). A thread writes, every
`interval` seconds, one heartbeat blob per job the host holds mini-batches of
(storage.heartbeat_blobs) — one write per job and interval however many mini-batches, and
none for a job it holds nothing of, except one last beat that says so. A mini-batch the
host deferred (its compute had no free host slot: the message went back to the queue) is
listed once, in the next beat, at no write of its own. The job's monitor reads them
(control/recovery.py): a host whose beats stop has its mini-batches sent again, and a
mini-batch deferred lately is not taken for lost.

The write is conditional on the blob's last ETag: when the monitor has written a stop list
into it (another copy of those mini-batches finished first), the write is refused, the
host reads the list, sets the `stop` event of its copies of those mini-batches (the
worker pool stops them) and writes again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from azure.core.exceptions import AzureError
from azure.storage.blob import ContainerClient

from shared.contract.heartbeats import (
    DEFAULT_INTERVAL_SECONDS,
    MAX_HELD,
    RECORDING,
    RUNNING,
    WAITING,
    Heartbeat,
    HeldBatch,
    bounded_setting,
)
from shared.storage.heartbeat_blobs import HeartbeatChanged, read_heartbeat, write_heartbeat

log = logging.getLogger(__name__)

INTERVAL_SETTING = "BATCHFN_HEARTBEAT_SECONDS"
MIN_INTERVAL, MAX_INTERVAL = 0.2, 60.0


def heartbeat_interval() -> float:
    """Seconds between a host's heartbeats: $BATCHFN_HEARTBEAT_SECONDS, else 3."""
    return bounded_setting(INTERVAL_SETTING, os.environ.get(INTERVAL_SETTING),
                           DEFAULT_INTERVAL_SECONDS, MIN_INTERVAL, MAX_INTERVAL)


@dataclass(eq=False)
class Holding:
    """One mini-batch message this host works on, and how far it is."""

    job_id: str
    index: int
    copy: int
    attempt: int
    slots: int
    phase: str = WAITING
    started: float | None = None  # time.monotonic() when its worker slot took it
    received: float = field(default_factory=time.monotonic)  # when the host took it
    inputs: int = 0
    rows: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    # Asked when a worker slot takes it: False (e.g. its job's deadline has passed) and it
    # does not start (StartRefused).
    may_start: Callable[[], bool] | None = None

    def running(self, inputs: int = 0) -> None:
        """Its worker slot took it (its inputs are being read); StartRefused when it may not
        start any more."""
        if self.may_start is not None and not self.may_start():
            raise StartRefused(f"mini-batch {self.index} of job {self.job_id} not started")
        self.phase, self.started, self.inputs = RUNNING, time.monotonic(), inputs

    def recording(self, rows: int) -> None:
        """run() returned `rows` rows: the result is on its way to the ledger."""
        self.phase, self.rows = RECORDING, rows

    def seconds(self) -> float:
        """Seconds since its worker slot took it (0 while it waits)."""
        return 0.0 if self.started is None else time.monotonic() - self.started

    def report(self) -> HeldBatch:
        return HeldBatch(self.index, self.copy, self.attempt, self.phase, self.seconds(),
                         self.inputs, self.rows)


class StartRefused(Exception):
    """A mini-batch that a worker slot took may not start (Holding.may_start said no)."""


@dataclass
class _Job:
    holdings: list[Holding] = field(default_factory=list)
    deferred: set[int] = field(default_factory=set)  # indices deferred since the last beat
    slots: int = 0
    etag: str | None = None


class Holdings:
    """The mini-batches this host process holds, and the thread that reports them."""

    def __init__(self, state: ContainerClient, host: str, interval: float | None = None) -> None:
        self._state = state
        self.host = host
        self.interval = interval or heartbeat_interval()
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._beating = threading.Lock()  # one round of writes at a time
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def hold(self, job_id: str, index: int, copy: int, attempt: int, slots: int) -> Holding:
        """Start holding a mini-batch (reported from the next heartbeat on); `slots`: the
        worker slots of its deployment on this host (0: not known yet, set it later)."""
        holding = Holding(job_id, index, copy, attempt, slots)
        with self._lock:
            job = self._jobs.setdefault(job_id, _Job())
            job.holdings.append(holding)
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="batchfn-heartbeats")
                self._thread.start()
        return holding

    def release(self, holding: Holding, deferred: bool = False) -> None:
        """Stop holding it: its result is recorded, or its message goes back to the queue;
        `deferred`: back unscored for a full compute, which the next beat reports."""
        with self._lock:
            job = self._jobs.get(holding.job_id)
            if job is not None and holding in job.holdings:
                job.holdings.remove(holding)
                if deferred and len(job.deferred) < MAX_HELD:
                    job.deferred.add(holding.index)

    def beat(self) -> int:
        """Write the heartbeat of every job held now or since the previous beat (a job no
        longer held gets one last beat: it holds none, and lists what it deferred meanwhile);
        returns the number of writes."""
        with self._beating:
            with self._lock:
                for job in self._jobs.values():
                    job.slots = max([job.slots, *(h.slots for h in job.holdings)])
                due = [(job_id, job, [h.report() for h in job.holdings],
                        tuple(sorted(job.deferred)), job.slots)
                       for job_id, job in self._jobs.items()]
                for job_id, job, held, _, _ in due:
                    job.deferred.clear()  # reported by this beat
                    if not held:
                        self._jobs.pop(job_id, None)  # this beat says it holds none
            writes = 0
            for job_id, job, held, deferred, slots in due:
                beat = Heartbeat(self.host, self.interval, slots, tuple(held),
                                 deferred=deferred)
                try:
                    job.etag = self._write(job_id, job, beat)
                    writes += 1
                except AzureError as exc:
                    log.warning("job %s: heartbeat not written (%s); next in %gs", job_id,
                                exc, self.interval)
            return writes

    def close(self) -> None:
        """Stop beating (the process ends)."""
        self._closed.set()

    def _write(self, job_id: str, job: _Job, beat: Heartbeat) -> str:
        try:
            return write_heartbeat(self._state, job_id, beat, job.etag)
        except HeartbeatChanged:
            stored = read_heartbeat(self._state, job_id, self.host)
            self._stop(job_id, set(stored.beat.stop) if stored else set())
            return write_heartbeat(self._state, job_id, beat,
                                   stored.etag if stored else None)

    def _stop(self, job_id: str, indices: set[int]) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            stopped = [h for h in job.holdings if h.index in indices] if job else []
        for holding in stopped:
            log.info("job %s mini-batch %d copy %d: stopped, another copy finished first",
                     job_id, holding.index, holding.copy)
            holding.stop.set()

    def _loop(self) -> None:
        while not self._closed.wait(self.interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - the next beat tries again
                log.exception("heartbeat round failed")

