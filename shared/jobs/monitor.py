"""The orchestrator's periodic check: fold new ledger lines into progress, decide what next."""

from __future__ import annotations

from shared.jobs import paths
from shared.jobs.model import JobStatus
from shared.jobs.progress import Progress, threshold_exceeded
from shared.jobs.store import JobStore

WAIT = "wait"
FINALIZE = "finalize"
# Finalize outcomes
COMPLETED = "completed"
THRESHOLD = "threshold"
CANCELED = "canceled"
STOPPED = "stopped"  # already ended elsewhere (e.g. planning failed): nothing to merge


def check_progress(store: JobStore, job_id: str) -> dict:
    """Update progress.json from the ledgers; return {"action": wait|finalize, "outcome"}."""
    job = store.get(job_id)
    if job.status in JobStatus.TERMINAL:
        return {"action": FINALIZE, "outcome": STOPPED}
    raw = store.read_json(paths.progress(job_id))
    if job.status == JobStatus.CANCEL_REQUESTED:
        return {"action": FINALIZE, "outcome": CANCELED}
    if raw is None:
        return {"action": WAIT}
    progress = Progress.from_dict(raw)
    if progress.catch_up(store.state, job_id):
        store.write_json(paths.progress(job_id), progress.to_dict())
        if job.status == JobStatus.QUEUED:
            store.update(job_id, lambda j: j.with_status(JobStatus.RUNNING)
                         if j.status == JobStatus.QUEUED else None)
    if threshold_exceeded(job, progress):
        return {"action": FINALIZE, "outcome": THRESHOLD}
    if progress.finished:
        return {"action": FINALIZE, "outcome": COMPLETED}
    return {"action": WAIT, "done": progress.batches_done, "total": progress.batches}
