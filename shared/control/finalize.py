"""Finalize: the errors report, then the merged output in input order, create-only.

Parts are read from the ledgers shard by shard (storage/parts.py) and streamed into a temporary
file, so memory stays flat whatever the number of parts; the upload refuses to replace an
existing blob (If-None-Match: *), so a job never overwrites an output.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow.parquet as pq
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.contract import layout
from shared.contract.job_records import JobRecord, JobStatus
from shared.contract.layout import JOB_METADATA_KEY
from shared.contract.settings import TEXT_OUTPUT_FORMATS
from shared.control.monitor import Outcome, evaluate
from shared.control.orchestrator import FailRequest, JobEnd, StepResult
from shared.control.progress import Progress
from shared.storage.failure_records import SCORED_STATUSES, report_rows
from shared.storage.job_store import JobStore
from shared.storage.parts import parts_in_order, read_parquet_part

# A merge of more parts than this shows Finalizing and checks the output before it starts.
ANNOUNCED_MERGE_PARTS = 16
RECORD_READS = 8  # failure records read at once while the errors report is written


def advance_job(store: JobStore, job_id: str) -> StepResult:
    """One orchestrator step: fold new completions into progress and, when that check says
    so, finalize in the same call (one activity round trip instead of two)."""
    check = evaluate(store, job_id)
    if not check.outcome.ends_job:
        return StepResult(ended=False, done=check.done, total=check.total)
    end = _finalize(store, check.job, check.progress, check.outcome)
    return StepResult(ended=True, done=check.done, total=check.total, status=end.status,
                      reason=end.reason)


def script_failure_reason(job: JobRecord) -> str:
    """Why a job whose scoring script never started failed: the error and its traceback."""
    failures = job.script_start_failures
    assert failures is not None
    text = (f"the scoring script could not start: {failures.error} (every attempt of the "
            f"first {failures.batches} mini-batches failed before run(); the remaining "
            "mini-batches were dropped)")
    return f"{text}\n{failures.traceback}" if failures.traceback else text


class OutputExists(Exception):
    """The output blob exists and was not written by this job."""


def _finalize(store: JobStore, job: JobRecord, progress: Progress | None,
              outcome: Outcome) -> JobEnd:
    if job.status in JobStatus.TERMINAL or outcome is Outcome.STOPPED:
        return JobEnd(job.status, job.reason)
    if progress is None:
        progress = Progress.from_dict(store.read_json(layout.progress(job.id)) or
                                      Progress.start(0, 0).to_dict())
    if outcome is Outcome.COMPLETED and progress.batches_succeeded > ANNOUNCED_MERGE_PARTS:
        # A merge that takes a while shows Finalizing meanwhile (a small one is done sooner
        # than a client could see it).
        job = store.update(job.id, lambda j: None if j.status in JobStatus.STOPPED
                           else j.with_status(JobStatus.FINALIZING))
    # Every failure record counts failed files: a job without any has nothing to list.
    write_errors_report(store, job.id, progress,
                        listing=outcome is not Outcome.COMPLETED or progress.files_failed > 0)
    status, reason = JobStatus.COMPLETED, None
    if outcome is Outcome.CANCELED:
        status, reason = JobStatus.CANCELED, "canceled by request"
    elif outcome is Outcome.SCRIPT_FAILED:
        status, reason = JobStatus.FAILED, script_failure_reason(job)
    elif outcome is Outcome.THRESHOLD:
        status = JobStatus.FAILED
        reason = (f"error_threshold {job.settings.error_threshold} exceeded: "
                  f"{progress.files_failed} {progress.unit} failed; remaining mini-batches "
                  "were dropped")
    elif job.status == JobStatus.CANCEL_REQUESTED:
        status, reason = JobStatus.CANCELED, "canceled by request"
    elif job.settings.output_action == "append_row":
        try:
            merge_output(store, job, progress)
        except OutputExists as exc:
            status, reason = JobStatus.FAILED, str(exc)
    scored = progress.batches_done > 0

    def end(current: JobRecord) -> JobRecord | None:
        if current.status in JobStatus.TERMINAL:
            return None
        if scored and current.status == JobStatus.QUEUED:
            current = current.with_status(JobStatus.RUNNING)  # records started_at
        return current.with_status(status, reason=reason)

    final = store.update(job.id, end)
    return JobEnd(final.status, final.reason)


def fail_job(store: JobStore, request: FailRequest) -> JobEnd:
    """Mark a job Failed with the request's reason unless it already ended; idempotent."""
    final = store.update(request.job, lambda j: None if j.status in JobStatus.TERMINAL
                         else j.with_status(JobStatus.FAILED, reason=request.reason))
    return JobEnd(final.status, final.reason)


def write_errors_report(store: JobStore, job_id: str, progress: Progress,
                        listing: bool = True) -> int:
    """Write errors.jsonl (one line per failed input, mini-batch order, each mini-batch's
    message and traceback once: failure_records.report_rows); return its lines.

    Only records that agree with the mini-batch's counted ledger line are reported: a
    redelivered copy of a mini-batch that had succeeded may fail for good later (its
    inputs deleted meanwhile) and leave a record, but the output holds that mini-batch's
    rows. Without `listing` the job is known to have no failure records: the report is
    empty. Records are read a few at a time ahead of the writing, and the report is spooled
    to a temporary file, so memory stays bounded whatever the number of failures.
    """
    names = sorted(store.state.list_blob_names(name_starts_with=layout.failures_prefix(job_id))
                   ) if listing else []
    count = 0
    with tempfile.TemporaryFile() as spool, ThreadPoolExecutor(RECORD_READS) as pool:
        window: deque[Future[bytes]] = deque()
        pending = iter(names)
        for name in itertools.islice(pending, RECORD_READS * 2):
            window.append(pool.submit(_read_blob, store, name))
        while window:
            record = json.loads(window.popleft().result())
            following = next(pending, None)
            if following is not None:
                window.append(pool.submit(_read_blob, store, following))
            if (progress.is_succeeded(record["mini_batch"])
                    and record["status"] not in SCORED_STATUSES):
                continue
            for row in report_rows(record):
                spool.write(json.dumps(row).encode() + b"\n")
                count += 1
        spool.seek(0)
        store.state.upload_blob(layout.errors_report(job_id), spool, overwrite=True)
    return count


def _read_blob(store: JobStore, name: str) -> bytes:
    return store.state.download_blob(name).readall()


def merge_output(store: JobStore, job: JobRecord, progress: Progress) -> None:
    """Concatenate the succeeded parts in mini-batch order into the job's output blob."""
    target = job.output_blob
    store.ensure_output_container(target.container)
    blob = store.service.get_blob_client(target.container, target.path)
    if progress.batches_succeeded > ANNOUNCED_MERGE_PARTS:
        # Fail before a long merge; a small one learns it from the create-only upload.
        _refuse_existing(blob, job)
    fmt = job.settings.output_format
    with tempfile.TemporaryFile() as spool:
        parts = parts_in_order(store.state, job.id, progress.batches, progress.is_succeeded)
        if fmt in TEXT_OUTPUT_FORMATS:
            header_written = False
            for part in parts:
                if fmt == "csv" and not header_written and part.data:
                    spool.write(part.header)
                    header_written = True
                spool.write(part.data)
        else:
            writer = None
            for part in parts:
                if not part.data:
                    continue
                table = read_parquet_part(part.data)
                if writer is None:
                    writer = pq.ParquetWriter(spool, table.schema)
                writer.write_table(table.cast(writer.schema) if table.schema != writer.schema
                                   else table)
            if writer is not None:
                writer.close()
        spool.seek(0)
        try:
            blob.upload_blob(spool, overwrite=False, metadata={JOB_METADATA_KEY: job.id},
                             max_concurrency=4)
        except ResourceExistsError:
            _refuse_existing(blob, job)


def _refuse_existing(blob, job: JobRecord) -> None:  # noqa: ANN001 - BlobClient
    try:
        props = blob.get_blob_properties()
    except ResourceNotFoundError:
        return
    if (props.metadata or {}).get(JOB_METADATA_KEY) == job.id:
        return  # our own output from a finalize that crashed before recording it
    raise OutputExists(
        f"output file {job.output_blob.container}/{job.output_blob.path} already exists; "
        "batchfn never overwrites outputs: choose another output_path or output_file_name")
