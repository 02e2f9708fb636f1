"""A job's per-file errors report, page by page, never read whole.

Once the job has ended, pages come from its `errors.jsonl` (control.finalize): a page is one
ranged read from where the previous page stopped, its token holding that byte offset and
the offset of the first row of the mini-batch the page starts in, whose message and
traceback the page's first rows share (failure_records.report_rows); that row costs one
more small read when a page starts inside a mini-batch. While the job runs, pages come
from the failure records written so far (of the first MAX_LIVE_FAILURE_RECORDS failed
mini-batches), a token holding the record and the row to go on from.
"""

from __future__ import annotations

import json
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from shared.contract import layout
from shared.contract.errors import InputUnreadable
from shared.control.pages import MAX_PAGE_BYTES, Page, bad_token, make_token, read_token
from shared.storage.failure_records import error_rows, full_row

DEFAULT_ERROR_PAGE_ROWS = 1000
MAX_ERROR_ROWS = 1_000_000  # the most rows ?top= may ask for
MAX_LIVE_FAILURE_RECORDS = 100  # mini-batch failure records read for a job still running
MAX_REPORT_LINE = 256 * 1024  # longer than any row report_rows writes
_REPORT = "errors"
_LIVE = "live-errors"
_TOKENS = {_REPORT: {"offset": int, "first": int}, _LIVE: {"record": int, "row": int}}
_RANGE_NOT_SATISFIABLE = 416


def errors_page(state: ContainerClient, job_id: str, ended: bool, top: int | None,
                continuation: str | None) -> Page:
    """The page of job `job_id`'s errors report that `continuation` asks for (the first
    without one): at most `top` rows (DEFAULT_ERROR_PAGE_ROWS when None) and about
    MAX_PAGE_BYTES. The job's report once it has one; before that, the failure records so
    far, or nothing when the job `ended` without a report."""
    top = DEFAULT_ERROR_PAGE_ROWS if top is None else top
    kind, at = read_token(continuation, _TOKENS) or (_REPORT, {"offset": 0, "first": 0})
    if kind == _LIVE:
        return _live_page(state, job_id, top, at["record"], at["row"])
    report = state.get_blob_client(layout.errors_report(job_id))
    try:
        return _report_page(report, top, at["offset"], at["first"])
    except ResourceNotFoundError:
        if continuation is not None or ended:
            return Page([])
    return _live_page(state, job_id, top, 0, 0)


def _report_page(report: BlobClient, top: int, offset: int, first_at: int) -> Page:
    try:
        download = report.download_blob(offset=offset, length=MAX_PAGE_BYTES + MAX_REPORT_LINE)
    except HttpResponseError as exc:
        if exc.status_code == _RANGE_NOT_SATISFIABLE and offset == 0:
            return Page([])  # an empty report
        if exc.status_code == _RANGE_NOT_SATISFIABLE:
            raise bad_token() from None  # an offset past the end
        raise
    data = download.readall()
    size = int(download.properties.content_range.rsplit("/", 1)[1])
    try:
        first = _first_row(report, first_at) if first_at < offset else None
    except (HttpResponseError, ValueError, LookupError, TypeError):
        raise bad_token() from None  # a token of offsets this report never had
    rows: list[dict[str, Any]] = []
    used = position = 0
    while len(rows) < top and position < len(data):
        end = data.find(b"\n", position)
        if end < 0:
            if offset + len(data) < size:
                break  # the window ends inside this line: the next page starts with it
            end = len(data)
        line = data[position:end]
        if line.strip():
            try:
                row = json.loads(line)
                head, head_at = first, first_at
                if head is None or row["mini_batch"] != head["mini_batch"]:
                    head, head_at = row, offset + position
                whole = full_row(row, head)
            except (ValueError, LookupError, TypeError):
                if not rows and offset:
                    raise bad_token() from None  # an offset inside a row
                raise InputUnreadable(f"the errors report {report.blob_name} has an "
                                      f"unreadable row at byte {offset + position}") from None
            size_of = len(json.dumps(whole))
            if rows and used + size_of > MAX_PAGE_BYTES:
                break
            rows.append(whole)
            used += size_of
            first, first_at = head, head_at
        position = end + 1
    if not rows and position < len(data):
        raise InputUnreadable(f"the errors report {report.blob_name} has a row longer than "
                              f"{MAX_REPORT_LINE} bytes")
    following = offset + position
    token = make_token(_REPORT, offset=following, first=first_at) if following < size else None
    return Page(rows, token)


def _first_row(report: BlobClient, at: int) -> dict[str, Any]:
    """The report's row that starts at byte `at` (the first of a mini-batch)."""
    data = report.download_blob(offset=at, length=MAX_REPORT_LINE).readall()
    row = json.loads(data.split(b"\n", 1)[0])
    if not isinstance(row, dict) or "mini_batch" not in row or "error" not in row:
        raise ValueError("not a row")
    return row


def _live_page(state: ContainerClient, job_id: str, top: int, record: int, row: int) -> Page:
    names = []
    for name in state.list_blob_names(name_starts_with=layout.failures_prefix(job_id),
                                      results_per_page=MAX_LIVE_FAILURE_RECORDS):
        names.append(name)
        if len(names) >= MAX_LIVE_FAILURE_RECORDS:
            break
    rows: list[dict[str, Any]] = []
    used = 0
    while record < len(names) and len(rows) < top:
        try:
            listed = error_rows(json.loads(state.download_blob(names[record]).readall()))
        except ResourceNotFoundError:
            listed = []
        for whole in listed[row:]:
            size_of = len(json.dumps(whole))
            if len(rows) >= top or (rows and used + size_of > MAX_PAGE_BYTES):
                return Page(rows, make_token(_LIVE, record=record, row=row))
            rows.append(whole)
            used += size_of
            row += 1
        record, row = record + 1, 0
    token = make_token(_LIVE, record=record, row=row) if record < len(names) else None
    return Page(rows, token)
