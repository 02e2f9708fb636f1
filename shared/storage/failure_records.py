"""Failure records: what failed in one mini-batch, and the errors report's rows made of them.

A record (`failures/<index>.json`, written create-only: the first stands) lists the inputs
that failed: every input of a mini-batch that failed as a whole (run() raised or timed
out, the worker died, the script returned too few rows), or the single files and rows that
failed while the rest of the mini-batch was scored (a row that cannot be parsed, a file the
built-in MLflow scorer does not read), or a file that could not be planned. Each input is
a file, or `rows` rows of a file from row number `row`; the errors report has one row per
listed input.

In the errors report (`errors.jsonl`, written by finalize from the records) a mini-batch's
message and traceback are stored once, not on each of its rows: its first row carries the
traceback, and each row an `error` only where it is its own (null: the mini-batch's,
which the first row holds as `error`, or as `mini_batch_error` when its own differs).
`report_rows` makes these rows, `full_row` restores a row whole from the first row of its
mini-batch. Their texts are capped, whatever wrote the record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from shared.contract import layout
from shared.contract.manifest import InputFile

# Statuses of a record (besides the scoring outcomes "failed" and "timed_out").
INPUT_FAILED = "input_failed"  # inputs that failed alone in a mini-batch that was scored
MISSING_ROWS = "missing_rows"  # run() returned fewer rows than it was given
POISONED = "poisoned"  # the message failed on every delivery
UNPLANNED = "unsplittable"  # a file whose rows could not be planned
# Written for a mini-batch that was scored (and counted as succeeded); every other status is
# of a mini-batch that failed for good.
SCORED_STATUSES = frozenset({INPUT_FAILED, MISSING_ROWS})
# What one report row keeps of a message and of a traceback (excerpt), whatever the record
# holds (the scoring host bounds both before; a record may be older than that).
MAX_REPORT_ERROR_CHARS = 2000
MAX_REPORT_TRACEBACK_CHARS = 8000


@dataclass(frozen=True)
class InputFailure:
    """An input that could not be scored: a whole file (`row` None), or `rows`
    consecutive rows of a file from row number `row`."""

    file: InputFile
    error: str
    row: int | None = None
    rows: int = 1


def whole(files: Iterable[InputFile], error: str, rows: Sequence[tuple[int, int]] = ()
          ) -> list[InputFailure]:
    """The inputs of a mini-batch that failed as a whole: each file, or with `rows` (one
    (first row, count) per file, tabular mini-batches) each file's rows."""
    files = list(files)
    if not rows:
        return [InputFailure(file, error) for file in files]
    return [InputFailure(file, error, first, count)
            for file, (first, count) in zip(files, rows, strict=True)]


def write_record(state: ContainerClient, job_id: str, index: int, *, attempts: int,
                 status: str, error: str, traceback: str | None,
                 inputs: Sequence[InputFailure], unlisted: int = 0) -> None:
    """Write mini-batch `index`'s failure record unless one exists (duplicates keep the first).

    An input's error is stored only where it differs from the record's `error`; `unlisted`
    counts failed inputs beyond those listed (a worker lists at most a thousand);
    `traceback` is stored as given (the scoring host shortens it first).
    """
    record = {
        "mini_batch": index, "attempts": attempts, "status": status, "error": error,
        "traceback": traceback,
        "inputs": [[f.file.container, f.file.blob_name, f.file.display_name, f.row, f.rows,
                    None if f.error == error else f.error] for f in inputs],
        "unlisted": unlisted,
    }
    try:
        state.upload_blob(layout.failure(job_id, index), json.dumps(record).encode(),
                          overwrite=False)
    except ResourceExistsError:
        pass


def error_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The errors report's rows of one failure record, whole: one per failed input listed."""
    entries = record.get("inputs")
    if entries is None:  # a record written before rows were recorded: whole files
        entries = [[c, b, d, None, 1, None] for c, b, d in record.get("files", ())]
    rows = [_row(record, container, blob_name, display, row, count, error)
            for container, blob_name, display, row, count, error in entries]
    unlisted = record.get("unlisted") or 0
    if unlisted and rows:
        last = rows[-1]
        rows.append(_row(record, last["container"], last["blob_name"], last["file"], None,
                         unlisted, f"... and {unlisted} more failed inputs of this mini-batch "
                         "(not listed)"))
    return rows


def report_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one failure record as the errors report stores them (see the module
    docstring): the mini-batch's message and traceback once."""
    rows = error_rows(record)
    batch_error = _capped(record["error"], MAX_REPORT_ERROR_CHARS)
    for position, row in enumerate(rows):
        row["error"] = _capped(row["error"], MAX_REPORT_ERROR_CHARS)
        if position == 0:
            row["traceback"] = _capped(row["traceback"], MAX_REPORT_TRACEBACK_CHARS)
            if row["error"] != batch_error:
                row["mini_batch_error"] = batch_error
            continue
        row["traceback"] = None
        if row["error"] == batch_error:
            row["error"] = None
    return rows


def full_row(row: dict[str, Any], first: dict[str, Any]) -> dict[str, Any]:
    """A stored report row whole (as error_rows makes it), given `first`, the first stored
    row of its mini-batch (`row` itself for that one)."""
    whole = dict(row)
    batch_error = first.get("mini_batch_error") or first["error"]
    whole.pop("mini_batch_error", None)
    whole["error"] = row["error"] if row["error"] is not None else batch_error
    whole["traceback"] = first["traceback"]
    return whole


def _row(record: dict[str, Any], container: str, blob_name: str, display: str,
         row: int | None, rows: int, error: str | None) -> dict[str, Any]:
    return {"file": display, "container": container, "blob_name": blob_name, "row": row,
            "rows": rows, "mini_batch": record["mini_batch"], "attempts": record["attempts"],
            "status": record["status"], "error": error or record["error"],
            "traceback": record["traceback"]}


def _capped(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit - 1] + "…"
