"""Queue messages between the apps: a few dozen bytes of JSON each.

`MiniBatchMessage` goes from the control app's planner (and its monitor, for copies of
stalled mini-batches) to the scoring hosts; the files stay in a manifest chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MAX_JOB_ID_LENGTH = 128


class InvalidMessage(ValueError):
    """A queue message that is not the kind its queue carries (it can never succeed)."""


@dataclass(frozen=True)
class MiniBatchMessage:
    """Score mini-batch `index` of `job`, whose files are in manifest chunk `chunk`.

    `prior_attempts` counts attempts made under earlier messages for the same mini-batch
    (when retries outnumber the host's maxDequeueCount the handler re-enqueues it). `copy`
    is 0 for the planner's message and n for the n-th copy the job's monitor sent (of a
    stalled mini-batch, or a backup of a slow one).
    """

    job: str
    index: int
    chunk: int
    prior_attempts: int = 0
    copy: int = 0

    def encode(self) -> str:
        body = {"job": self.job, "index": self.index, "chunk": self.chunk}
        if self.prior_attempts:
            body["prior"] = self.prior_attempts
        if self.copy:
            body["copy"] = self.copy
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes) -> MiniBatchMessage:
        try:
            body = json.loads(text)
            message = cls(job=body["job"], index=body["index"], chunk=body["chunk"],
                          prior_attempts=body.get("prior", 0), copy=body.get("copy", 0))
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidMessage(f"not a mini-batch message: {text[:200]!r}") from exc
        valid = (isinstance(message.job, str) and 0 < len(message.job) <= MAX_JOB_ID_LENGTH
                 and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                         for n in (message.index, message.chunk, message.prior_attempts,
                                   message.copy)))
        if not valid:
            raise InvalidMessage(f"not a mini-batch message: {text[:200]!r}")
        return message

