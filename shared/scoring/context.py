"""The scoring app's process-wide objects, built from the app settings once per process."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from shared.scoring.minibatch_handler import MiniBatchHandler
from shared.storage.account import default_account
from shared.storage.job_store import JobStore
from shared.storage.queue_clients import minibatch_queue

DEFAULT_MAX_DEQUEUE_COUNT = 5  # the Functions host's default


@cache
def job_store() -> JobStore:
    """The job records and job state of the app's storage account."""
    return JobStore(default_account())


@cache
def minibatch_handler(host_json: Path | None = None) -> MiniBatchHandler:
    """The handler over the default scoring runtime; retries honour host.json's limit."""
    from shared.scoring.scoring_runtime import default_runtime

    return MiniBatchHandler(job_store(), default_runtime(), minibatch_queue(default_account()),
                            max_dequeue_count(host_json))


def max_dequeue_count(host_json: Path | None) -> int:
    """`extensions.queues.maxDequeueCount` from host.json (the host's default if unset)."""
    if host_json is None or not host_json.is_file():
        return DEFAULT_MAX_DEQUEUE_COUNT
    queues = json.loads(host_json.read_text()).get("extensions", {}).get("queues", {})
    return int(queues.get("maxDequeueCount", DEFAULT_MAX_DEQUEUE_COUNT))
