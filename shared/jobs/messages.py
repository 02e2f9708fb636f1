"""Mini-batch queue messages: a few dozen bytes each, the file list stays in a manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.layout import MINIBATCH_QUEUE, POISON_SUFFIX
from shared.storage import StorageAccount


class InvalidMessage(ValueError):
    """A queue message that is not a mini-batch message (it can never succeed)."""


@dataclass(frozen=True)
class MiniBatchMessage:
    """Score mini-batch `index` of `job`, whose files are in manifest chunk `chunk`.

    `prior_attempts` counts attempts made under earlier messages for the same mini-batch
    (when retries outnumber the host's maxDequeueCount the worker re-enqueues itself).
    """

    job: str
    index: int
    chunk: int
    prior_attempts: int = 0

    def encode(self) -> str:
        body = {"job": self.job, "index": self.index, "chunk": self.chunk}
        if self.prior_attempts:
            body["prior"] = self.prior_attempts
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes) -> MiniBatchMessage:
        try:
            body = json.loads(text)
            message = cls(job=body["job"], index=body["index"], chunk=body["chunk"],
                          prior_attempts=body.get("prior", 0))
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidMessage(f"not a mini-batch message: {text[:200]!r}") from exc
        valid = (isinstance(message.job, str) and message.job
                 and all(isinstance(n, int) and n >= 0
                         for n in (message.index, message.chunk, message.prior_attempts)))
        if not valid:
            raise InvalidMessage(f"not a mini-batch message: {text[:200]!r}")
        return message


def minibatch_queue(account: StorageAccount, name: str = MINIBATCH_QUEUE) -> QueueClient:
    """The mini-batch queue, base64-encoded like the Functions host expects."""
    return trigger_queue(account, name)


def trigger_queue(account: StorageAccount, name: str) -> QueueClient:
    """A queue a queue trigger reads: messages base64-encoded like the Functions host expects."""
    return account.queue_service().get_queue_client(
        name, message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy())


def ensure_queue(queue: QueueClient) -> None:
    """Create `queue` if it does not exist: the Functions host polls a missing queue as an
    empty one and never creates it, so the first sender must."""
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass


def poison_queue_name(name: str = MINIBATCH_QUEUE) -> str:
    return name + POISON_SUFFIX
