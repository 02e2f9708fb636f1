"""Exactly-once progress that is cheap to read at any size.

Each finished mini-batch appends one JSON line to its shard's append-blob ledger
(`ledger/<index // SHARD_BATCHES>`); a succeeded one's line usually carries its part (its
encoded rows, see parts.py), so recording a mini-batch is one write. Duplicate deliveries
may append twice; the aggregator keeps a bitmap of finished indices and counts only the
first line per index, and finalize merges that line's part. The aggregator reads each
ledger from the offset where it stopped last time, in bounded chunks, so a check costs a
few small reads whatever the job size, and `progress.json` holds the totals that `job show`
reads.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError
from azure.storage.blob import ContainerClient

from shared.jobs import paths
from shared.jobs.model import JobRecord, parse_time, utc_now
from shared.jobs.throughput import Sample, add_sample

# The errors-report status of the files a succeeded run() returned no rows for; every other
# status (failed, timed_out, poisoned) is of a mini-batch that failed for good.
MISSING_ROWS = "missing_rows"
SHARD_BATCHES = 4096  # mini-batches per ledger shard (an append blob takes 50,000 blocks)
ERRORS_SAMPLE = 5
LEDGER_READ_BYTES = 8 * 1024 * 1024  # one ranged read of a ledger: memory stays bounded


def shard_of(index: int) -> int:
    return index // SHARD_BATCHES


def shard_count(batches: int) -> int:
    return max(1, -(-batches // SHARD_BATCHES))


@dataclass(frozen=True)
class Completion:
    """One ledger line: how mini-batch `index` ended.

    `part` holds a succeeded mini-batch's encoded rows when the line carries them (text as
    is, other bytes in base64), `header` the csv header line; a succeeded line without a
    part has it in the `parts/<index>` blob instead (parts.py).
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
    host: str | None = None  # the scoring host process that recorded it (worker_name())

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
                   host=body.get("w"))


def ledger_lines(state: ContainerClient, job_id: str, shard: int, offset: int = 0,
                 chunk_bytes: int = LEDGER_READ_BYTES) -> Iterator[tuple[int, bytes]]:
    """Each whole line of a ledger shard from `offset` on, with the offset just past it.

    Reads `chunk_bytes` at a time, so memory stays bounded by that and one line (at most
    an append block) whatever the shard's size. Yields nothing for a shard that does not
    exist yet.
    """
    carry = b""
    position = offset
    while True:
        try:
            chunk = state.download_blob(paths.ledger(job_id, shard), offset=position,
                                        length=chunk_bytes).readall()
        except HttpResponseError as exc:
            if exc.status_code in (404, 416):  # not planned yet (404), nothing new (416)
                return
            raise
        start = position - len(carry)
        data = carry + chunk
        position += len(chunk)
        end = data.rfind(b"\n") + 1  # blocks end with a newline; keep whole lines only
        cursor = 0
        while cursor < end:
            stop = data.index(b"\n", cursor) + 1
            if data[cursor:stop].strip():
                yield start + stop, data[cursor:stop]
            cursor = stop
        carry = data[end:]
        if len(chunk) < chunk_bytes:
            return


def first_completion(state: ContainerClient, job_id: str, index: int) -> Completion | None:
    """The first ledger line recorded for mini-batch `index` (the one that counts), if any."""
    needle = f'{{"i":{index},'.encode()
    for _, line in ledger_lines(state, job_id, shard_of(index)):
        if line.startswith(needle):
            return Completion.from_line(line)
    return None


def create_ledgers(state: ContainerClient, job_id: str, batches: int) -> None:
    """Create the job's ledger shards; never truncates one that exists (replanning)."""
    for shard in range(shard_count(batches)):
        try:
            state.get_blob_client(paths.ledger(job_id, shard)).create_append_blob(
                if_none_match="*")
        except (ResourceExistsError, ResourceModifiedError):
            pass


def record_completion(state: ContainerClient, job_id: str, completion: Completion) -> int:
    """Append `completion` to its shard's ledger (at-least-once; the reader deduplicates).

    Returns the shard's committed block count after the append (duplicates included): once
    it reaches the shard's mini-batch count the shard may be complete.
    """
    response = state.get_blob_client(paths.ledger(job_id, shard_of(completion.index))
                                     ).append_block(completion.to_line())
    return int(response.get("blob_committed_block_count") or 0)


def shard_batches(batches: int, shard: int) -> int:
    """How many of a job's `batches` mini-batches record into ledger shard `shard`."""
    return max(0, min(SHARD_BATCHES, batches - shard * SHARD_BATCHES))


@dataclass
class Progress:
    """Aggregated progress of one job, persisted as progress.json."""

    files: int
    batches: int
    batches_succeeded: int = 0
    batches_failed: int = 0
    files_succeeded: int = 0
    files_failed: int = 0
    rows: int = 0
    planned_at: str = ""
    first_completed_at: str | None = None
    last_completed_at: str | None = None
    errors_sample: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)
    done: bytearray = field(default_factory=bytearray)
    succeeded: bytearray = field(default_factory=bytearray)
    history: list[Sample] = field(default_factory=list)  # see throughput.py

    @classmethod
    def start(cls, files: int, batches: int) -> Progress:
        size = (batches + 7) // 8
        return cls(files=files, batches=batches, planned_at=utc_now(),
                   done=bytearray(size), succeeded=bytearray(size))

    @property
    def batches_done(self) -> int:
        return self.batches_succeeded + self.batches_failed

    @property
    def finished(self) -> bool:
        return self.batches_done >= self.batches

    def is_done(self, index: int) -> bool:
        return bool(self.done[index >> 3] & (1 << (index & 7)))

    def is_succeeded(self, index: int) -> bool:
        return bool(self.succeeded[index >> 3] & (1 << (index & 7)))

    def succeeded_indices(self):
        """Indices whose part is part of the output, in order."""
        return (i for i in range(self.batches) if self.is_succeeded(i))

    def apply(self, completion: Completion) -> bool:
        """Count `completion` unless its index was counted already; True if counted."""
        index = completion.index
        if index >= self.batches or self.is_done(index):
            return False
        self.done[index >> 3] |= 1 << (index & 7)
        if completion.succeeded:
            self.succeeded[index >> 3] |= 1 << (index & 7)
            self.batches_succeeded += 1
        else:
            self.batches_failed += 1
        self.files_succeeded += completion.files_succeeded
        self.files_failed += completion.files_failed
        self.rows += completion.rows
        self.first_completed_at = self.first_completed_at or completion.at
        self.last_completed_at = completion.at
        if completion.error and len(self.errors_sample) < ERRORS_SAMPLE:
            self.errors_sample.append({"mini_batch": index, "error": completion.error})
        return True

    def catch_up(self, state: ContainerClient, job_id: str) -> bool:
        """Read every ledger shard past its last offset; True if anything new was counted."""
        changed = False
        for shard in range(shard_count(self.batches)):
            offset = self.offsets.get(str(shard), 0)
            for end, line in ledger_lines(state, job_id, shard, offset):
                changed |= self.apply(Completion.from_line(line))
                self.offsets[str(shard)] = end
        if changed:
            self.history = add_sample(self.history, self.last_completed_at,
                                      self.files_succeeded, self.files_failed)
        return changed

    def view(self, now: datetime | None = None) -> dict[str, Any]:
        """What `job show` prints: totals, pending, rate and ETA."""
        now = now or datetime.now(UTC)
        files_done = self.files_succeeded + self.files_failed
        started = parse_time(self.planned_at)
        elapsed = (now - started).total_seconds() if started else 0.0
        rate = files_done / elapsed if elapsed > 0 and files_done else 0.0
        pending_files = max(self.files - files_done, 0)
        return {
            "files": {"total": self.files, "succeeded": self.files_succeeded,
                      "failed": self.files_failed, "pending": pending_files},
            "mini_batches": {"total": self.batches, "succeeded": self.batches_succeeded,
                             "failed": self.batches_failed,
                             "pending": max(self.batches - self.batches_done, 0)},
            "rows": self.rows,
            "rate_files_per_second": round(rate, 2),
            "eta_seconds": round(pending_files / rate, 1) if rate and pending_files else
            (0.0 if not pending_files else None),
            "planned_at": self.planned_at,
            "first_completed_at": self.first_completed_at,
            "last_completed_at": self.last_completed_at,
            "errors_sample": list(self.errors_sample),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "batches": self.batches,
            "batches_succeeded": self.batches_succeeded, "batches_failed": self.batches_failed,
            "files_succeeded": self.files_succeeded, "files_failed": self.files_failed,
            "rows": self.rows, "planned_at": self.planned_at,
            "first_completed_at": self.first_completed_at,
            "last_completed_at": self.last_completed_at,
            "errors_sample": self.errors_sample, "offsets": self.offsets,
            "done": base64.b64encode(bytes(self.done)).decode(),
            "succeeded": base64.b64encode(bytes(self.succeeded)).decode(),
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        return cls(
            files=data["files"], batches=data["batches"],
            batches_succeeded=data["batches_succeeded"], batches_failed=data["batches_failed"],
            files_succeeded=data["files_succeeded"], files_failed=data["files_failed"],
            rows=data["rows"], planned_at=data.get("planned_at", ""),
            first_completed_at=data.get("first_completed_at"),
            last_completed_at=data.get("last_completed_at"),
            errors_sample=list(data.get("errors_sample") or []),
            offsets=dict(data.get("offsets") or {}),
            done=bytearray(base64.b64decode(data["done"])),
            succeeded=bytearray(base64.b64decode(data["succeeded"])),
            history=list(data.get("history") or []),
        )


def threshold_exceeded(job: JobRecord, progress: Progress) -> bool:
    """Azure ML's rule: more failed files than `error_threshold` (-1 = no limit)."""
    limit = job.settings.error_threshold
    return limit >= 0 and progress.files_failed > limit


def poll_delay(polls: int) -> float:
    """Seconds the orchestrator waits before its next check: short at first, then 2 s.

    The first checks come every 0.1-0.2 s, so a small job ends about as soon as it is
    scored without waiting for the shard-full hint, which travels through a queue.
    """
    schedule = (0.1, 0.1, 0.2, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
    return schedule[polls] if polls < len(schedule) else 2.0
