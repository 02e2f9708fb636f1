"""The ledger's format: one JSON line per finished mini-batch, in append-blob shards.

Each finished mini-batch appends one `Completion` line to its shard's append blob
(`ledger/<index // SHARD_BATCHES>`, see layout.ledger); a succeeded one's line usually
carries its part (its encoded rows), so recording a mini-batch is one write. Duplicate
deliveries may append twice: readers count only the first line per index.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

from .timestamps import utc_now

SHARD_BATCHES = 4096  # mini-batches per ledger shard (an append blob takes 50,000 blocks)


@dataclass(frozen=True)
class Part:
    """A succeeded mini-batch's rows, encoded for the job's output format; `header` is the
    csv header line, written once at the top of the merged output."""

    data: bytes
    header: bytes = b""


def shard_of(index: int) -> int:
    return index // SHARD_BATCHES


def shard_count(batches: int) -> int:
    return max(1, -(-batches // SHARD_BATCHES))


@dataclass(frozen=True)
class AttemptUsage:
    """What the recorded attempt of a mini-batch used; the job's usage report adds them up.

    `handled_seconds` runs from the scoring host taking the message to recording it (so the
    attempt started `handled_seconds` before the line's time), `run_seconds` is run() as
    the host timed it (from the worker's start report to its reply), `input_bytes` what the
    worker read, `gpu` the device type of the GPU the worker had (None: none).
    """

    attempt: int = 1
    handled_seconds: float = 0.0
    run_seconds: float = 0.0
    input_bytes: int = 0
    gpu: str | None = None


@dataclass(frozen=True)
class Completion:
    """One ledger line: how mini-batch `index` ended.

    `part` holds a succeeded mini-batch's encoded rows when the line carries them (text as
    is, other bytes in base64), `header` the csv header line; a succeeded line without a
    part has it in the `parts/<index>` blob instead (shared/storage/parts.py).
    """

    index: int
    succeeded: bool  # run() returned (its part is recorded); False: failed for good
    files_succeeded: int
    files_failed: int
    rows: int
    error: str | None = None
    at: str = ""
    part: bytes | None = None
    header: bytes = b""
    host: str | None = None  # the scoring host process that recorded it (attempt_logs.host_name())
    copy: int = 0  # which copy of the mini-batch's message (messages.MiniBatchMessage.copy)
    scoring_ms: int | None = None  # from its worker slot taking it to its result
    usage: AttemptUsage | None = None
    # Set (to the mini-batch's number of inputs) when a host did not start the mini-batch
    # because the job's deadline had passed.
    not_started: int | None = None

    def to_line(self) -> bytes:
        body: dict[str, Any] = {"i": self.index, "ok": self.succeeded, "s": self.files_succeeded,
                                "f": self.files_failed, "r": self.rows, "t": self.at or utc_now()}
        if self.error:
            body["e"] = self.error[:300]
        if self.part is not None:
            try:
                body["d"] = self.part.decode("utf-8")
            except UnicodeDecodeError:
                body["b"] = base64.b64encode(self.part).decode()
        if self.header:
            body["h"] = base64.b64encode(self.header).decode()
        if self.host:
            body["w"] = self.host[:100]
        if self.copy:
            body["c"] = self.copy
        if self.scoring_ms is not None:
            body["ms"] = self.scoring_ms
        if self.not_started is not None:
            body["n"] = self.not_started
        if self.usage is not None:
            body.update(_usage_fields(self.usage))
        # Raw UTF-8 rather than \u escapes: JSON still escapes every newline in the text.
        return (json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes) -> Completion:
        body = json.loads(line)
        part = None
        if "d" in body:
            part = body["d"].encode("utf-8")
        elif "b" in body:
            part = base64.b64decode(body["b"])
        return cls(index=body["i"], succeeded=body["ok"], files_succeeded=body["s"],
                   files_failed=body["f"], rows=body["r"], error=body.get("e"), at=body["t"],
                   part=part, header=base64.b64decode(body["h"]) if "h" in body else b"",
                   host=body.get("w"), copy=body.get("c", 0), scoring_ms=body.get("ms"),
                   usage=_usage(body), not_started=body.get("n"))


# Short keys: a line per mini-batch, read by every progress check.
def _usage_fields(usage: AttemptUsage) -> dict[str, Any]:
    # Milliseconds, rounded up: the seconds reported never fall short of those measured.
    fields: dict[str, Any] = {"hs": milliseconds_up(usage.handled_seconds),
                              "rs": milliseconds_up(usage.run_seconds)}
    if usage.attempt != 1:
        fields["a"] = usage.attempt
    if usage.input_bytes:
        fields["by"] = usage.input_bytes
    if usage.gpu:
        fields["g"] = usage.gpu[:100]
    return fields


def milliseconds_up(seconds: float) -> float:
    """Seconds to the millisecond, rounded up: measured times never shrink when added up."""
    return math.ceil(round(seconds * 1000, 6)) / 1000


def _usage(body: dict[str, Any]) -> AttemptUsage | None:
    """The usage of a line; None for lines written before lines carried it."""
    if "rs" not in body:
        return None
    return AttemptUsage(attempt=body.get("a", 1), handled_seconds=body.get("hs", 0.0),
                        run_seconds=body["rs"], input_bytes=body.get("by", 0),
                        gpu=body.get("g"))


def shard_batches(batches: int, shard: int) -> int:
    """How many of a job's `batches` mini-batches record into ledger shard `shard`."""
    return max(0, min(SHARD_BATCHES, batches - shard * SHARD_BATCHES))
