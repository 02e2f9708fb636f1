"""Fail fast: a scoring script that cannot start fails its job, instead of every mini-batch.

When the last attempt of a mini-batch fails before run() (its environment could not be
built, the script not loaded, or init() raised), the scoring host adds it to the job
record's `script_start_failures`, with the first error and its traceback. Once
BATCHFN_FAIL_FAST_BATCHES such mini-batches (default 2; 0: never) are counted, the record
says `final` and the job's monitor fails the job with that error as its reason, unless a
mini-batch of it succeeded meanwhile (then the script can start, and the failures count
as data failures against error_threshold like any other). The hosts then drop the job's
remaining messages, as for any job that ended.
"""

from __future__ import annotations

import os
from dataclasses import replace

from shared.contract.job_records import (
    MAX_START_TRACEBACK,
    JobRecord,
    JobStatus,
    ScriptStartFailures,
)
from shared.scoring.batch import ScoringOutcome
from shared.storage.job_store import JobStore

FAIL_FAST_SETTING = "BATCHFN_FAIL_FAST_BATCHES"
DEFAULT_FAIL_FAST_BATCHES = 2


def fail_fast_batches() -> int:
    """Mini-batches that must fail to start before their job fails (0: never); ValueError
    for a setting that is not a whole number >= 0 (the scoring app checks it at start)."""
    text = os.environ.get(FAIL_FAST_SETTING, "").strip()
    if not text:
        return DEFAULT_FAIL_FAST_BATCHES
    if not text.isdigit():
        raise ValueError(f"{FAIL_FAST_SETTING} must be a whole number >= 0, not {text!r}")
    return int(text)


class FailFast:
    """Counts a job's mini-batches whose script never started, in the job record."""

    def __init__(self, store: JobStore, batches: int | None = None) -> None:
        self._store = store
        self._batches = fail_fast_batches() if batches is None else batches

    def record(self, job_id: str, outcome: ScoringOutcome) -> None:
        """Count a mini-batch whose last attempt failed to start (no-op for others)."""
        if not outcome.startup_failed or self._batches <= 0:
            return
        limit = self._batches

        def count(job: JobRecord) -> JobRecord | None:
            if job.status in JobStatus.TERMINAL:
                return None
            seen = job.script_start_failures
            batches = 1 if seen is None else seen.batches + 1
            failures = ScriptStartFailures(
                batches=batches,
                error=seen.error if seen else (outcome.error or outcome.status),
                traceback=seen.traceback if seen else (
                    outcome.traceback[-MAX_START_TRACEBACK:] if outcome.traceback else None),
                final=batches >= limit)
            return replace(job, script_start_failures=failures)

        self._store.update(job_id, count)
