"""The orchestrator's periodic check: fold new ledger lines into progress, decide what next.

A scoring host that records a job's last mini-batch signals nothing beyond its ledger
append: the check watches the ledger itself when the job may end before the next check
(few mini-batches left at the rate the job keeps), reading its unfinished shards every
WATCH_POLL_SECONDS for up to WATCH_SECONDS, so the end is seen within a poll of the last
append instead of a queue hop or a timer later. An idle read (nothing new) is one small
ranged GET that the service answers 416.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from azure.storage.queue import QueueClient

from shared.contract import layout
from shared.contract.job_records import JobRecord, JobStatus
from shared.contract.settings import DeploymentSettings
from shared.contract.timestamps import parse_time
from shared.control.progress import Progress, threshold_exceeded
from shared.control.recovery import RecoverySettings, recover
from shared.storage.job_store import JobStore
from shared.storage.queue_clients import job_queue


class Outcome(Enum):
    """What a check decided: wait, or end the job for one of the reasons below."""

    WAIT = "wait"
    COMPLETED = "completed"  # every mini-batch is done
    THRESHOLD = "threshold"  # more inputs failed than error_threshold allows
    CANCELED = "canceled"  # cancel was asked
    SCRIPT_FAILED = "script_failed"  # the scoring script never started (fail-fast)
    EXPIRED = "expired"  # the deadline passed, and what had started has had its time
    STOPPED = "stopped"  # already ended elsewhere (e.g. planning failed): nothing to merge

    @property
    def ends_job(self) -> bool:
        return self is not Outcome.WAIT


WATCH_SECONDS = 2.5  # the longest one check watches the ledger (≥ the longest poll delay)
WATCH_POLL_SECONDS = 0.05
WATCH_BATCHES = 8  # a job this small is watched before it has a rate (nothing finished) ...
WATCH_FRESH_SECONDS = 10.0  # ... for this long after it was planned


@dataclass(frozen=True)
class Check:
    """A progress check: its outcome, and the job and progress it was made from.
    `near_end`: the job may end any moment (the next check should follow at once)."""

    outcome: Outcome
    job: JobRecord
    progress: Progress | None
    near_end: bool = False

    @property
    def done(self) -> int:
        """Mini-batches done so far."""
        return self.progress.batches_done if self.progress is not None else 0

    @property
    def total(self) -> int:
        """Mini-batches of the job (0 until it is planned)."""
        return self.progress.batches if self.progress is not None else 0


def may_end_within(progress: Progress, seconds: float) -> bool:
    """Whether the job's remaining mini-batches may all finish within `seconds`."""
    estimate = progress.seconds_to_finish()
    if estimate is not None:
        return estimate <= seconds
    # No rate yet: a small job just planned may be scored at once; one that waits behind
    # other work is left to the timers.
    planned = parse_time(progress.planned_at)
    fresh = planned is not None and (datetime.now(UTC) - planned).total_seconds() \
        < WATCH_FRESH_SECONDS
    return fresh and progress.batches - progress.batches_done <= WATCH_BATCHES


# Beyond twice the timeout, how long after the deadline a mini-batch a host took before it
# may still run: its download (a minute and a tenth of a second per input) and the queue.
DEADLINE_GRACE_SECONDS = 60.0


def deadline_grace(settings: DeploymentSettings) -> float:
    """Seconds after the deadline that the mini-batches started before it are waited for:
    one running and one whose inputs downloaded meanwhile, per worker slot."""
    return (2 * settings.retry_settings.timeout + DEADLINE_GRACE_SECONDS
            + settings.mini_batch_size / 10)


def evaluate(store: JobStore, job_id: str, watch_seconds: float = WATCH_SECONDS,
             recovery: tuple[QueueClient, RecoverySettings] | None = None,
             now: datetime | None = None) -> Check:
    """Update progress.json from the ledgers and decide whether the job ends now; when it
    may end within `watch_seconds`, watch the ledger that long first (module docstring).
    With `recovery` (the mini-batch queue and the settings), a job that goes on has its
    stalled and slow mini-batches sent again (control/recovery.py).

    A job whose first completions arrive is marked Running (started when its first
    mini-batch started), unless this check already ends it: then the final status update
    records the start too (one write instead of two). After its deadline a job ends once
    every mini-batch is scored, failed or recorded as not started, or at the latest
    `deadline_grace` later.
    """
    job = store.get(job_id)
    if job.status in JobStatus.TERMINAL:
        return Check(Outcome.STOPPED, job, None)
    raw = store.read_json(layout.progress(job_id))
    progress = None if raw is None else Progress.from_dict(raw)
    if progress is None:
        # Not planned yet: nothing to count (a cancel ends it with nothing scored).
        outcome = Outcome.CANCELED if job.status == JobStatus.CANCEL_REQUESTED else Outcome.WAIT
        return Check(outcome, job, None)
    changed = progress.catch_up(store.state, job_id)
    near_end = may_end_within(progress, watch_seconds)
    if near_end and job.status != JobStatus.CANCEL_REQUESTED:
        watch_until = time.monotonic() + watch_seconds
        while (not progress.finished and not threshold_exceeded(job, progress)
               and time.monotonic() < watch_until):
            time.sleep(WATCH_POLL_SECONDS)
            changed |= progress.catch_up(store.state, job_id)
    deadline = parse_time(job.deadline_at)
    now = now or datetime.now(UTC)
    past_deadline = deadline is not None and now >= deadline
    # No copies of a job being canceled or past its deadline: its hosts start nothing new.
    if (recovery is not None and job.status != JobStatus.CANCEL_REQUESTED and not past_deadline
            and not progress.finished and not threshold_exceeded(job, progress)):
        # Copies go where the planner sent the mini-batches: the queue of the job's compute.
        queue = job_queue(store.account, recovery[0], job.compute.queue)
        changed |= recover(store, queue, job_id, progress, recovery[1])
    if changed:
        store.write_json(layout.progress(job_id), progress.to_dict())
    if job.status == JobStatus.CANCEL_REQUESTED:
        return Check(Outcome.CANCELED, job, progress)  # with what is scored so far
    if threshold_exceeded(job, progress):
        return Check(Outcome.THRESHOLD, job, progress)
    failures = job.script_start_failures
    if failures is not None and failures.final and progress.batches_succeeded == 0:
        return Check(Outcome.SCRIPT_FAILED, job, progress)
    if progress.finished:
        return Check(Outcome.COMPLETED, job, progress)
    if past_deadline and now >= deadline + timedelta(seconds=deadline_grace(job.settings)):
        return Check(Outcome.EXPIRED, job, progress)
    if changed and job.status == JobStatus.QUEUED:
        started = progress.usage.first_started_at
        job = store.update(job_id, lambda j: j.with_status(JobStatus.RUNNING, started_at=started)
                           if j.status == JobStatus.QUEUED else None)
    return Check(Outcome.WAIT, job, progress, near_end=may_end_within(progress, watch_seconds))
