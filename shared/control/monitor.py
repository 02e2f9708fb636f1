"""The orchestrator's periodic check: fold new ledger lines into progress, decide what next."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from shared.contract import layout
from shared.contract.job_records import JobRecord, JobStatus
from shared.control.progress import Progress, threshold_exceeded
from shared.storage.job_store import JobStore


class Outcome(Enum):
    """What a check decided: wait, or end the job for one of the reasons below."""

    WAIT = "wait"
    COMPLETED = "completed"  # every mini-batch is done
    THRESHOLD = "threshold"  # more inputs failed than error_threshold allows
    CANCELED = "canceled"  # cancel was asked
    SCRIPT_FAILED = "script_failed"  # the scoring script never started (fail-fast)
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


def evaluate(store: JobStore, job_id: str) -> Check:
    """Update progress.json from the ledgers and decide whether the job ends now.

    A job whose first completions arrive is marked Running, unless this check already ends
    it: then the final status update records the start too (one write instead of two).
    """
    job = store.get(job_id)
    if job.status in JobStatus.TERMINAL:
        return Check(Outcome.STOPPED, job, None)
    raw = store.read_json(layout.progress(job_id))
    progress = None if raw is None else Progress.from_dict(raw)
    if job.status == JobStatus.CANCEL_REQUESTED:
        return Check(Outcome.CANCELED, job, progress)
    if progress is None:
        return Check(Outcome.WAIT, job, None)
    changed = progress.catch_up(store.state, job_id)
    if changed:
        store.write_json(layout.progress(job_id), progress.to_dict())
    if threshold_exceeded(job, progress):
        return Check(Outcome.THRESHOLD, job, progress)
    failures = job.script_start_failures
    if failures is not None and failures.final and progress.batches_succeeded == 0:
        return Check(Outcome.SCRIPT_FAILED, job, progress)
    if progress.finished:
        return Check(Outcome.COMPLETED, job, progress)
    if changed and job.status == JobStatus.QUEUED:
        job = store.update(job_id, lambda j: j.with_status(JobStatus.RUNNING)
                           if j.status == JobStatus.QUEUED else None)
    return Check(Outcome.WAIT, job, progress)
