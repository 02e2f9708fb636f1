"""The orchestrator's periodic check: fold new ledger lines into progress, decide what next."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from shared.contract import layout
from shared.contract.job_records import JobRecord, JobStatus
from shared.contract.settings import DeploymentSettings
from shared.contract.timestamps import parse_time
from shared.control.progress import Progress, threshold_exceeded
from shared.storage.job_store import JobStore


class Outcome(Enum):
    """What a check decided: wait, or end the job for one of the reasons below."""

    WAIT = "wait"
    COMPLETED = "completed"  # every mini-batch is done
    THRESHOLD = "threshold"  # more inputs failed than error_threshold allows
    CANCELED = "canceled"  # cancel was asked
    EXPIRED = "expired"  # the deadline passed, and what had started has had its time
    STOPPED = "stopped"  # already ended elsewhere (e.g. planning failed): nothing to merge

    @property
    def ends_job(self) -> bool:
        return self is not Outcome.WAIT


@dataclass(frozen=True)
class Check:
    """A progress check: its outcome, and the job and progress it was made from."""

    outcome: Outcome
    job: JobRecord
    progress: Progress | None

    @property
    def done(self) -> int:
        """Mini-batches done so far."""
        return self.progress.batches_done if self.progress is not None else 0

    @property
    def total(self) -> int:
        """Mini-batches of the job (0 until it is planned)."""
        return self.progress.batches if self.progress is not None else 0


# Beyond twice the timeout, how long after the deadline a mini-batch a host took before it
# may still run: its download (a minute and a tenth of a second per input) and the queue.
DEADLINE_GRACE_SECONDS = 60.0


def deadline_grace(settings: DeploymentSettings) -> float:
    """Seconds after the deadline that the mini-batches started before it are waited for:
    one running and one whose inputs downloaded meanwhile, per worker slot."""
    return (2 * settings.retry_settings.timeout + DEADLINE_GRACE_SECONDS
            + settings.mini_batch_size / 10)


def evaluate(store: JobStore, job_id: str, now: datetime | None = None) -> Check:
    """Update progress.json from the ledgers and decide whether the job ends now.

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
    if changed:
        store.write_json(layout.progress(job_id), progress.to_dict())
    if job.status == JobStatus.CANCEL_REQUESTED:
        return Check(Outcome.CANCELED, job, progress)  # with what is scored so far
    if threshold_exceeded(job, progress):
        return Check(Outcome.THRESHOLD, job, progress)
    if progress.finished:
        return Check(Outcome.COMPLETED, job, progress)
    deadline = parse_time(job.deadline_at)
    now = now or datetime.now(UTC)
    if deadline is not None and now >= deadline + timedelta(
            seconds=deadline_grace(job.settings)):
        return Check(Outcome.EXPIRED, job, progress)
    if changed and job.status == JobStatus.QUEUED:
        started = progress.usage.first_started_at
        job = store.update(job_id, lambda j: j.with_status(JobStatus.RUNNING, started_at=started)
                           if j.status == JobStatus.QUEUED else None)
    return Check(Outcome.WAIT, job, progress)
