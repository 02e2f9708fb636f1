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
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.storage.blob import ContainerClient

from shared.contract.job_records import JobRecord
from shared.contract.ledger import SHARD_BATCHES, Completion, shard_batches, shard_count
from shared.contract.timestamps import format_time, parse_time, utc_now
from shared.control.throughput import Sample, add_sample
from shared.storage.ledger_blobs import ledger_lines

log = logging.getLogger(__name__)

ERRORS_SAMPLE = 5
DURATIONS_KEPT = 64  # the latest mini-batches' scoring times kept, for their median
REDELIVERY = "redelivery"  # a copy of a stalled mini-batch (control/recovery.py)
BACKUP = "backup"  # a backup copy of a slow one


@dataclass
class UsageTotals:
    """What the counted ledger lines say the job used, added up as they are counted.

    `attempts` and `retries` count the attempts of each counted mini-batch (retries are
    attempts after the first); `run_seconds` is run() as the hosts timed it and
    `gpu_seconds` the share of it on a GPU, by device type; `waited_seconds` adds up each
    mini-batch's wait from the job's queueing to its start (`longest_wait_seconds` the
    longest); `lines` counts every ledger line read, duplicates included, and `part_blobs`
    the parts too large for their line. Lines written before lines carried usage count in
    `lines` only.
    """

    attempts: int = 0
    retries: int = 0
    run_seconds: float = 0.0
    handled_seconds: float = 0.0
    gpu_seconds: dict[str, float] = field(default_factory=dict)
    input_bytes: int = 0
    waited_seconds: float = 0.0
    longest_wait_seconds: float = 0.0
    first_started_at: str | None = None
    lines: int = 0
    part_blobs: int = 0
    checks: int = 0  # progress checks of the orchestrator that read the ledgers

    def add(self, completion: Completion, queued_at: str) -> None:
        """Count the usage of a counted line (`queued_at`: when the job's messages went out)."""
        if completion.succeeded and completion.part is None:
            self.part_blobs += 1
        usage = completion.usage
        if usage is None:
            return
        self.attempts += usage.attempt
        self.retries += max(0, usage.attempt - 1)
        self.run_seconds += usage.run_seconds
        self.handled_seconds += usage.handled_seconds
        if usage.gpu:
            self.gpu_seconds[usage.gpu] = self.gpu_seconds.get(usage.gpu, 0.0) + usage.run_seconds
        self.input_bytes += usage.input_bytes
        recorded, queued = parse_time(completion.at), parse_time(queued_at)
        if recorded is None:
            return
        started = recorded - timedelta(seconds=usage.handled_seconds)
        if self.first_started_at is None or started < parse_time(self.first_started_at):
            self.first_started_at = format_time(started)
        if queued is not None:
            wait = max(0.0, (started - queued).total_seconds())
            self.waited_seconds += wait
            self.longest_wait_seconds = max(self.longest_wait_seconds, wait)

    def to_dict(self) -> dict[str, Any]:
        return {key: round(value, 3) if isinstance(value, float) else value
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UsageTotals:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in (data or {}).items() if key in known})


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
    # Mini-batches not started (the deadline passed first) and their inputs; `skipped`
    # marks those a host recorded as such.
    batches_not_started: int = 0
    files_not_started: int = 0
    skipped: bytearray = field(default_factory=bytearray)
    usage: UsageTotals = field(default_factory=UsageTotals)

    @classmethod
    def start(cls, files: int, batches: int, unit: str = "files") -> Progress:
        size = (batches + 7) // 8
        return cls(files=files, batches=batches, planned_at=utc_now(),
                   done=bytearray(size), succeeded=bytearray(size), unit=unit,
                   skipped=bytearray(size))

    @property
    def batches_done(self) -> int:
        """Mini-batches that need nothing more: scored, failed for good, or not started."""
        return self.batches_succeeded + self.batches_failed + self.batches_not_started

    @property
    def finished(self) -> bool:
        return self.batches_done >= self.batches

    def is_done(self, index: int) -> bool:
        return bool(self.done[index >> 3] & (1 << (index & 7)))

    def is_succeeded(self, index: int) -> bool:
        return bool(self.succeeded[index >> 3] & (1 << (index & 7)))

    def is_failed(self, index: int) -> bool:
        """Whether mini-batch `index` failed for good (not merely not started)."""
        return (self.is_done(index) and not self.is_succeeded(index)
                and not self.skipped[index >> 3] & (1 << (index & 7)))

    def is_unscored(self, index: int) -> bool:
        """Whether mini-batch `index` neither was scored nor failed: it never started (or
        it was still running when the job stopped)."""
        return not self.is_succeeded(index) and not self.is_failed(index)

    def stop_rest(self) -> None:
        """Count every mini-batch not done yet as not started (the job stops now: cancel,
        or the deadline passed and whatever still runs is left out)."""
        self.batches_not_started = self.batches - self.batches_succeeded - self.batches_failed
        self.files_not_started = max(
            0, self.files - self.files_succeeded - self.files_failed)

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
        if completion.not_started is not None:
            self.skipped[index >> 3] |= 1 << (index & 7)
            self.batches_not_started += 1
            self.files_not_started += completion.not_started
            return True
        self.usage.add(completion, self.planned_at)
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
                self.usage.lines += 1
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
        scored = self.files_succeeded + self.files_failed
        started = parse_time(self.planned_at)
        elapsed = (now - started).total_seconds() if started else 0.0
        rate = round(scored / elapsed if elapsed > 0 and scored else 0.0, 2)
        pending = max(self.files - scored - self.files_not_started, 0)
        inputs = {"total": self.files, "succeeded": self.files_succeeded,
                  "failed": self.files_failed, "not_started": self.files_not_started,
                  "pending": pending}
        view = {
            "unit": self.unit,
            "inputs": inputs,
            "mini_batches": {"total": self.batches, "succeeded": self.batches_succeeded,
                             "failed": self.batches_failed,
                             "not_started": self.batches_not_started,
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
            legacy = {key: value for key, value in inputs.items() if key != "not_started"}
            view.update(files=legacy, rate_files_per_second=rate)
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
            "batches_not_started": self.batches_not_started,
            "files_not_started": self.files_not_started,
            "skipped": base64.b64encode(bytes(self.skipped)).decode(),
            "usage": self.usage.to_dict(),
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
            batches_not_started=data.get("batches_not_started", 0),
            files_not_started=data.get("files_not_started", 0),
            skipped=bytearray(base64.b64decode(data["skipped"])) if "skipped" in data
            else bytearray((data["batches"] + 7) // 8),
            usage=UsageTotals.from_dict(data.get("usage")),
        )


def threshold_exceeded(job: JobRecord, progress: Progress) -> bool:
    """Azure ML's rule: more failed files than `error_threshold` (-1 = no limit); in a
    tabular job failed rows."""
    limit = job.settings.error_threshold
    return limit >= 0 and progress.files_failed > limit
