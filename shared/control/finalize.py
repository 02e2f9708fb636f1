"""Finalize: the errors report, then the merged output in input order, create-only.

Parts are read from the ledgers shard by shard (storage/parts.py) and streamed into a temporary
file, so memory stays flat whatever the number of parts; the upload refuses to replace an
existing blob (If-None-Match: *), so a job never overwrites an output.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pyarrow.parquet as pq
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.contract import layout
from shared.contract.job_records import JobRecord, JobStatus
from shared.contract.layout import JOB_METADATA_KEY
from shared.contract.settings import TEXT_OUTPUT_FORMATS
from shared.contract.timestamps import utc_now
from shared.control.event_sinks import EventSink, default_sink
from shared.control.lifecycle import record_events
from shared.control.monitor import Outcome, evaluate
from shared.control.orchestrator import FailRequest, JobEnd, PublishResult, StepResult
from shared.control.progress import Progress
from shared.control.recovery import RecoverySettings
from shared.control.usage import usage_report
from shared.storage.failure_records import SCORED_STATUSES, report_rows
from shared.storage.job_store import JobStore
from shared.storage.parts import parts_in_order, read_parquet_part

# A merge of more parts than this shows Finalizing and checks the output before it starts.
ANNOUNCED_MERGE_PARTS = 16
PARTIAL_METADATA_KEY = "batchfn_partial"  # "true" on the output of a canceled or expired job
NOT_STARTED = "not_started"  # errors report status of the inputs of unstarted mini-batches
NOT_STARTED_CANCELED = "not started: the job was canceled first"
NOT_STARTED_EXPIRED = "not started: the job's deadline passed first"
RECORD_READS = 8  # failure records read at once while the errors report is written

log = logging.getLogger("batchfn.finalize")


def advance_job(store: JobStore, job_id: str, *,
                recovery: tuple[QueueClient, RecoverySettings] | None = None,
                events: EventSink | None = None) -> StepResult:
    """One orchestrator step: fold new completions into progress (re-sending stalled and
    slow mini-batches with `recovery`, see monitor.evaluate) and, when that check says so,
    finalize in the same call (one activity round trip instead of two); then record the
    lifecycle events the job's state calls for and deliver them to `events` (the app's sink
    by default)."""
    check = evaluate(store, job_id, recovery=recovery)
    sink = events or default_sink(store.account)
    if not check.outcome.ends_job:
        pending = record_events(store, sink, check.job, check.progress)
        return StepResult(ended=False, done=check.done, total=check.total,
                          near_end=check.near_end, events_pending=pending)
    job, progress = _finalize(store, check.job, check.progress, check.outcome)
    usage = ensure_usage_report(store, job, progress)
    pending = record_events(store, sink, job, progress, usage)
    done = progress.batches_done if progress is not None else 0
    total = progress.batches if progress is not None else 0
    return StepResult(ended=True, done=done, total=total, status=job.status,
                      reason=job.reason, events_pending=pending)


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
              outcome: Outcome) -> tuple[JobRecord, Progress | None]:
    """End the job as `outcome` says: errors report, merged output (a partial one for a
    canceled or expired job with scored mini-batches), final status."""
    if job.status in JobStatus.TERMINAL or outcome is Outcome.STOPPED:
        return job, progress or _stored_progress(store, job.id)
    progress = progress or _stored_progress(store, job.id)
    planned = progress is not None
    progress = progress or Progress.start(0, 0)
    canceled = outcome is Outcome.CANCELED or (
        job.status == JobStatus.CANCEL_REQUESTED and outcome is not Outcome.THRESHOLD)
    if planned and (canceled or outcome is Outcome.EXPIRED):
        progress.stop_rest()  # what has not been recorded now is left out
        store.write_json(layout.progress(job.id), progress.to_dict())
    expired = not canceled and progress.batches_not_started > 0
    # A stopped job's output holds what was scored: none is written when nothing was.
    merges = (job.settings.output_action == "append_row"
              and outcome not in (Outcome.THRESHOLD, Outcome.SCRIPT_FAILED)
              and (not (canceled or expired) or progress.batches_succeeded > 0))
    if merges and progress.batches_succeeded > ANNOUNCED_MERGE_PARTS:
        # A merge that takes a while shows Finalizing meanwhile (a small one is done sooner
        # than a client could see it).
        job = store.update(job.id, lambda j: None if j.status in JobStatus.STOPPED
                           else j.with_status(JobStatus.FINALIZING))
    not_started = (NOT_STARTED_CANCELED if canceled else NOT_STARTED_EXPIRED) \
        if progress.batches_not_started else None
    # Every failure record counts failed files: a job without any has nothing to list.
    write_errors_report(store, job.id, progress,
                        listing=outcome is not Outcome.COMPLETED or progress.files_failed > 0,
                        not_started=not_started)
    status, reason = JobStatus.COMPLETED, None
    if canceled:
        status, reason = JobStatus.CANCELED, "canceled by request"
    elif outcome is Outcome.SCRIPT_FAILED:
        status, reason = JobStatus.FAILED, script_failure_reason(job)
    elif outcome is Outcome.THRESHOLD:
        status = JobStatus.FAILED
        reason = (f"error_threshold {job.settings.error_threshold} exceeded: "
                  f"{progress.files_failed} {progress.unit} failed; remaining mini-batches "
                  "were dropped")
    elif expired:
        status = JobStatus.EXPIRED
        reason = (f"the deadline ({job.deadline_at}) passed: {progress.files_not_started} of "
                  f"{progress.files} {progress.unit} were not scored (errors report: "
                  "not_started)")
    partial = status != JobStatus.COMPLETED
    if merges:
        try:
            merge_output(store, job, progress, partial=partial)
        except OutputExists as exc:
            if status == JobStatus.COMPLETED:
                status, reason = JobStatus.FAILED, str(exc)
            else:
                reason = f"{reason}; the scored part was not merged: {exc}"
            merges = False
    scored = progress.batches_succeeded + progress.batches_failed > 0
    started = progress.usage.first_started_at

    def end(current: JobRecord) -> JobRecord | None:
        if current.status in JobStatus.TERMINAL:
            return None
        if scored and not current.started_at:
            current = replace(current, started_at=started or utc_now())
        return replace(current.with_status(status, reason=reason),
                       partial=merges and partial)

    return store.update(job.id, end), progress


def _stored_progress(store: JobStore, job_id: str) -> Progress | None:
    raw = store.read_json(layout.progress(job_id))
    return None if raw is None else Progress.from_dict(raw)


def ensure_usage_report(store: JobStore, job: JobRecord,
                        progress: Progress | None) -> dict[str, Any] | None:
    """The ended job's usage report (usage.json), written the first time it is asked for;
    None while the job has not ended."""
    if job.status not in JobStatus.TERMINAL:
        return None
    report = store.read_json(layout.usage_report(job.id))
    if report is None:
        report = usage_report(job, progress)
        store.write_json(layout.usage_report(job.id), report)
    return report


def fail_job(store: JobStore, request: FailRequest, events: EventSink | None = None) -> JobEnd:
    """Mark a job Failed with the request's reason unless it already ended; idempotent."""
    final = store.update(request.job, lambda j: None if j.status in JobStatus.TERMINAL
                         else j.with_status(JobStatus.FAILED, reason=request.reason))
    progress = _stored_progress(store, final.id)
    usage = ensure_usage_report(store, final, progress)
    pending = record_events(store, events or default_sink(store.account), final, progress,
                            usage)
    return JobEnd(final.status, final.reason, pending)


def publish_job_events(store: JobStore, job_id: str,
                       events: EventSink | None = None) -> PublishResult:
    """Record and deliver the ended job's lifecycle events that earlier tries could not
    (never raises)."""
    try:
        job = store.get(job_id)
        progress = _stored_progress(store, job_id)
        usage = ensure_usage_report(store, job, progress)
    except Exception as exc:  # noqa: BLE001 - storage trouble: the orchestrator tries again
        log.warning("job %s: pending lifecycle events not delivered (%s)", job_id, exc)
        return PublishResult(pending=True)
    return PublishResult(pending=record_events(store, events or default_sink(store.account),
                                               job, progress, usage))


def write_errors_report(store: JobStore, job_id: str, progress: Progress,
                        listing: bool = True, not_started: str | None = None) -> int:
    """Write errors.jsonl (one line per failed input, mini-batch order, each mini-batch's
    message and traceback once: failure_records.report_rows); return its lines.

    With `not_started` (the reason), the inputs of every mini-batch neither scored nor
    failed follow, status `not_started`, read from the manifests chunk by chunk.

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
        if not_started:
            for row in _not_started_rows(store, job_id, progress, not_started):
                spool.write(json.dumps(row).encode() + b"\n")
                count += 1
        spool.seek(0)
        store.state.upload_blob(layout.errors_report(job_id), spool, overwrite=True)
    return count


def _read_blob(store: JobStore, name: str) -> bytes:
    return store.state.download_blob(name).readall()


def _not_started_rows(store: JobStore, job_id: str, progress: Progress,
                      reason: str) -> Iterator[dict[str, Any]]:
    """Errors report rows for the inputs of the mini-batches that never started."""
    plan = store.read_json(layout.plan(job_id)) or {}
    for number in range(int(plan.get("chunks") or 0)):
        chunk = store.read_manifest(job_id, number)
        for offset, batch in enumerate(chunk.batches):
            index = chunk.first_index + offset
            if not batch.files or not progress.is_unscored(index):
                continue
            inputs = [(p.file, p.first_row, p.rows) for p in batch.pieces] if batch.pieces \
                else [(file, None, 1) for file in batch.files]
            for file, row, rows in inputs:
                yield {"file": file.display_name, "container": file.container,
                       "blob_name": file.blob_name, "row": row, "rows": rows,
                       "mini_batch": index, "attempts": 0, "status": NOT_STARTED,
                       "error": reason, "traceback": None}


def merge_output(store: JobStore, job: JobRecord, progress: Progress, *,
                 partial: bool = False) -> None:
    """Concatenate the succeeded parts in mini-batch order into the job's output blob
    (`partial`: the job stopped before every mini-batch was scored, which the blob's
    metadata says)."""
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
            metadata = {JOB_METADATA_KEY: job.id}
            if partial:
                metadata[PARTIAL_METADATA_KEY] = "true"
            blob.upload_blob(spool, overwrite=False, metadata=metadata, max_concurrency=4)
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
