"""Exactly-once progress that is cheap to read at any size.

The aggregator keeps a bitmap of finished mini-batch indices and counts only the first
ledger line per index (contract.ledger), and finalize merges that line's part. It reads
each ledger shard from the offset where it stopped last time, in bounded chunks, so a
check costs a few small reads whatever the job size, and `progress.json` holds the totals
that `job show` reads.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.storage.blob import ContainerClient

from shared.contract.job_records import JobRecord
from shared.contract.ledger import SHARD_BATCHES, Completion, shard_batches, shard_count
from shared.contract.timestamps import parse_time, utc_now
from shared.control.throughput import Sample, add_sample
from shared.storage.ledger_blobs import ledger_lines

log = logging.getLogger(__name__)

ERRORS_SAMPLE = 5
DURATIONS_KEPT = 64  # the latest mini-batches' scoring times kept, for their median
REDELIVERY = "redelivery"  # a copy of a stalled mini-batch (control/recovery.py)
BACKUP = "backup"  # a backup copy of a slow one


@dataclass
class Progress:
    """Aggregated progress of one job, persisted as progress.json.

    `files`, `files_succeeded` and `files_failed` count the job's inputs in its `unit`:
    files, or rows for a tabular job (input_format csv, jsonl or parquet).
    """

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
    unit: str = "files"
    # Recovery (control/recovery.py): per index the kind and time of each copy sent, the
    # backups whose result counted, the latest scoring times (ms), and pending mini-batches
    # that no heartbeat lists, with when that was first seen.
    copies: dict[str, list[list[str]]] = field(default_factory=dict)
    backups_won: int = 0
    durations: list[int] = field(default_factory=list)
    unclaimed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, files: int, batches: int, unit: str = "files") -> Progress:
        size = (batches + 7) // 8
        return cls(files=files, batches=batches, planned_at=utc_now(),
                   done=bytearray(size), succeeded=bytearray(size), unit=unit)

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

    def copies_sent(self, index: int) -> int:
        """Copies of mini-batch `index` the monitor sent."""
        return len(self.copies.get(str(index), ()))

    def note_copy(self, index: int, kind: str) -> None:
        """Count a copy of mini-batch `index` sent now (REDELIVERY or BACKUP)."""
        self.copies.setdefault(str(index), []).append([kind, utc_now()])

    def seconds_since_copy(self, index: int, now: datetime) -> float:
        """Seconds since the last copy of mini-batch `index` was sent (inf: none was)."""
        sent = self.copies.get(str(index))
        at = parse_time(sent[-1][1]) if sent else None
        return float("inf") if at is None else (now - at).total_seconds()

    @property
    def recovery(self) -> dict[str, int]:
        """Copies sent of stalled mini-batches, backups sent, backups whose result counted."""
        kinds = [kind for sent in self.copies.values() for kind, _ in sent]
        return {"redelivered": kinds.count(REDELIVERY), "backups": kinds.count(BACKUP),
                "backups_won": self.backups_won}

    def last_done(self) -> int:
        """The highest index counted (-1: none)."""
        for position in range(len(self.done) - 1, -1, -1):
            if self.done[position]:
                return position * 8 + self.done[position].bit_length() - 1
        return -1

    def pending_below(self, limit: int) -> list[int]:
        """The indices under `limit` not counted yet."""
        pending = []
        for position in range(min(len(self.done), (limit + 7) // 8)):
            byte = self.done[position]
            if byte != 0xFF:
                pending += [position * 8 + bit for bit in range(8)
                            if not byte & (1 << bit) and position * 8 + bit < limit]
        return pending

    def apply(self, completion: Completion) -> bool:
        """Count `completion` unless its index was counted already; True if counted."""
        index = completion.index
        if index >= self.batches or self.is_done(index):
            if index < self.batches:
                log.info("mini-batch %d: a later result (copy %d, host %s) dropped: the first "
                         "one counts", index, completion.copy, completion.host)
            return False
        sent = self.copies.get(str(index), ())
        if 0 < completion.copy <= len(sent) and sent[completion.copy - 1][0] == BACKUP:
            self.backups_won += 1
        if completion.scoring_ms is not None:
            self.durations = [*self.durations, completion.scoring_ms][-DURATIONS_KEPT:]
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

    def shard_finished(self, shard: int) -> bool:
        """Whether every mini-batch of ledger shard `shard` is counted."""
        first = shard * SHARD_BATCHES // 8  # SHARD_BATCHES is a multiple of 8
        done = bytes(self.done[first:first + SHARD_BATCHES // 8])
        return int.from_bytes(done, "little").bit_count() >= shard_batches(self.batches, shard)

    def seconds_to_finish(self, now: datetime | None = None) -> float | None:
        """The time the rest of the job takes at the rate it has kept since it was planned
        (None before its first completion: no rate yet)."""
        started = parse_time(self.planned_at)
        if not self.batches_done or started is None:
            return None
        elapsed = ((now or datetime.now(UTC)) - started).total_seconds()
        return (self.batches - self.batches_done) * max(elapsed, 0.0) / self.batches_done

    def catch_up(self, state: ContainerClient, job_id: str) -> bool:
        """Read every unfinished ledger shard past its last offset; True if anything new
        was counted. (A finished shard's later lines are late duplicates: none counts.)"""
        changed = False
        for shard in range(shard_count(self.batches)):
            if self.shard_finished(shard):
                continue
            offset = self.offsets.get(str(shard), 0)
            for end, line in ledger_lines(state, job_id, shard, offset):
                changed |= self.apply(Completion.from_line(line))
                self.offsets[str(shard)] = end
        if changed:
            self.history = add_sample(self.history, self.last_completed_at,
                                      self.files_succeeded, self.files_failed)
        return changed

    def view(self, now: datetime | None = None) -> dict[str, Any]:
        """What `job show` prints: totals, pending, rate and ETA.

        `inputs` counts the job's inputs in its `unit` (files, or rows of a tabular job);
        a job of files has the same counts under `files` and `rate_files_per_second`, the
        names of clients written before tabular inputs.
        """
        now = now or datetime.now(UTC)
        done = self.files_succeeded + self.files_failed
        started = parse_time(self.planned_at)
        elapsed = (now - started).total_seconds() if started else 0.0
        rate = round(done / elapsed if elapsed > 0 and done else 0.0, 2)
        pending = max(self.files - done, 0)
        inputs = {"total": self.files, "succeeded": self.files_succeeded,
                  "failed": self.files_failed, "pending": pending}
        view = {
            "unit": self.unit,
            "inputs": inputs,
            "mini_batches": {"total": self.batches, "succeeded": self.batches_succeeded,
                             "failed": self.batches_failed,
                             "pending": max(self.batches - self.batches_done, 0)},
            "rows": self.rows,
            "rate_per_second": rate,
            "eta_seconds": round(pending / rate, 1) if rate and pending else
            (0.0 if not pending else None),
            "planned_at": self.planned_at,
            "first_completed_at": self.first_completed_at,
            "last_completed_at": self.last_completed_at,
            "errors_sample": list(self.errors_sample),
            "recovery": self.recovery,
        }
        if self.unit == "files":
            view.update(files=dict(inputs), rate_files_per_second=rate)
        return view

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
            "history": self.history, "unit": self.unit,
            "copies": self.copies, "backups_won": self.backups_won,
            "durations": self.durations, "unclaimed": self.unclaimed,
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
            unit=data.get("unit", "files"),
            copies={k: list(v) for k, v in (data.get("copies") or {}).items()},
            backups_won=int(data.get("backups_won", 0)),
            durations=list(data.get("durations") or []),
            unclaimed=dict(data.get("unclaimed") or {}),
        )


def threshold_exceeded(job: JobRecord, progress: Progress) -> bool:
    """Azure ML's rule: more failed files than `error_threshold` (-1 = no limit); in a
    tabular job failed rows."""
    limit = job.settings.error_threshold
    return limit >= 0 and progress.files_failed > limit
