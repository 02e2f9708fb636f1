"""A job's usage and cost report: time, scoring and GPU seconds, inputs and bytes, rows,
storage operations by kind, retries, and a cost estimate from the operator's price table.

The scoring figures add up what each mini-batch's counted ledger line carries (see
contract.ledger.AttemptUsage and progress.UsageTotals). Storage operations are counted
where batchfn sees each one (ledger lines, part blobs) and estimated from the job's shape
where it does not (input reads of retried attempts, queue receives, the orchestrator's
checks, a capped compute's host slot leases): each kind says which. Prices are list
prices: an estimate, not a bill.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.contract.heartbeats import DEFAULT_INTERVAL_SECONDS
from shared.contract.job_records import JobRecord, JobStatus
from shared.contract.layout import COMPUTE_SLOT_RENEW_SECONDS
from shared.contract.ledger import milliseconds_up, shard_count
from shared.contract.manifest import MANIFEST_ITEMS
from shared.contract.timestamps import parse_time
from shared.control.orchestrator import poll_delay
from shared.control.progress import Progress

PRICES_SETTING = "BATCHFN_PRICES"
MAX_PRICES_JSON = 16 * 1024
# Azure's public pay-as-you-go list prices in USD (East US), as published on 2025-06-01:
# Functions Flex Consumption (on-demand execution time and executions), Container Apps
# consumption (vCPU and memory seconds, serverless GPU seconds by GPU type) and Storage
# (hot LRS blob operations, queue operations). Set BATCHFN_PRICES to your own.
DEFAULT_PRICES: dict[str, Any] = {
    "currency": "USD",
    "as_of": "2025-06-01",
    "source": "Azure public list prices, pay-as-you-go, East US",
    "control_gb_second": 0.000026,
    "control_execution": 0.0000004,
    "control_memory_gb": 2.048,
    "control_seconds_per_execution": 0.1,
    "scoring_vcpu_second": 0.000024,
    "scoring_gib_second": 0.000003,
    "scoring_worker_vcpus": 1.0,
    "scoring_worker_gib": 2.0,
    "gpu_second": {"A100": 0.000917, "T4": 0.000178},
    "blob_write_10k": 0.065,
    "blob_read_10k": 0.005,
    "blob_list_10k": 0.065,
    "queue_10k": 0.004,
}
_TEXT_PRICES = ("currency", "as_of", "source")


def price_table(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The defaults with the operator's BATCHFN_PRICES (a JSON object of the same keys)
    over them; ValueError for anything else."""
    env = os.environ if env is None else env
    text = (env.get(PRICES_SETTING) or "").strip()
    prices = {**DEFAULT_PRICES, "gpu_second": dict(DEFAULT_PRICES["gpu_second"])}
    if not text:
        return prices
    if len(text) > MAX_PRICES_JSON:
        raise ValueError(f"{PRICES_SETTING} is longer than {MAX_PRICES_JSON} characters")
    try:
        given = json.loads(text)
    except ValueError:
        raise ValueError(f"{PRICES_SETTING} is not JSON") from None
    if not isinstance(given, dict):
        raise ValueError(f"{PRICES_SETTING} must be a JSON object")
    for key, value in given.items():
        if key not in DEFAULT_PRICES:
            raise ValueError(f"{PRICES_SETTING}: unknown price {str(key)[:50]!r}; prices: "
                             + ", ".join(sorted(DEFAULT_PRICES)))
        if key in _TEXT_PRICES:
            if not isinstance(value, str) or len(value) > 200:
                raise ValueError(f"{PRICES_SETTING}: {key} must be text")
            prices[key] = value
        elif key == "gpu_second":
            if not isinstance(value, dict) or len(value) > 50 or not all(
                    isinstance(k, str) and 0 < len(k) <= 100 and _price(v) for k, v in
                    value.items()):
                raise ValueError(f"{PRICES_SETTING}: gpu_second must map GPU types (text) to "
                                 "prices per GPU-second (numbers >= 0)")
            prices[key] = {**prices[key], **value}
        elif not _price(value):
            raise ValueError(f"{PRICES_SETTING}: {key} must be a number >= 0")
        else:
            prices[key] = float(value)
    return prices


def _price(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def usage_report(job: JobRecord, progress: Progress | None, *,
                 prices: dict[str, Any] | None = None,
                 now: datetime | None = None) -> dict[str, Any]:
    """The job's usage and estimated cost (while it runs: so far)."""
    prices = prices or price_table()
    now = now or datetime.now(UTC)
    progress = progress or Progress.start(0, 0)
    totals = progress.usage
    final = job.status in JobStatus.TERMINAL
    created = parse_time(job.created_at)
    ended = parse_time(job.ended_at) if final else now
    queued = parse_time(progress.planned_at)
    first = parse_time(totals.first_started_at or job.started_at)
    counted = progress.batches_succeeded + progress.batches_failed
    gpu_total = sum(totals.gpu_seconds.values())
    operations = storage_operations(job, progress, _seconds(queued, ended))
    recovery = progress.recovery
    report = {
        "name": job.id, "status": job.status, "final": final,
        "wall_seconds": _seconds(created, ended),
        "queue_wait_seconds": _seconds(queued, first) if first else None,
        "mini_batch_wait_seconds": {
            "mean": round(totals.waited_seconds / counted, 3) if counted else None,
            "max": round(totals.longest_wait_seconds, 3)},
        "scoring_seconds": milliseconds_up(totals.run_seconds),
        "host_seconds": milliseconds_up(totals.handled_seconds),
        "gpu_seconds": {"total": round(gpu_total, 3),
                        "by_device": {k: round(v, 3) for k, v in totals.gpu_seconds.items()}},
        "unit": progress.unit,
        "inputs": {"total": progress.files, "scored": progress.files_succeeded
                   + progress.files_failed, "succeeded": progress.files_succeeded,
                   "failed": progress.files_failed, "not_started": progress.files_not_started},
        "input_bytes": totals.input_bytes,
        "rows_written": progress.rows,
        "mini_batches": {"total": progress.batches, "counted": counted,
                         "not_started": progress.batches_not_started},
        "attempts": totals.attempts,
        "retries": totals.retries,
        # Copies the monitor sent (control/recovery.py): neither counts as a retry.
        "redeliveries": recovery["redelivered"],
        "backups": {"sent": recovery["backups"], "won": recovery["backups_won"]},
        "duplicate_deliveries": max(0, totals.lines - counted - _recorded_not_started(progress)),
        "storage_operations": operations,
        "cost": estimated_cost(totals.run_seconds, totals.gpu_seconds, operations,
                               _checks(_seconds(queued, ended)), prices),
    }
    return report


def _recorded_not_started(progress: Progress) -> int:
    """Mini-batches a host recorded as not started (the others the job's stop counted)."""
    return sum(bin(byte).count("1") for byte in progress.skipped)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def _checks(elapsed: float | None) -> int:
    """The orchestrator's progress checks over `elapsed` seconds (its timer schedule)."""
    elapsed = elapsed or 0.0
    checks, spent = 1, 0.0
    while checks < 20 and spent + poll_delay(checks - 1) <= elapsed:
        spent += poll_delay(checks - 1)
        checks += 1
    return checks + int(max(0.0, elapsed - spent) // poll_delay(99))


def storage_operations(job: JobRecord, progress: Progress,
                       elapsed: float | None) -> list[dict[str, Any]]:
    """Storage operations of the job by kind, each with its billing class and whether it
    was `counted` (seen one by one) or `estimated` (from the job's shape)."""
    totals = progress.usage
    counted = progress.batches_succeeded + progress.batches_failed
    scored_inputs = progress.files_succeeded + progress.files_failed
    per_batch = scored_inputs / counted if counted else 0.0
    shards = shard_count(progress.batches)
    checks = _checks(elapsed)
    attempts = max(totals.attempts, counted)
    copies = sum(len(sent) for sent in progress.copies.values())
    messages = attempts + progress.batches_not_started + copies

    def kind(name: str, billing: str, count: float, how: str, exact: bool) -> dict[str, Any]:
        return {"kind": name, "class": billing, "count": int(round(count)),
                "counted": "counted" if exact else "estimated", "how": how}

    operations = [
        kind("input_reads", "read", scored_inputs + totals.retries * per_batch,
             "one read per input per attempt (tabular: per row range); attempts before the "
             "counted one are estimated", totals.retries == 0 and not job.settings.tabular),
        kind("ledger_appends", "write", totals.lines, "one per recorded mini-batch, "
             "duplicate deliveries included", True),
        kind("part_blob_writes", "write", totals.part_blobs, "parts over 256 KiB", True),
        kind("failure_records", "write", progress.batches_failed,
             "one per failed mini-batch (scored mini-batches with failed inputs add one "
             "each, not counted here)", False),
        kind("attempt_logs", "write", totals.retries + progress.batches_failed,
             "one per failed attempt; successful attempts' output is batched per worker",
             False),
        kind("manifest_writes", "write",
             math.ceil(progress.files / MANIFEST_ITEMS) if progress.files else 0,
             "one per chunk of up to 5,000 inputs", False),
        kind("queue_sends", "queue", progress.batches + copies,
             "one message per mini-batch and one per copy the monitor sent (re-delivery or "
             "backup); a retry carried on in a new message is not counted here", False),
        kind("queue_receives_and_deletes", "queue", 2 * messages,
             "a receive and a delete (or a visibility update) per delivery; a delivery a "
             "capped compute deferred (all its host slots busy) adds a send, a receive and a "
             "delete, not counted here", False),
        kind("job_record_reads", "read", messages,
             "at most one per delivery (scoring hosts cache the job for 2 s)", False),
        kind("progress_checks", "read", checks * (2 + shards),
             "the orchestrator's checks on its timer: job record, progress and each ledger "
             "shard per check", False),
        kind("progress_writes", "write", min(checks, max(counted, 1)) + 2,
             "progress.json when a check counts something new", False),
        kind("finalize_reads", "read", shards + totals.part_blobs + 1,
             "ledger shards and part blobs read by the merge, the failure listing", False),
        kind("finalize_writes", "write", 6,
             "errors report, output, usage report, job record and index updates", False),
        kind("lifecycle_events", "write", 2 * (3 + job.events.progress),
             "one log append and one delivery per event", False),
        kind("heartbeat_writes", "write",
             totals.handled_seconds / max(1, job.settings.max_concurrency_per_instance)
             / DEFAULT_INTERVAL_SECONDS,
             "one write per scoring host per interval (3 s by default) while it holds the "
             "job's mini-batches: host seconds over worker slots over the interval", False),
        kind("heartbeat_listings", "list", checks,
             "the monitor lists the job's heartbeats at each check (and reads each host's: "
             "not counted here)", False),
    ]
    if job.compute.max_instances is not None:
        operations.append(kind(
            "compute_slot_leases", "read",
            totals.handled_seconds / COMPUTE_SLOT_RENEW_SECONDS
            + 2 * min(counted, job.compute.max_instances),
            "a capped compute's host slots, blob leases (billed as other operations, at the "
            f"read price): a renewal per {COMPUTE_SLOT_RENEW_SECONDS:g} s of host time and a "
            "take and a release per host; a host shares them with the pool's other jobs, and "
            "tries on a full pool are not counted", False))
    return operations


def estimated_cost(run_seconds: float, gpu_seconds: Mapping[str, float],
                   operations: list[dict[str, Any]], executions: int,
                   prices: dict[str, Any]) -> dict[str, Any]:
    """The job's cost at `prices`: scoring workers (CPU and memory while run() ran, GPU
    seconds by type), the control app's executions, and storage operations by class."""
    unpriced = []
    gpu_cost = 0.0
    for device, seconds in gpu_seconds.items():
        price = gpu_price(device, prices["gpu_second"])
        if price is None:
            unpriced.append(device)
        else:
            gpu_cost += seconds * price
    cpu_cost = run_seconds * (prices["scoring_worker_vcpus"] * prices["scoring_vcpu_second"]
                              + prices["scoring_worker_gib"] * prices["scoring_gib_second"])
    control_executions = 2 * executions + 3  # an orchestrator episode and an activity each
    control_cost = control_executions * (
        prices["control_execution"] + prices["control_seconds_per_execution"]
        * prices["control_memory_gb"] * prices["control_gb_second"])
    by_class = {"read": 0, "write": 0, "list": 1, "queue": 0}
    for operation in operations:
        by_class[operation["class"]] += operation["count"]
    storage_cost = (by_class["read"] * prices["blob_read_10k"]
                    + by_class["write"] * prices["blob_write_10k"]
                    + by_class["list"] * prices["blob_list_10k"]
                    + by_class["queue"] * prices["queue_10k"]) / 10_000
    items = {"scoring_gpu": gpu_cost, "scoring_cpu_memory": cpu_cost,
             "control": control_cost, "storage": storage_cost}
    return {
        "currency": prices["currency"], "prices_as_of": prices["as_of"],
        "prices": prices["source"], "list_prices": True,
        "items": {key: round(value, 6) for key, value in items.items()},
        "total": round(sum(items.values()), 6),
        "operations_by_class": by_class,
        "unpriced_gpus": unpriced,
    }


def gpu_price(device: str, table: Mapping[str, float]) -> float | None:
    """The price per GPU-second of a device type: the table's entry whose name is in the
    device's (A100 for "NVIDIA A100 80GB PCIe"), the longest such name first."""
    for name in sorted(table, key=len, reverse=True):
        if name.lower() in device.lower():
            return float(table[name])
    return None
