"""The job API's operations: invoke, show, list, cancel, rerun, errors, outputs."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any, Protocol

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.contract import layout
from shared.contract.asset_spec import data_reference
from shared.contract.errors import Conflict, InvalidRequest, NotFound
from shared.contract.job_records import (
    INPUT_FAILED_FILES,
    INPUT_FOLDER,
    BlobLocation,
    JobCompute,
    JobInput,
    JobRecord,
    JobStatus,
    check_job_name,
)
from shared.contract.layout import JOB_METADATA_KEY, JOBS_CONTAINER
from shared.contract.names import check_relative_path
from shared.contract.registry_records import AssetVersion, DeploymentRecord
from shared.contract.timestamps import format_time, parse_time, utc_now
from shared.control.datastores import StorageBoundaries
from shared.control.error_pages import MAX_ERROR_ROWS, errors_page
from shared.control.invoke_request import InvokeRequest, parse_invoke
from shared.control.lifecycle import read_events
from shared.control.pages import Page, bad_token, make_token, read_token
from shared.control.progress import Progress
from shared.control.throughput import throughput_view
from shared.control.usage import usage_report
from shared.storage.job_store import JobStore

OUTPUT_NAMES = ("score", "errors")
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024  # larger outputs are read from storage directly
MAX_OUTPUT_FILES = 10_000  # files of a `score` output folder a listing shows
MAX_OUTPUT_BLOBS_SCANNED = 100_000  # blobs of a shared output folder looked at for them
JOB_STATUSES = JobStatus.ALL
MAX_LOGS_LISTED = 1000
DEFAULT_JOB_PAGE = 100  # jobs in a page of `job list` unless ?top= says otherwise
MAX_JOB_PAGE = 1000
_JOBS_TOKEN = "jobs"
MAX_LOG_BYTES = 4 * 1024 * 1024  # a longer log is served from its end
# The names under a job's logs/ folder (layout.attempt_log, layout.succeeded_log).
_LOG_NAME = re.compile(r"(?P<index>\d{8})/attempt-(?P<attempt>\d{1,6})\.log"
                       r"|succeeded-[A-Za-z0-9-]{1,120}\.log")


class RegistryView(Protocol):
    """What invoke reads of the registry."""

    def resolve_deployment(self, endpoint: str, name: str | None) -> DeploymentRecord: ...

    def resolve_data(self, name: str, version: str) -> AssetVersion: ...

    def job_compute(self, name: str) -> JobCompute: ...


class JobService:
    """Job operations over a JobStore and the registry (RegistryView); `boundaries` says
    where jobs may read and write (the app settings' by default)."""

    def __init__(self, store: JobStore, registry: RegistryView,
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
            job_input = self._resolve_input(request, account_url, drop_folder)
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
            compute=self.registry.job_compute(deployment.compute),
        )

    def _resolve_input(self, request: InvokeRequest, account_url: str,
                       drop_folder: BlobLocation | None) -> JobInput:
        """Where the input is: a location jobs may read, reached through an input alias or
        a data asset (the version it resolves to now) where the request names one."""
        target = self.boundaries.unalias(request.input_uri) or request.input_uri
        kind, asset = request.input_type, None
        reference = data_reference(target)
        if reference is not None:
            found = self.registry.resolve_data(*reference)
            if kind is not None and kind != found.type:
                raise InvalidRequest(
                    f"input type {kind} does not match data asset {found.name}:"
                    f"{found.version}, a {found.type}: give --input-type {found.type} (or none)",
                    details={"field": "input_type"}, code="invalid_input_type")
            target, kind, asset = found.path, found.type, f"azureml:{found.name}:{found.version}"
        kind = kind or INPUT_FOLDER
        location = self.boundaries.resolve_input(target, account_url, drop_folder=drop_folder)
        if kind == "uri_file" and not location.path:
            raise InvalidRequest("a uri_file input must name a file, not a container",
                                 details={"field": "input"}, code="invalid_location")
        return JobInput(kind, location, request.input_uri, request.include_subfolders,
                        data_asset=asset)

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
             status: str | None = None, *, top: int | None = None,
             continuation: str | None = None) -> Page:
        """A page of job summaries, newest first, of one endpoint, deployment or status if
        given: at most `top` (DEFAULT_JOB_PAGE when None), and a token for the next page."""
        if status is not None and status not in JOB_STATUSES:
            raise InvalidRequest(f"unknown job status {status!r}; statuses: "
                                 + ", ".join(JOB_STATUSES),
                                 details={"parameter": "status"}, code="invalid_parameter")
        if top is not None and not 0 < top <= MAX_JOB_PAGE:
            raise InvalidRequest(f"top must be a number of jobs from 1 to {MAX_JOB_PAGE}",
                                 details={"parameter": "top"}, code="invalid_parameter")
        _, at = read_token(continuation, {_JOBS_TOKEN: {"marker": str, "after": str}}) or (
            _JOBS_TOKEN, {"marker": "", "after": ""})
        try:
            rows, following = self.store.list_page(
                top=top or DEFAULT_JOB_PAGE, marker=at["marker"], after=at["after"],
                endpoint=endpoint, deployment=deployment, status=status)
        except HttpResponseError as exc:
            if continuation is not None and exc.status_code == 400:
                raise bad_token() from None  # storage refused the marker inside it
            raise
        token = None if following is None else make_token(
            _JOBS_TOKEN, marker=following.marker, after=following.after)
        return Page(rows, token)

    def errors(self, job_id: str, top: int | None = None,
               continuation: str | None = None) -> Page:
        """A page of the per-file errors report (error_pages.py): at most `top` rows, and a
        token for the next page; while the job runs, the failures recorded so far."""
        if top is not None and not 0 < top <= MAX_ERROR_ROWS:
            raise InvalidRequest(f"top must be a number of rows from 1 to {MAX_ERROR_ROWS}",
                                 details={"parameter": "top"}, code="invalid_parameter")
        job = self.store.get(job_id)
        return errors_page(self.store.state, job_id, job.status in JobStatus.TERMINAL, top,
                           continuation)

    def _has_errors_report(self, job_id: str) -> bool:
        """Whether the job's errors report lists anything (one properties read: the
        rerun's planner streams the report itself)."""
        blob = self.store.state.get_blob_client(layout.errors_report(job_id))
        try:
            return blob.get_blob_properties().size > 0
        except ResourceNotFoundError:
            return False

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
        """(file name, content) of a named output's file: `score` (the merged file) or
        `errors` (errors.jsonl)."""
        job = self._job_with_output(job_id, name)
        if name == "errors":
            blob = self.store.state.get_blob_client(layout.errors_report(job_id))
            file_name = "errors.jsonl"
        else:
            target = job.output_blob
            blob = self.store.service.get_blob_client(target.container, target.path)
            file_name = job.settings.output_file_name
        return file_name, self._download(blob, job, f"output {name!r}")

    def output_files(self, job_id: str, name: str) -> dict[str, Any]:
        """The files of a named output, as Azure ML's `score` output folder holds them:
        the merged file where there is one (`main`) and every file the scoring script wrote
        to AZUREML_BI_OUTPUT_PATH (`errors`: errors.jsonl). Paths are relative to the
        folder."""
        job = self._job_with_output(job_id, name)
        if name == "errors":
            blob = self.store.state.get_blob_client(layout.errors_report(job_id))
            try:
                size = blob.get_blob_properties().size
            except ResourceNotFoundError:
                return {"value": [], "truncated": False}
            return {"value": [{"path": "errors.jsonl", "size": size, "main": True}],
                    "truncated": False}
        container = self.store.service.get_container_client(job.output.container)
        prefix = job.output.folder_prefix
        # The job's own folder of the jobs container holds only its outputs; a folder other
        # jobs may share (a datastore path) shows the blobs this job wrote, by their metadata.
        own_folder = job.output == BlobLocation(JOBS_CONTAINER, job.id)
        merged = job.output_blob.path if job.settings.output_action == "append_row" else None
        files: list[dict[str, Any]] = []
        truncated = False
        try:
            listed = container.list_blobs(name_starts_with=prefix,
                                          include=None if own_folder else ["metadata"])
            for scanned, blob in enumerate(listed):
                if scanned >= MAX_OUTPUT_BLOBS_SCANNED or len(files) >= MAX_OUTPUT_FILES:
                    truncated = True
                    break
                if own_folder or (blob.metadata or {}).get(JOB_METADATA_KEY) == job.id:
                    files.append({"path": blob.name[len(prefix):], "size": blob.size,
                                  "main": blob.name == merged})
        except ResourceNotFoundError:
            pass  # the container is not there yet: nothing was written
        return {"value": files, "truncated": truncated}

    def output_file(self, job_id: str, name: str, path: str) -> tuple[str, bytes]:
        """(file name, content) of one file of a named output folder (output_files)."""
        check_relative_path(path)
        listed = self.output_files(job_id, name)["value"]
        if not any(entry["path"] == path for entry in listed):
            raise NotFound(f"output {name!r} of job {job_id!r} has no file {path!r}",
                           details={"path": path}, code="output_not_found")
        job = self.store.get(job_id)
        if name == "errors":
            blob = self.store.state.get_blob_client(layout.errors_report(job_id))
        else:
            blob = self.store.service.get_blob_client(job.output.container,
                                                      job.output.child(path).path)
        return path.rpartition("/")[2], self._download(blob, job, f"{path!r}")

    def _job_with_output(self, job_id: str, name: str) -> JobRecord:
        job = self.store.get(job_id)
        if name not in OUTPUT_NAMES:
            raise NotFound(f"job {job_id!r} has no output {name!r}; outputs: "
                           + ", ".join(OUTPUT_NAMES), code="output_not_found")
        return job

    @staticmethod
    def _download(blob: Any, job: JobRecord, what: str) -> bytes:
        try:
            props = blob.get_blob_properties()
            if props.size > MAX_DOWNLOAD_BYTES:
                raise InvalidRequest(
                    f"{what} is {props.size} bytes; download it from {blob.url} with "
                    "storage tools", code="output_too_large")
            return blob.download_blob().readall()
        except ResourceNotFoundError:
            raise NotFound(f"{what} of job {job.id!r} does not exist (job status "
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
            if not self._has_errors_report(job_id):
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
