"""The orchestrator's periodic check: fold new ledger lines into progress, decide what next."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from shared.jobs import paths
from shared.jobs.model import JobRecord, JobStatus
from shared.jobs.progress import Progress, shard_batches, shard_of, threshold_exceeded
from shared.jobs.store import JobStore

# The event a worker raises on the job's orchestration when its ledger append may have
# completed a shard: the orchestrator checks at once instead of at its next timer.
SHARD_FULL_EVENT = "ledger_shard_full"
WAIT = "wait"
FINALIZE = "finalize"
# Finalize outcomes
COMPLETED = "completed"
THRESHOLD = "threshold"
CANCELED = "canceled"
STOPPED = "stopped"  # already ended elsewhere (e.g. planning failed): nothing to merge


@dataclass(frozen=True)
class Check:
    """A progress check: the decision, plus the job and progress it was made from."""

    decision: dict
    job: JobRecord
    progress: Progress | None


def check_progress(store: JobStore, job_id: str) -> dict:
    """Update progress.json from the ledgers; return {"action": wait|finalize, "outcome"}."""
    return evaluate(store, job_id).decision


def evaluate(store: JobStore, job_id: str) -> Check:
    """`check_progress`, keeping the job record and progress for a finalize that follows.

    A job whose first completions arrive is marked Running, unless this check already ends
    it: then the final status update records the start too (one write instead of two).
    """
    job = store.get(job_id)
    if job.status in JobStatus.TERMINAL:
        return Check({"action": FINALIZE, "outcome": STOPPED}, job, None)
    raw = store.read_json(paths.progress(job_id))
    progress = None if raw is None else Progress.from_dict(raw)
    if job.status == JobStatus.CANCEL_REQUESTED:
        return Check({"action": FINALIZE, "outcome": CANCELED}, job, progress)
    if progress is None:
        return Check({"action": WAIT}, job, None)
    changed = progress.catch_up(store.state, job_id)
    if changed:
        store.write_json(paths.progress(job_id), progress.to_dict())
    if threshold_exceeded(job, progress):
        decision = {"action": FINALIZE, "outcome": THRESHOLD}
    elif progress.finished:
        decision = {"action": FINALIZE, "outcome": COMPLETED}
    else:
        decision = {"action": WAIT, "done": progress.batches_done, "total": progress.batches}
        if changed and job.status == JobStatus.QUEUED:
            job = store.update(job_id, lambda j: j.with_status(JobStatus.RUNNING)
                               if j.status == JobStatus.QUEUED else None)
    return Check(decision, job, progress)


class ShardFullHints:
    """Tells a worker when its ledger append may have completed its shard.

    The append returns the shard's committed block count; when it reaches the number of
    mini-batches in the shard, every one of them may be recorded (duplicates count too, so
    this is a hint, and the orchestrator's check decides). The job's mini-batch count comes
    from plan.json, read once per job and process.
    """

    def __init__(self, store: JobStore, cached_jobs: int = 256) -> None:
        self.store = store
        self._cached_jobs = cached_jobs
        self._batches: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def may_complete_shard(self, job_id: str, index: int, committed_blocks: int) -> bool:
        """True when `committed_blocks` in mini-batch `index`'s shard may be all of them."""
        batches = self._job_batches(job_id)
        return batches is not None and committed_blocks >= shard_batches(batches,
                                                                          shard_of(index))

    def _job_batches(self, job_id: str) -> int | None:
        with self._lock:
            if job_id in self._batches:
                self._batches.move_to_end(job_id)
                return self._batches[job_id]
        plan = self.store.read_json(paths.plan(job_id))
        if plan is None:
            return None
        with self._lock:
            self._batches[job_id] = int(plan["batches"])
            while len(self._batches) > self._cached_jobs:
                self._batches.popitem(last=False)
        return int(plan["batches"])
