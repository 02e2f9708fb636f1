"""Queue clients of the storage account, encoded the way the Functions host reads them, and
the host's queue settings that both apps go by."""

from __future__ import annotations

import json
from pathlib import Path

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.contract.layout import MINIBATCH_QUEUE
from shared.storage.account import StorageAccount

DEFAULT_MAX_DEQUEUE_COUNT = 5  # the Functions host's default


def max_dequeue_count(host_json: Path | None) -> int:
    """`extensions.queues.maxDequeueCount` from host.json (the host's default if unset)."""
    if host_json is None or not host_json.is_file():
        return DEFAULT_MAX_DEQUEUE_COUNT
    queues = json.loads(host_json.read_text()).get("extensions", {}).get("queues", {})
    return int(queues.get("maxDequeueCount", DEFAULT_MAX_DEQUEUE_COUNT))


def trigger_queue(account: StorageAccount, name: str) -> QueueClient:
    """A queue a queue trigger reads: messages base64-encoded like the Functions host expects."""
    return account.queue_service().get_queue_client(
        name, message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy())


def minibatch_queue(account: StorageAccount, name: str = MINIBATCH_QUEUE) -> QueueClient:
    """The mini-batch queue the scoring hosts read."""
    return trigger_queue(account, name)


def job_queue(account: StorageAccount, main: QueueClient, name: str) -> QueueClient:
    """The queue of a job's compute (`JobCompute.queue`): `main`, the main scoring app's,
    or the queue of the scoring profile whose app runs the compute."""
    return main if name == MINIBATCH_QUEUE else minibatch_queue(account, name)


def ensure_queue(queue: QueueClient) -> None:
    """Create `queue` if it does not exist: the Functions host polls a missing queue as an
    empty one and never creates it, so the first sender must."""
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass


def send(queue: QueueClient, text: str, **options: object) -> None:
    """Send one message, creating the queue first where a fresh account lacks it."""
    try:
        queue.send_message(text, **options)
    except ResourceNotFoundError:
        ensure_queue(queue)
        queue.send_message(text, **options)
