"""The scoring app's process-wide objects, built from the app settings once per process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from shared.scoring.minibatch_handler import MiniBatchHandler
from shared.scoring.scoring_profile import served_queue
from shared.storage.account import default_account
from shared.storage.job_store import JobStore
from shared.storage.queue_clients import max_dequeue_count, minibatch_queue


@cache
def job_store() -> JobStore:
    """The job records and job state of the app's storage account."""
    return JobStore(default_account())


# Threads for the messages a host holds at once (host.json: batchSize + newBatchThreshold,
# 24), with room to spare; they are made only as messages arrive.
SCORING_THREADS = 32


@cache
def scoring_executor() -> ThreadPoolExecutor:
    """The threads that run mini-batches. Not the event loop's default executor: a
    mini-batch holds its thread while it waits for a worker slot, and the loop's own
    helpers (the DNS lookups of async storage clients, such as a local host's Durable task
    hub) would queue behind every held message."""
    return ThreadPoolExecutor(max_workers=SCORING_THREADS, thread_name_prefix="batchfn-scoring")


@cache
def minibatch_handler(host_json: Path | None = None) -> MiniBatchHandler:
    """The handler over the default scoring runtime; retries honour host.json's limit."""
    from shared.scoring.scoring_runtime import default_runtime

    return MiniBatchHandler(job_store(), default_runtime(),
                            minibatch_queue(default_account(), served_queue()),
                            max_dequeue_count(host_json))

