"""Jobs HTTP API: invoke, show, list, cancel, rerun, errors report, throughput, usage,
lifecycle events, attempt logs, output downloads, and the datastores jobs may use."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func

from functions.http_edge import (
    MAX_QUERY_VALUE,
    api_errors,
    attachment,
    error_response,
    internal_error,
    json_response,
    query_flag,
    query_int,
    query_text,
    read_json,
)
from functions.openapi import name_schema, operation, path_param, query_param
from functions.orchestration import ORCHESTRATOR, ensure_orchestration
from shared.contract import settings
from shared.contract.errors import BatchfnError, InvalidRequest
from shared.contract.job_records import JOB_NAME_PATTERN, JobRecord, JobStatus
from shared.contract.lifecycle_events import EVENT_TYPES
from shared.contract.names import MAX_RELATIVE_PATH, RESOURCE_NAME_PATTERN, check_resource_name
from shared.control.context import job_service, job_store, scoring_queue
from shared.control.datastores import MAX_URI_LENGTH
from shared.control.error_pages import DEFAULT_ERROR_PAGE_ROWS, MAX_ERROR_ROWS
from shared.control.input_uploads import MAX_FILES as MAX_UPLOAD_FILES
from shared.control.input_uploads import grant_input_upload
from shared.control.job_service import (
    DEFAULT_JOB_PAGE,
    JOB_STATUSES,
    MAX_JOB_PAGE,
    MAX_LOG_BYTES,
    OUTPUT_NAMES,
    job_view,
)
from shared.control.pages import MAX_TOKEN_CHARS, TOKEN_PATTERN
from shared.control.planner import start_state

bp = df.Blueprint()

DEPLOYMENT_HEADER = "azureml-model-deployment"
MAX_INVOKE_BODY = 64 * 1024
MAX_UPLOAD_REQUEST = 16 * 1024 * 1024  # a local input's file list

AsyncHandler = Callable[[func.HttpRequest, df.DurableOrchestrationClient],
                        Awaitable[func.HttpResponse]]


def _async_api_errors(handler: AsyncHandler) -> AsyncHandler:
    """api_errors for the async handlers that take a durable client."""

    @functools.wraps(handler)
    async def wrapper(req: func.HttpRequest,
                      client: df.DurableOrchestrationClient) -> func.HttpResponse:
        try:
            return await handler(req, client)
        except BatchfnError as exc:
            return error_response(exc)
        except Exception:
            return internal_error(req)

    return wrapper


async def _accepted(req: func.HttpRequest, client: df.DurableOrchestrationClient,
                    job: JobRecord, created: bool) -> func.HttpResponse:
    if created:
        # A small job is planned here, sparing its orchestration a planning activity.
        state = await asyncio.to_thread(start_state, job_store(), scoring_queue(), job.id)
        # A new job id: no instance can exist, so skip the status round trip.
        await client.start_new(ORCHESTRATOR, instance_id=job.id, client_input=state.to_dict())
    elif job.status == JobStatus.NOT_STARTED:
        # A retried idempotent invoke also (re)starts an orchestration that never began.
        await ensure_orchestration(client, job.id)
    parts = urlsplit(req.url)
    location = f"{parts.scheme}://{parts.netloc}/api/jobs/{job.id}"
    body = job_view(job)
    body["status_url"] = location
    return json_response(body, status=202 if created else 200, headers={"Location": location})


@bp.route(route="endpoints/{endpoint}/jobs", methods=["POST"])
@bp.durable_client_input(client_name="client")
@_async_api_errors
async def invoke_endpoint(req: func.HttpRequest,
                          client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Invoke an endpoint: record the job, start its orchestration, answer 202 at once."""
    body = read_json(req, max_bytes=MAX_INVOKE_BODY)
    # Storage calls block: off the event loop, which serves every other function meanwhile.
    job, created = await asyncio.to_thread(job_service().invoke, req.route_params["endpoint"],
                                           body, req.headers.get(DEPLOYMENT_HEADER))
    return await _accepted(req, client, job, created)


@bp.route(route="jobs/{job}/rerun", methods=["POST"])
@bp.durable_client_input(client_name="client")
@_async_api_errors
async def rerun_job(req: func.HttpRequest,
                    client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """A new job over the same input, or (failed_only) over the files that failed."""
    body = read_json(req, max_bytes=MAX_INVOKE_BODY) if (req.get_body() or b"").strip() else {}
    unknown = sorted(set(body) - {"failed_only", "name"})
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}", code="invalid_body")
    failed_only = body.get("failed_only", False)
    if not isinstance(failed_only, bool):
        raise InvalidRequest("failed_only must be true or false", code="invalid_body")
    job, created = job_service().rerun(req.route_params["job"], failed_only=failed_only,
                                       name=body.get("name"))
    return await _accepted(req, client, job, created)


@bp.route(route="jobs", methods=["GET"])
@api_errors
def list_jobs(req: func.HttpRequest) -> func.HttpResponse:
    """Jobs, newest first, a page at a time (?top=, ?continuation=); ?endpoint=,
    ?deployment= and ?status= filter."""
    page = job_service().list(query_text(req, "endpoint"), query_text(req, "deployment"),
                              query_text(req, "status"), **_paging(req, MAX_JOB_PAGE))
    return json_response(page.to_dict())


@bp.route(route="endpoints/{endpoint}/deployments/{deployment}/jobs", methods=["GET"])
@api_errors
def list_deployment_jobs(req: func.HttpRequest) -> func.HttpResponse:
    """The jobs of one deployment, newest first, a page at a time."""
    endpoint = check_resource_name("endpoint", req.route_params["endpoint"])
    deployment = check_resource_name("deployment", req.route_params["deployment"])
    page = job_service().list(endpoint, deployment, **_paging(req, MAX_JOB_PAGE))
    return json_response(page.to_dict())


def _paging(req: func.HttpRequest, max_top: int) -> dict[str, Any]:
    """?top= and ?continuation= of a paged listing."""
    return {"top": query_int(req, "top", minimum=1, maximum=max_top),
            "continuation": query_text(req, "continuation", max_chars=MAX_TOKEN_CHARS)}


@bp.route(route="jobs/{job}", methods=["GET"])
@api_errors
def show_job(req: func.HttpRequest) -> func.HttpResponse:
    """Status, progress (files and mini-batches), rate, ETA, output and error summary."""
    return json_response(job_service().show(req.route_params["job"]))


@bp.route(route="jobs/{job}/cancel", methods=["POST"])
@api_errors
def cancel_job(req: func.HttpRequest) -> func.HttpResponse:
    """Request cancellation; the job turns Canceled once the orchestrator has stopped it."""
    return json_response(job_view(job_service().cancel(req.route_params["job"])), status=202)


@bp.route(route="jobs/{job}/errors", methods=["GET"])
@api_errors
def job_errors(req: func.HttpRequest) -> func.HttpResponse:
    """The per-file errors report: file, mini-batch, attempts, error, the traceback's frames
    from the user's code, a page at a time (?top= rows, ?continuation= from the previous
    page). While the job runs: the failures so far."""
    page = job_service().errors(req.route_params["job"], **_paging(req, MAX_ERROR_ROWS))
    return json_response(page.to_dict())


@bp.route(route="jobs/{job}/throughput", methods=["GET"])
@api_errors
def job_throughput(req: func.HttpRequest) -> func.HttpResponse:
    """Files succeeded and failed over time, for a throughput chart (live or after the end)."""
    return json_response(job_service().throughput(req.route_params["job"]))


@bp.route(route="jobs/{job}/usage", methods=["GET"])
@api_errors
def job_usage(req: func.HttpRequest) -> func.HttpResponse:
    """What the job used and an estimate of its cost (so far, while it runs)."""
    return json_response(job_service().usage(req.route_params["job"]))


@bp.route(route="jobs/{job}/events", methods=["GET"])
@api_errors
def job_events(req: func.HttpRequest) -> func.HttpResponse:
    """The job's lifecycle events so far, oldest first, as CloudEvents 1.0."""
    return json_response({"value": job_service().events(req.route_params["job"])})


@bp.route(route="jobs/{job}/logs/{*name}", methods=["GET"])
@api_errors
def job_logs(req: func.HttpRequest) -> func.HttpResponse:
    """Without a name, the list of attempt logs; with one, that log (its end: ?tail=BYTES)."""
    job, name = req.route_params["job"], req.route_params.get("name") or ""
    if not name:
        return json_response(job_service().logs(job))
    tail = query_int(req, "tail", minimum=1, maximum=MAX_LOG_BYTES)
    file_name, content, size = job_service().log(job, name,
                                                 MAX_LOG_BYTES if tail is None else tail)
    return func.HttpResponse(content, status_code=200, mimetype="text/plain", charset="utf-8",
                             headers={"Content-Disposition": attachment(file_name),
                                      "X-Content-Type-Options": "nosniff",
                                      "X-Log-Size": str(size)})


@bp.route(route="jobs/{job}/outputs/{name}", methods=["GET"])
@api_errors
def job_output(req: func.HttpRequest) -> func.HttpResponse:
    """Download a named output: `score` (the merged file) or `errors` (errors.jsonl)."""
    query_flag(req, "download")  # accepted for symmetry with Azure ML; always downloads
    file_name, content = job_service().output(req.route_params["job"], req.route_params["name"])
    return func.HttpResponse(content, status_code=200, mimetype="application/octet-stream",
                             headers={"Content-Disposition": attachment(file_name),
                                      "X-Content-Type-Options": "nosniff"})


@bp.route(route="jobs/{job}/outputs/{name}/files/{*path}", methods=["GET"])
@api_errors
def job_output_files(req: func.HttpRequest) -> func.HttpResponse:
    """Without a path, the files of a named output folder (`score`: the merged file and
    every file the script wrote to AZUREML_BI_OUTPUT_PATH); with one, that file."""
    job, name = req.route_params["job"], req.route_params["name"]
    path = req.route_params.get("path") or ""
    if not path:
        return json_response(job_service().output_files(job, name))
    file_name, content = job_service().output_file(job, name, path)
    return func.HttpResponse(content, status_code=200, mimetype="application/octet-stream",
                             headers={"Content-Disposition": attachment(file_name),
                                      "X-Content-Type-Options": "nosniff"})


@bp.route(route="data/uploads", methods=["POST"])
@api_errors
def grant_data_upload(req: func.HttpRequest) -> func.HttpResponse:
    """Write URLs for a local input's files, and the datastore URI to invoke with."""
    body = read_json(req, max_bytes=MAX_UPLOAD_REQUEST)
    return json_response(grant_input_upload(job_service().store.service, body))


@bp.route(route="datastores", methods=["GET"])
@api_errors
def list_datastores(req: func.HttpRequest) -> func.HttpResponse:
    """The datastores jobs read from and write to, and where else outputs may go."""
    service = job_service()
    return json_response(service.boundaries.describe(service.store.service.url))


_RESOURCE_NAME = name_schema(RESOURCE_NAME_PATTERN, 32)
_JOB_NAME = name_schema(JOB_NAME_PATTERN, 100)
_JOB = path_param("job", "Job name", _JOB_NAME)
_ENDPOINT = path_param("endpoint", "Endpoint name", _RESOURCE_NAME)
_DEPLOYMENT = path_param("deployment", "Deployment name", _RESOURCE_NAME)
_LOCATION = {"type": "string", "minLength": 1, "maxLength": MAX_URI_LENGTH,
             "description": "a storage URL of the app's account, azureml://datastores/<name>/"
                            "paths/<path> (GET /api/datastores), or a data asset: "
                            "azureml:<name>@latest or azureml:<name>:<version>"}
_SETTINGS = "#/components/schemas/Settings"  # declared by control_api
_OUTPUT_NAME = path_param("name", "score or errors",
                          {"type": "string", "enum": list(OUTPUT_NAMES)})


def _schema(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, **extra}


def _integer(minimum: int, maximum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


OPENAPI_SCHEMAS: dict[str, Any] = {
    "InvokeRequest": _schema({
        "input": {"oneOf": [_LOCATION, _schema({
            "uri": _LOCATION, "type": {"enum": ["uri_folder", "uri_file"]},
            "include_subfolders": {"type": "boolean"}}, additionalProperties=False)]},
        "input_type": {"enum": ["uri_folder", "uri_file"]},
        "include_subfolders": {"type": "boolean"},
        "deployment_name": _RESOURCE_NAME,
        "name": {**_JOB_NAME, "description": "job name; makes invoke idempotent"},
        "output_path": _LOCATION,
        "settings": {"$ref": _SETTINGS},
        "mini_batch_size": _integer(1, settings.MAX_MINI_BATCH_SIZE),
        "instance_count": _integer(1, settings.MAX_INSTANCE_COUNT),
        "max_retries": _integer(0, settings.MAX_RETRIES),
        "timeout": {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                    "maximum": settings.MAX_TIMEOUT_SECONDS},
        "error_threshold": _integer(-1, settings.MAX_ERROR_THRESHOLD),
        "output_file_name": {"type": "string", "minLength": 1,
                             "maxLength": settings.MAX_FILE_NAME},
        "output_format": {"enum": list(settings.OUTPUT_FORMATS)},
        "deadline": settings.DEADLINE_SCHEMA,
        "properties": {"type": "object", "description": "Azure ML REST body (InputData, "
                                                        "OutputData)"},
    }),
    "UploadRequest": _schema({
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_RELATIVE_PATH},
        "files": {"type": "array", "minItems": 1, "maxItems": MAX_UPLOAD_FILES,
                  "items": {"type": "string", "minLength": 1, "maxLength": MAX_RELATIVE_PATH}}},
        required=["name", "files"], additionalProperties=False),
    "RerunRequest": _schema({"failed_only": {"type": "boolean"}, "name": _JOB_NAME},
                            additionalProperties=False),
    "Job": _schema({"name": {"type": "string"}, "status": {"enum": list(JOB_STATUSES)},
                    "progress": {"type": "object", "nullable": True},
                    "deadline_at": {"type": "string", "nullable": True},
                    "partial": {"type": "boolean", "description": "the merged output holds "
                                "only the mini-batches scored before a cancel or deadline"},
                    "status_url": {"type": "string"}}),
    "JobUsage": _schema({
        "name": {"type": "string"}, "status": {"enum": list(JOB_STATUSES)},
        "final": {"type": "boolean", "description": "false while the job runs"},
        "wall_seconds": {"type": "number", "nullable": True},
        "queue_wait_seconds": {"type": "number", "nullable": True},
        "scoring_seconds": {"type": "number"},
        "gpu_seconds": _schema({"total": {"type": "number"},
                                "by_device": {"type": "object"}}),
        "inputs": {"type": "object"}, "input_bytes": {"type": "integer"},
        "rows_written": {"type": "integer"}, "attempts": {"type": "integer"},
        "retries": {"type": "integer"},
        "backups": {"type": "integer", "nullable": True},
        "storage_operations": {"type": "array", "items": _schema({
            "kind": {"type": "string"}, "class": {"enum": ["read", "write", "list", "queue"]},
            "count": {"type": "integer"}, "counted": {"enum": ["counted", "estimated"]},
            "how": {"type": "string"}})},
        "cost": _schema({"currency": {"type": "string"}, "prices_as_of": {"type": "string"},
                         "list_prices": {"type": "boolean"}, "items": {"type": "object"},
                         "total": {"type": "number"}})}),
    "CloudEvent": _schema({
        "specversion": {"enum": ["1.0"]}, "id": {"type": "string"},
        "source": {"type": "string"}, "type": {"enum": list(EVENT_TYPES)},
        "subject": {"type": "string"}, "time": {"type": "string"},
        "datacontenttype": {"enum": ["application/json"]}, "data": {"type": "object"}}),
    "Datastores": _schema({
        "value": {"type": "array", "items": _schema({
            "name": {"type": "string"}, "container": {"type": "string"},
            "default": {"type": "boolean"}, "uri": {"type": "string"},
            "url": {"type": "string"}})},
        "inputs": {"type": "string"}, "outputs": {"type": "object"}}),
}

_JOB_REF = {"$ref": "#/components/schemas/Job"}
_LIST = {"type": "object", "properties": {"value": {"type": "array", "items": {
    "type": "object"}}}}
_FILTER = {"type": "string", "maxLength": MAX_QUERY_VALUE}
_PAGE = {"type": "object", "properties": {
    "value": {"type": "array", "items": {"type": "object"}},
    "continuation": {"type": "string", "description": "pass as ?continuation= for the next "
                                                      "page; absent on the last page"}}}
_JOBS_TOP = query_param("top", f"at most this many jobs in this page (default "
                              f"{DEFAULT_JOB_PAGE})", _integer(1, MAX_JOB_PAGE))
_CONTINUATION = query_param("continuation", "the token of the previous page (opaque)",
                            {"type": "string", "minLength": 1, "maxLength": MAX_TOKEN_CHARS,
                             "pattern": f"^{TOKEN_PATTERN}$"})

OPENAPI_PATHS: dict[str, Any] = {
    "/endpoints/{endpoint}/jobs": {
        "post": operation(
            "Invoke an endpoint (starts a batch job)", "invokeEndpoint",
            parameters=[_ENDPOINT, {"name": DEPLOYMENT_HEADER, "in": "header", "required": False,
                                    "schema": _RESOURCE_NAME}],
            body="InvokeRequest", responses={202: "Job accepted", 200: "Existing job (same name)"},
            result=_JOB_REF, errors=(400, 404, 409, 413)),
    },
    "/jobs": {"get": operation("List jobs, newest first, a page at a time", "listJobs",
                               responses={200: "A page of jobs"}, result=_PAGE,
                               parameters=[query_param("endpoint", "Filter by endpoint",
                                                       _FILTER),
                                           query_param("deployment", "Filter by deployment",
                                                       _FILTER),
                                           query_param("status", "Filter by status",
                                                       {"enum": list(JOB_STATUSES)}),
                                           _JOBS_TOP, _CONTINUATION],
                               errors=(400,))},
    "/endpoints/{endpoint}/deployments/{deployment}/jobs": {
        "get": operation("List a deployment's jobs, newest first, a page at a time",
                         "listDeploymentJobs",
                         parameters=[_ENDPOINT, _DEPLOYMENT, _JOBS_TOP, _CONTINUATION],
                         responses={200: "A page of jobs"}, result=_PAGE, errors=(400,))},
    "/jobs/{job}": {"get": operation("Show a job with progress", "getJob", parameters=[_JOB],
                                     responses={200: "The job"}, result=_JOB_REF)},
    "/jobs/{job}/cancel": {"post": operation("Cancel a job", "cancelJob", parameters=[_JOB],
                                             responses={202: "Cancel requested"},
                                             result=_JOB_REF, errors=(400, 404, 409))},
    "/jobs/{job}/rerun": {"post": operation(
        "Rerun a job (all files, or failed_only)", "rerunJob", parameters=[_JOB],
        body="RerunRequest", body_required=False, responses={202: "New job accepted",
                                                             200: "Existing job (same name)"},
        result=_JOB_REF, errors=(400, 404, 409, 413))},
    "/jobs/{job}/errors": {"get": operation(
        "Per-file errors report, a page at a time (while the job runs: the failures so far)",
        "getJobErrors",
        parameters=[_JOB, query_param("top", f"at most this many rows in this page (default "
                                             f"{DEFAULT_ERROR_PAGE_ROWS})",
                                      _integer(1, MAX_ERROR_ROWS)), _CONTINUATION],
        responses={200: "A page of errors"}, result=_PAGE)},
    "/jobs/{job}/throughput": {"get": operation(
        "Files succeeded and failed over time", "getJobThroughput", parameters=[_JOB],
        responses={200: "Samples"}, result=_schema({
            "planned_at": {"type": "string"}, "first_completed_at": {"type": "string"},
            "files": {"type": "integer"},
            "samples": {"type": "array", "items": _schema({
                "at": {"type": "string"}, "files_succeeded": {"type": "integer"},
                "files_failed": {"type": "integer"}})}}))},
    "/jobs/{job}/usage": {"get": operation(
        "Usage and estimated cost: time, scoring and GPU seconds, inputs, rows, storage "
        "operations, retries (so far while the job runs)", "getJobUsage", parameters=[_JOB],
        responses={200: "Usage"}, result={"$ref": "#/components/schemas/JobUsage"})},
    "/jobs/{job}/events": {"get": operation(
        "The job's lifecycle events so far (CloudEvents 1.0), oldest first", "listJobEvents",
        parameters=[_JOB], responses={200: "Events"}, result=_schema({
            "value": {"type": "array", "items": {"$ref": "#/components/schemas/CloudEvent"}}}))},
    "/jobs/{job}/logs": {"get": operation(
        "List attempt logs (failed attempts, succeeded attempts' output)", "listJobLogs",
        parameters=[_JOB], responses={200: "Logs"}, result=_LIST)},
    "/jobs/{job}/logs/{name}": {"get": operation(
        "One attempt log as text (its end when long)", "getJobLog",
        parameters=[_JOB, path_param("name", "a name from the list, e.g. "
                                             "00000003/attempt-1.log",
                                     {"type": "string", "maxLength": 256}),
                    query_param("tail", f"bytes from the log's end (at most {MAX_LOG_BYTES})",
                                _integer(1, MAX_LOG_BYTES))],
        responses={200: "The log (text/plain)"})},
    "/data/uploads": {"post": operation(
        "Grant write URLs for a local input (CLI/client uploads)", "grantDataUpload",
        body="UploadRequest", responses={200: "Grant with uri and per-file urls"},
        result={"type": "object"}, errors=(400, 413))},
    "/jobs/{job}/outputs/{name}": {"get": operation(
        "Download a named output's file (score: the merged file; errors: errors.jsonl)",
        "getJobOutput",
        parameters=[_JOB, _OUTPUT_NAME,
                    query_param("download", "accepted for Azure ML's sake; always downloads",
                                {"type": "boolean"})],
        responses={200: "The file"})},
    "/jobs/{job}/outputs/{name}/files": {"get": operation(
        "The files of a named output folder: score holds the merged file and every file the "
        "scoring script wrote to AZUREML_BI_OUTPUT_PATH", "listJobOutputFiles",
        parameters=[_JOB, _OUTPUT_NAME], responses={200: "Files"},
        result=_schema({"value": {"type": "array", "items": _schema({
            "path": {"type": "string"}, "size": {"type": "integer"},
            "main": {"type": "boolean", "description": "the merged file (errors.jsonl)"}})},
            "truncated": {"type": "boolean"}}))},
    "/jobs/{job}/outputs/{name}/files/{path}": {"get": operation(
        "Download one file of a named output folder", "getJobOutputFile",
        parameters=[_JOB, _OUTPUT_NAME,
                    path_param("path", "a path from the listing, e.g. part-0001.parquet",
                               {"type": "string", "maxLength": MAX_RELATIVE_PATH})],
        responses={200: "The file"})},
    "/datastores": {"get": operation(
        "The datastores jobs read from and write to, and where else outputs may go",
        "listDatastores", responses={200: "Datastores"},
        result={"$ref": "#/components/schemas/Datastores"}, errors=())},
}
