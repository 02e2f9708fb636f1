"""Shard-full hints: a scoring host's note to the control app that a ledger shard may be
complete, so the job's orchestrator checks at once instead of at its next timer.

The scoring app has no Durable client: the hint is a `ShardHint` on the shard-hints
queue, which the control app relays as the event the orchestration waits for.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from azure.storage.queue import QueueClient

from shared.contract import layout
from shared.contract.ledger import shard_batches, shard_of
from shared.contract.messages import ShardHint
from shared.storage.job_store import JobStore
from shared.storage.queue_clients import send

log = logging.getLogger(__name__)


class ShardFullHints:
    """Tells the job's orchestration when a ledger append may have completed a shard.

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
        # Infra creates the queue in Azure; a fresh local account may lack it.
        send(self.queue, body)

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
        plan = self.store.read_json(layout.plan(job_id))
        if plan is None:
            return None
        with self._lock:
            self._batches[job_id] = int(plan["batches"])
            while len(self._batches) > self._cached_jobs:
                self._batches.popitem(last=False)
        return int(plan["batches"])
