"""Recovery of a job's stalled and slow mini-batches, from its scoring hosts' heartbeats.

Each progress check of a running job reads the heartbeats of the hosts that hold its
mini-batches (contract.heartbeats) and sends copy messages (`MiniBatchMessage.copy` ≥ 1)
without waiting for any queue lease:

- **re-delivery**: a mini-batch held by a host whose last heartbeat is older than the stall
  threshold (`BATCHFN_STALL_SECONDS`, default 20 s; at least three of that host's
  intervals) is sent again at once. So is one that no host has reported for as long while
  mini-batches planned after it were taken (the queue went past it): a host took it and
  died before its next heartbeat; at the end of the job, where no later mini-batch shows
  that, the last ones are watched while the queue shows no message (one peek). The copy
  carries the stalled attempt as a prior attempt: the lost attempt counts, as a worker
  crash's does. A mini-batch that a host reports as deferred (its compute had no free host
  slot, so the message went back to the queue) is not lost: its watch restarts at that
  heartbeat, so one that keeps being deferred is never copied, and one that vanished after
  its last deferral is, a threshold later.
- **backups**: once every remaining mini-batch of the job is held by a live host (its
  messages are all out of the queue), and some host has idle worker slots, each mini-batch
  that has run longer than `BATCHFN_BACKUP_FACTOR` (default 2) × the job's median scoring
  time (at least MIN_BACKUP_SECONDS) gets one backup copy, the longest-running first, as
  many as there are idle slots; so do the mini-batches waiting behind it on the same host.
  A backup is not a retry: it runs the same attempt and does not count against
  `max_retries`. `BATCHFN_BACKUPS=off` turns backups off.

The first result in the ledger wins (the reader counts the first line per index); a later
one is dropped. A copy still held once its mini-batch is done is stopped at its host's next
heartbeat: the check writes the index into that host's heartbeat blob. Progress counts the
copies sent and the backups that won (`Progress.recovery`).
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient

from shared.contract import layout
from shared.contract.heartbeats import WAITING, bounded_setting
from shared.contract.messages import MiniBatchMessage
from shared.control.progress import BACKUP, REDELIVERY, Progress
from shared.storage.heartbeat_blobs import StoredHeartbeat, read_heartbeats, request_stop
from shared.storage.job_store import JobStore
from shared.storage.queue_clients import send

log = logging.getLogger(__name__)

STALL_SETTING = "BATCHFN_STALL_SECONDS"
BACKUPS_SETTING = "BATCHFN_BACKUPS"
BACKUP_FACTOR_SETTING = "BATCHFN_BACKUP_FACTOR"
DEFAULT_STALL_SECONDS = 20.0
DEFAULT_BACKUP_FACTOR = 2.0
MIN_BACKUP_SECONDS = 1.0
MAX_COPIES = 3  # copies the monitor sends of one mini-batch at most
STALL_INTERVALS = 3  # a host's heartbeats missed before it counts as stalled
# The most mini-batches at the end of a job that a check peeks at the queue for (one
# request): more than this still waiting means the queue holds some of them.
TAIL_PEEK_BATCHES = 32


@dataclass(frozen=True)
class RecoverySettings:
    """The control app's recovery settings (see the module docstring)."""

    stall_seconds: float = DEFAULT_STALL_SECONDS
    backups: bool = True
    backup_factor: float = DEFAULT_BACKUP_FACTOR

    @classmethod
    def from_environment(cls) -> RecoverySettings:
        """The settings from the app settings; ValueError names a bad one."""
        stall = bounded_setting(STALL_SETTING, os.environ.get(STALL_SETTING),
                                DEFAULT_STALL_SECONDS, 1.0, 3600.0)
        factor = bounded_setting(BACKUP_FACTOR_SETTING, os.environ.get(BACKUP_FACTOR_SETTING),
                                 DEFAULT_BACKUP_FACTOR, 1.0, 100.0)
        text = os.environ.get(BACKUPS_SETTING, "on").strip().lower()
        if text not in ("on", "off", "true", "false", "1", "0"):
            raise ValueError(f"{BACKUPS_SETTING} must be on or off, not {text!r}")
        return cls(stall, text in ("on", "true", "1"), factor)


@dataclass(frozen=True)
class Copy:
    """A copy message to send: of mini-batch `index`, why, and its prior attempts."""

    index: int
    kind: str  # REDELIVERY | BACKUP
    prior_attempts: int


@dataclass(frozen=True)
class Decision:
    """What one check decided: copies to send, and per host the indices to stop."""

    copies: tuple[Copy, ...] = ()
    stops: tuple[tuple[StoredHeartbeat, tuple[int, ...]], ...] = ()


def decide(progress: Progress, beats: list[StoredHeartbeat], settings: RecoverySettings,
           now: datetime, queue_idle: Callable[[], bool] | None = None) -> Decision:
    """The copies and stops due now (pure but for `queue_idle`, which tells whether the
    job's queue shows no message; updates only `progress.unclaimed`)."""
    fresh, stale = [], []
    for stored in beats:
        limit = max(settings.stall_seconds, STALL_INTERVALS * stored.beat.interval)
        (stale if (now - stored.written).total_seconds() > limit else fresh).append(stored)
    live = {held.index for stored in fresh for held in stored.beat.held}
    copies: dict[int, Copy] = {}
    for stored in stale:
        for held in stored.beat.held:
            if not progress.is_done(held.index) and held.index not in live:
                copies.setdefault(held.index, Copy(held.index, REDELIVERY, held.attempt))
    seen = {held.index for stored in beats for held in stored.beat.held}
    deferred: dict[int, datetime] = {}
    for stored in beats:
        for index in stored.beat.deferred:
            deferred[index] = max(stored.written, deferred.get(index, stored.written))
    for index in _unclaimed_too_long(progress, seen, deferred, settings.stall_seconds, now,
                                     queue_idle):
        copies.setdefault(index, Copy(index, REDELIVERY, 1))
    if settings.backups and not copies:
        for index, prior in _backups(progress, fresh, live, settings):
            copies[index] = Copy(index, BACKUP, prior)
    # A copy sent within the threshold may not be taken and reported yet: no second one.
    allowed = tuple(copy for copy in copies.values()
                    if progress.copies_sent(copy.index) < MAX_COPIES
                    and progress.seconds_since_copy(copy.index, now) >= settings.stall_seconds)
    stops = []
    for stored in fresh:
        done = tuple(sorted({held.index for held in stored.beat.held
                             if progress.is_done(held.index) and progress.copies_sent(held.index)}
                            - set(stored.beat.stop)))
        if done:
            stops.append((stored, done))
    return Decision(allowed, tuple(stops))


def recover(store: JobStore, queue: QueueClient, job_id: str, progress: Progress,
            settings: RecoverySettings) -> bool:
    """Read the job's heartbeats, send the copies and stops due; True if progress changed
    (its copy counts, or the mini-batches it watches as unclaimed)."""
    now = datetime.now(UTC)
    watched = dict(progress.unclaimed)
    decision = decide(progress, read_heartbeats(store.state, job_id), settings, now,
                      lambda: _queue_idle(queue))
    if decision.copies:
        chunks = _ChunkFinder(store, job_id)
        for copy in decision.copies:
            number = progress.copies_sent(copy.index) + 1
            message = MiniBatchMessage(job_id, copy.index, chunks.chunk_of(copy.index),
                                       copy.prior_attempts, number)
            send(queue, message.encode())
            progress.note_copy(copy.index, copy.kind)
            progress.unclaimed.pop(str(copy.index), None)
            log.warning("job %s mini-batch %d: %s copy %d sent", job_id, copy.index,
                        copy.kind, number)
    for stored, indices in decision.stops:
        if request_stop(store.state, job_id, stored, indices):
            log.info("job %s: host %s asked to stop its copies of %s", job_id,
                     stored.beat.host, list(indices))
    return bool(decision.copies) or progress.unclaimed != watched


def _unclaimed_too_long(progress: Progress, seen: set[int], deferred: dict[int, datetime],
                        stall_seconds: float, now: datetime,
                        queue_idle: Callable[[], bool] | None = None) -> list[int]:
    """Pending mini-batches below the last one taken that no heartbeat lists as held,
    watched in `progress.unclaimed` from when first seen so, or from the latest heartbeat
    that reports them `deferred` (back in the queue then); those watched for
    `stall_seconds`. At the end of a job no later mini-batch shows that the queue went past
    the last ones: there, while the queue shows no message (`queue_idle`), every pending
    one that no heartbeat lists is watched too."""
    frontier = max(max(seen, default=-1), progress.last_done())
    tail = [index for index in progress.pending_below(progress.batches)
            if index >= frontier and index not in seen]
    if tail and len(tail) <= TAIL_PEEK_BATCHES and queue_idle is not None and queue_idle():
        frontier = progress.batches
    pending = {index for index in progress.pending_below(frontier) if index not in seen}
    for index in list(progress.unclaimed):
        if int(index) not in pending:
            del progress.unclaimed[index]
    due = []
    for index in sorted(pending):
        since = datetime.fromisoformat(progress.unclaimed.setdefault(str(index), now.isoformat()))
        if index in deferred and deferred[index] > since:
            since = deferred[index]  # the watch restarts
            progress.unclaimed[str(index)] = since.isoformat()
        if (now - since).total_seconds() >= stall_seconds:
            due.append(index)
    return due


def _queue_idle(queue: QueueClient) -> bool:
    """Whether `queue` shows no message (one peek; False if it cannot be read)."""
    try:
        return not queue.peek_messages(max_messages=1)
    except AzureError as exc:
        log.info("queue %s not peeked (%s): the end of the job is left as it is", queue.queue_name,
                 type(exc).__name__)
        return False


def _backups(progress: Progress, fresh: list[StoredHeartbeat], live: set[int],
             settings: RecoverySettings) -> Iterable[tuple[int, int]]:
    """(index, prior attempts) of the backups due, the longest-running first."""
    pending = progress.batches - progress.batches_done
    durations = progress.durations
    if not pending or not durations or pending > len(live) or any(
            i not in live for i in progress.pending_below(progress.batches)):
        return []  # some remaining mini-batch still waits in the queue
    idle = sum(max(0, stored.beat.slots - sum(1 for h in stored.beat.held
                                              if not progress.is_done(h.index)))
               for stored in fresh)
    limit = max(MIN_BACKUP_SECONDS, settings.backup_factor * statistics.median(durations) / 1000)
    candidates = []
    for stored in fresh:
        held = [h for h in stored.beat.held if not progress.is_done(h.index)
                and not progress.copies_sent(h.index)]
        slow = [h for h in held if h.phase != WAITING and h.seconds > limit]
        if not slow:
            continue
        candidates += [(h.seconds, h.index, h.attempt - 1) for h in slow]
        candidates += [(0.0, h.index, h.attempt - 1) for h in held if h.phase == WAITING]
    candidates.sort(reverse=True)
    return [(index, prior) for _, index, prior in candidates[:idle]]


class _ChunkFinder:
    """The manifest chunk of a mini-batch, by binary search over the job's chunks."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self._store = store
        self._job_id = job_id
        plan = store.read_json(layout.plan(job_id)) or {}
        self._chunks = int(plan.get("chunks", 0))
        self._firsts: dict[int, int] = {}

    def chunk_of(self, index: int) -> int:
        low, high = 0, max(self._chunks - 1, 0)
        while low < high:
            middle = (low + high + 1) // 2
            if self._first(middle) <= index:
                low = middle
            else:
                high = middle - 1
        return low

    def _first(self, chunk: int) -> int:
        if chunk not in self._firsts:
            self._firsts[chunk] = self._store.read_manifest(self._job_id, chunk).first
        return self._firsts[chunk]

