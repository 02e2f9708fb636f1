"""Process-wide job objects built from the app settings (one of each per process)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from shared.jobs.messages import minibatch_queue
from shared.jobs.service import JobService
from shared.jobs.store import JobStore
from shared.jobs.worker import MiniBatchWorker
from shared.storage import StorageAccount

DEFAULT_MAX_DEQUEUE_COUNT = 5  # the Functions host's default


@cache
def storage_account() -> StorageAccount:
    return StorageAccount.from_settings()


@cache
def job_store() -> JobStore:
    return JobStore(storage_account())


@cache
def job_service() -> JobService:
    from shared.registry import Registry

    return JobService(job_store(), Registry(storage_account()))


@cache
def minibatch_worker(host_json: Path | None = None) -> MiniBatchWorker:
    """The worker over the default scoring runtime; retries honour host.json's limit."""
    from shared.scoring import default_runtime

    return MiniBatchWorker(job_store(), default_runtime(), minibatch_queue(storage_account()),
                           max_dequeue_count(host_json))


def max_dequeue_count(host_json: Path | None) -> int:
    """`extensions.queues.maxDequeueCount` from host.json (the host's default if unset)."""
    if host_json is None or not host_json.is_file():
        return DEFAULT_MAX_DEQUEUE_COUNT
    queues = json.loads(host_json.read_text()).get("extensions", {}).get("queues", {})
    return int(queues.get("maxDequeueCount", DEFAULT_MAX_DEQUEUE_COUNT))
