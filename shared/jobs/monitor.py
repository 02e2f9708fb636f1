"""The orchestrator's periodic check: fold new ledger lines into progress, decide what next."""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.jobs import paths
from shared.jobs.messages import InvalidMessage, ensure_queue, trigger_queue
from shared.jobs.model import JobRecord, JobStatus
from shared.jobs.progress import Progress, shard_batches, shard_of, threshold_exceeded
from shared.jobs.store import JobStore
from shared.layout import SHARD_HINT_QUEUE
from shared.storage import StorageAccount

log = logging.getLogger(__name__)

# The event the job's orchestration gets when a worker's ledger append may have completed a
# shard: the orchestrator checks at once instead of at its next timer. Scoring hosts have no
# Durable client: they send a `ShardHint` to SHARD_HINT_QUEUE and the control app raises it.
SHARD_FULL_EVENT = "ledger_shard_full"
MAX_JOB_ID_LENGTH = 128
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


@dataclass(frozen=True)
class ShardHint:
    """A scoring host's note that a ledger shard of `job` may be complete (a queue message)."""

    job: str

    def encode(self) -> str:
        return json.dumps({"job": self.job}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes) -> ShardHint:
        try:
            job = json.loads(text)["job"]
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidMessage(f"not a shard hint: {text[:200]!r}") from exc
        if not isinstance(job, str) or not job or len(job) > MAX_JOB_ID_LENGTH:
            raise InvalidMessage(f"not a shard hint: {text[:200]!r}")
        return cls(job)


def shard_hint_queue(account: StorageAccount) -> QueueClient:
    """The queue that carries `ShardHint`s from scoring hosts to the control app."""
    return trigger_queue(account, SHARD_HINT_QUEUE)


class ShardFullHints:
    """Tells the job's orchestration when a worker's ledger append may have completed a shard.

    The append returns the shard's committed block count; when it reaches the number of
    mini-batches in the shard, every one of them may be recorded (duplicates count too, so
    this is a hint, and the orchestrator's check decides). The job's mini-batch count comes
    from plan.json, read once per job and process. The hint is a `ShardHint` on `queue`.
    """

    def __init__(self, store: JobStore, queue: QueueClient, cached_jobs: int = 256) -> None:
        self.store = store
        self.queue = queue
        self._cached_jobs = cached_jobs
        self._batches: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def offer(self, job_id: str, index: int, committed_blocks: int) -> bool:
        """Send a hint when the append may have completed the shard; True if one was sent.

        Never raises: a lost hint costs the orchestrator's next timer, not the mini-batch.
        """
        try:
            if not self.may_complete_shard(job_id, index, committed_blocks):
                return False
            self._send(ShardHint(job_id).encode())
        except Exception as exc:  # noqa: BLE001 - only a hint: the orchestrator's timer still runs
            log.info("job %s: no shard-full hint sent (%s)", job_id, exc)
            return False
        return True

    def _send(self, body: str) -> None:
        try:
            self.queue.send_message(body)
        except ResourceNotFoundError:
            # Infra creates the queue in Azure; a fresh local account may lack it.
            ensure_queue(self.queue)
            self.queue.send_message(body)

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
