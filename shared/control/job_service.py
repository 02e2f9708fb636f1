"""The job API's operations: invoke, show, list, cancel, rerun, errors, outputs."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any, Protocol

from azure.core.exceptions import ResourceNotFoundError

from shared.contract import layout
from shared.contract.errors import Conflict, InvalidRequest, NotFound
from shared.contract.job_records import (
    INPUT_FAILED_FILES,
    BlobLocation,
    JobInput,
    JobRecord,
    JobStatus,
    check_job_name,
)
from shared.contract.layout import JOBS_CONTAINER
from shared.contract.registry_records import DeploymentRecord
from shared.contract.timestamps import format_time, parse_time, utc_now
from shared.control.datastores import StorageBoundaries
from shared.control.invoke_request import InvokeRequest, parse_invoke
from shared.control.lifecycle import read_events
from shared.control.progress import Progress
from shared.control.throughput import throughput_view
from shared.control.usage import usage_report
from shared.storage.failure_records import error_rows
from shared.storage.job_store import JobStore

OUTPUT_NAMES = ("score", "errors")
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024  # larger outputs are read from storage directly
JOB_STATUSES = JobStatus.ALL
MAX_LIVE_FAILURE_RECORDS = 100  # mini-batch failure records read for a job still running
MAX_ERROR_ROWS = 1_000_000  # the most rows ?top= may ask for
MAX_LOGS_LISTED = 1000
MAX_LOG_BYTES = 4 * 1024 * 1024  # a longer log is served from its end
# The names under a job's logs/ folder (layout.attempt_log, layout.succeeded_log).
_LOG_NAME = re.compile(r"(?P<index>\d{8})/attempt-(?P<attempt>\d{1,6})\.log"
                       r"|succeeded-[A-Za-z0-9-]{1,120}\.log")


class DeploymentResolver(Protocol):
    def resolve_deployment(self, endpoint: str, name: str | None) -> DeploymentRecord: ...


class JobService:
    """Job operations over a JobStore and the registry (anything with resolve_deployment);
    `boundaries` says where jobs may read and write (the app settings' by default)."""

    def __init__(self, store: JobStore, registry: DeploymentResolver,
                 boundaries: StorageBoundaries | None = None) -> None:
        self.store = store
        self.registry = registry
        self.boundaries = boundaries or StorageBoundaries.from_settings()

    # --- invoke --------------------------------------------------------------------------

    def invoke(self, endpoint: str, body: Any, header_deployment: str | None = None, *,
               drop_folder: BlobLocation | None = None) -> tuple[JobRecord, bool]:
        """Validate and record a job; (job, created). Same name + other request → Conflict.

        `drop_folder` (blob drop only, never from a request) lets the job read that folder
        and write under its `_output/`.
        """
        request = parse_invoke(endpoint, body, header_deployment)
        return self.submit(self.prepare(request, drop_folder=drop_folder))

    def prepare(self, request: InvokeRequest, *, rerun_of: str | None = None,
                job_input: JobInput | None = None,
                drop_folder: BlobLocation | None = None) -> JobRecord:
        """Resolve deployment, settings, input and output; nothing is written."""
        deployment = self.registry.resolve_deployment(request.endpoint, request.deployment)
        settings = deployment.settings.with_overrides(request.overrides, per_job=True)
        account_url = self.store.service.url
        if job_input is None:
            location = self.boundaries.resolve_input(request.input_uri, account_url,
                                                     drop_folder=drop_folder)
            if request.input_type == "uri_file" and not location.path:
                raise InvalidRequest("a uri_file input must name a file, not a container",
                                     details={"field": "input"}, code="invalid_location")
            job_input = JobInput(request.input_type, location, request.input_uri,
                                 request.include_subfolders)
        job_id = request.job_name or f"batchjob-{uuid.uuid4().hex[:16]}"
        output = (self.boundaries.resolve_output(request.output_path, account_url, job_id=job_id,
                                                 drop_folder=drop_folder)
                  if request.output_path else BlobLocation(JOBS_CONTAINER, job_id))
        digest = _digest({
            "endpoint": request.endpoint, "deployment": deployment.name,
            "input": job_input.to_dict(), "output": output.to_dict(),
            "overrides": settings.to_dict(), "rerun_of": rerun_of,
        })
        now = utc_now()
        deadline_at = None
        if settings.deadline is not None:
            deadline_at = format_time(parse_time(now) + timedelta(seconds=settings.deadline))
        return JobRecord(
            id=job_id, endpoint=request.endpoint, deployment=deployment.name,
            deployment_record=deployment.to_dict(), input=job_input, output=output,
            settings=settings, request_digest=digest, created_at=now, updated_at=now,
            rerun_of=rerun_of, overrides=dict(request.overrides), deadline_at=deadline_at,
        )

    def submit(self, job: JobRecord) -> tuple[JobRecord, bool]:
        stored, created = self.store.create(job)
        if not created and stored.request_digest != job.request_digest:
            raise Conflict(
                f"job {job.id!r} exists with a different request; job names are idempotency "
                "keys: use a new name for a new job",
                details={"job": job.id, "status": stored.status}, code="job_exists")
        return stored, created

    # --- reading -------------------------------------------------------------------------

    def show(self, job_id: str) -> dict[str, Any]:
        """The job with live progress, rate, ETA and error summary."""
        job = self.store.get(job_id)
        raw = self.store.read_json(layout.progress(job_id))
        view = job_view(job)
        if raw is not None:
            view["progress"] = Progress.from_dict(raw).view()
        else:
            view["progress"] = None
        return view

    def list(self, endpoint: str | None = None, deployment: str | None = None,
             status: str | None = None) -> list[dict]:
        """Job summaries, newest first, of one endpoint, deployment or status if given."""
        if status is not None and status not in JOB_STATUSES:
            raise InvalidRequest(f"unknown job status {status!r}; statuses: "
                                 + ", ".join(JOB_STATUSES),
                                 details={"parameter": "status"}, code="invalid_parameter")
        rows = self.store.list(endpoint, deployment)
        return [row for row in rows if row["status"] == status] if status else rows

    def errors(self, job_id: str, top: int | None = None) -> list[dict[str, Any]]:
        """The per-file errors report (its first `top` rows), written when the job ends;
        while it runs, the rows of the failure records so far (of the first
        MAX_LIVE_FAILURE_RECORDS mini-batches)."""
        if top is not None and not 0 < top <= MAX_ERROR_ROWS:
            raise InvalidRequest(f"top must be a number of rows from 1 to {MAX_ERROR_ROWS}",
                                 details={"parameter": "top"}, code="invalid_parameter")
        job = self.store.get(job_id)
        try:
            report = self.store.state.download_blob(layout.errors_report(job_id))
        except ResourceNotFoundError:
            rows = [] if job.status in JobStatus.TERMINAL else self._live_errors(job_id, top)
            return rows[:top]
        rows = []
        pending = b""
        # Chunk by chunk: asking for the first rows stops early in a large report.
        for chunk in report.chunks():
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            rows.extend(json.loads(line) for line in lines if line.strip())
            if top is not None and len(rows) >= top:
                return rows[:top]
        if pending.strip():
            rows.append(json.loads(pending))
        return rows[:top]

    def _live_errors(self, job_id: str, top: int | None) -> list[dict[str, Any]]:
        state = self.store.state
        rows: list[dict[str, Any]] = []
        names = state.list_blob_names(name_starts_with=layout.failures_prefix(job_id))
        for count, name in enumerate(names):
            if count >= MAX_LIVE_FAILURE_RECORDS or (top is not None and len(rows) >= top):
                break
            try:
                record = json.loads(state.download_blob(name).readall())
            except ResourceNotFoundError:
                continue
            rows.extend(error_rows(record))
        return rows

    def throughput(self, job_id: str) -> dict[str, Any]:
        """Inputs succeeded and failed over time (a bounded series; see throughput.py)."""
        self.store.get(job_id)
        raw = self.store.read_json(layout.progress(job_id))
        if raw is None:
            return throughput_view("", None, 0, [])
        progress = Progress.from_dict(raw)
        return throughput_view(progress.planned_at, progress.first_completed_at, progress.files,
                               progress.history, progress.unit)

    def usage(self, job_id: str) -> dict[str, Any]:
        """The job's usage and cost report: final once the job ended, so far while it runs."""
        job = self.store.get(job_id)
        if job.status in JobStatus.TERMINAL:
            stored = self.store.read_json(layout.usage_report(job_id))
            if stored is not None:
                return stored
        raw = self.store.read_json(layout.progress(job_id))
        return usage_report(job, None if raw is None else Progress.from_dict(raw))

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's lifecycle events so far, oldest first, as CloudEvents."""
        self.store.get(job_id)
        return [event.to_dict() for event in read_events(self.store, job_id)]

    def logs(self, job_id: str) -> dict[str, Any]:
        """The job's attempt logs: each failed attempt's, then the succeeded attempts' logs."""
        self.store.get(job_id)
        prefix = layout.logs_prefix(job_id)
        entries = []
        truncated = False
        for blob in self.store.state.list_blobs(name_starts_with=prefix):
            name = blob.name[len(prefix):]
            found = _LOG_NAME.fullmatch(name)
            if found is None:
                continue
            if len(entries) >= MAX_LOGS_LISTED:
                truncated = True
                break
            failed = found.group("index") is not None
            entries.append({
                "name": name,
                "kind": "failed_attempt" if failed else "succeeded_attempts",
                "mini_batch": int(found.group("index")) if failed else None,
                "attempt": int(found.group("attempt")) if failed else None,
                "size": blob.size,
                "last_modified": format_time(blob.last_modified) if blob.last_modified else None,
            })
        entries.sort(key=lambda e: (e["mini_batch"] is None, e["mini_batch"] or 0,
                                    e["attempt"] or 0, e["name"]))
        return {"value": entries, "truncated": truncated}

    def log(self, job_id: str, name: str, tail: int = MAX_LOG_BYTES) -> tuple[str, bytes, int]:
        """(file name, content, full size) of one attempt log: its last `tail` bytes."""
        self.store.get(job_id)
        if _LOG_NAME.fullmatch(name) is None:
            raise NotFound(f"job {job_id!r} has no log {name!r}", code="log_not_found")
        if not 0 < tail <= MAX_LOG_BYTES:
            raise InvalidRequest(f"tail must be 1 to {MAX_LOG_BYTES} bytes",
                                 details={"parameter": "tail"}, code="invalid_parameter")
        blob = self.store.state.get_blob_client(layout.logs_prefix(job_id) + name)
        try:
            size = blob.get_blob_properties().size
            offset = max(0, size - tail)
            content = blob.download_blob(offset=offset, length=size - offset).readall() \
                if size else b""
        except ResourceNotFoundError:
            raise NotFound(f"job {job_id!r} has no log {name!r}", code="log_not_found") from None
        return f"{job_id}-{name.replace('/', '-')}", content, size

    def output(self, job_id: str, name: str) -> tuple[str, bytes]:
        """(file name, content) of a named output: `score` (merged file) or `errors`."""
        job = self.store.get(job_id)
        if name not in OUTPUT_NAMES:
            raise NotFound(f"job {job_id!r} has no output {name!r}; outputs: "
                           + ", ".join(OUTPUT_NAMES), code="output_not_found")
        if name == "errors":
            blob = self.store.state.get_blob_client(layout.errors_report(job_id))
            file_name = "errors.jsonl"
        else:
            target = job.output_blob
            blob = self.store.service.get_blob_client(target.container, target.path)
            file_name = job.settings.output_file_name
        try:
            props = blob.get_blob_properties()
            if props.size > MAX_DOWNLOAD_BYTES:
                raise InvalidRequest(
                    f"output {name!r} is {props.size} bytes; download it from "
                    f"{blob.url} with storage tools", code="output_too_large")
            return file_name, blob.download_blob().readall()
        except ResourceNotFoundError:
            raise NotFound(f"output {name!r} of job {job_id!r} does not exist (job status "
                           f"{job.status})", code="output_not_found") from None

    # --- control -------------------------------------------------------------------------

    def cancel(self, job_id: str) -> JobRecord:
        """Ask a job to stop: CancelRequested until the orchestrator marks it Canceled."""
        def request_cancel(job: JobRecord) -> JobRecord | None:
            if job.status in JobStatus.TERMINAL or job.status == JobStatus.CANCEL_REQUESTED:
                return None
            return job.with_status(JobStatus.CANCEL_REQUESTED)
        return self.store.update(job_id, request_cancel)

    def rerun(self, job_id: str, *, failed_only: bool, name: str | None = None) -> tuple[
            JobRecord, bool]:
        """A new job over the same input (or, failed_only, the files that failed)."""
        old = self.store.get(job_id)
        if name is not None:
            check_job_name(name)
        request = InvokeRequest(endpoint=old.endpoint, input_uri=old.input.uri,
                                input_type=old.input.kind, deployment=old.deployment,
                                job_name=name, overrides=dict(old.overrides))
        job_input = old.input
        if failed_only:
            if old.status not in JobStatus.TERMINAL:
                raise Conflict(f"job {job_id!r} is {old.status}; rerun --failed-only needs a "
                               "finished job", code="job_not_finished")
            if not self.errors(job_id):
                raise InvalidRequest(f"job {job_id!r} has no failed files to rerun",
                                     code="nothing_to_rerun")
            job_input = JobInput(INPUT_FAILED_FILES, old.input.location,
                                 f"failed files of job {job_id}", source_job=job_id)
        job = self.prepare(request, rerun_of=job_id, job_input=job_input)
        # The old deployment may have changed: a rerun pins what the old job used.
        job = replace(job, deployment_record=old.deployment_record)
        return self.submit(job)


def job_view(job: JobRecord) -> dict[str, Any]:
    """The public JSON of a job record (without the pinned deployment snapshot)."""
    body = job.to_dict()
    body.pop("deployment_record")
    body.pop("request_digest")
    body.pop("events")  # which lifecycle events are logged: bookkeeping
    body["status_url"] = f"/api/jobs/{job.id}"
    return body


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
