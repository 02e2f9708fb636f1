"""Blob drop: a `_start` marker dropped into the drop container starts a job, and batchfn
answers beside the marker.

Rule: `batchfn-drop/<endpoint>/<folder>/_start` starts a job on `<endpoint>`'s default
deployment over the files directly in `batchfn-drop/<endpoint>/<folder>/` (the marker and
the feedback files are never inputs). The marker may be empty or hold a JSON object of
invoke options (deployment_name, settings, output_path, include_subfolders and the setting
shorthands), at most `MAX_MARKER_BYTES`. Its `input` may name a registered data asset
(`azureml:<name>@latest` or `azureml:<name>:<version>`) to score instead of the folder's
files; no other input: a drop reaches no location the folder does not hold. The job name
is derived from the marker's name and ETag, so the same drop starts one job however often
the trigger fires, and re-uploading the marker starts a new one.

Answers, beside the marker: `_job.json` (job name, endpoint, deployment, status route,
output location) when a job starts, `_error.json` (`{"error": {"code", "message"}}`) when
the drop is refused, which then starts nothing. The output goes to
`<folder>/_output/<output_file_name>` unless the marker names an `output_path` (a datastore,
or a folder under that `_output/`). Such a job may read its drop folder and write under its
`_output/`; no other job may touch the drop container. None of these files is a marker,
nor is anything under an `_output/` folder, so none fires the drop again.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient, ContentSettings

from shared.contract.asset_spec import data_reference
from shared.contract.errors import BatchfnError, InvalidRequest, PayloadTooLarge
from shared.contract.job_records import BlobLocation, JobRecord
from shared.contract.json_input import parse_json_object
from shared.contract.layout import (
    DROP_CONTAINER,
    DROP_MARKER,
    ERROR_FEEDBACK,
    JOB_FEEDBACK,
    OUTPUT_FOLDER,
)
from shared.contract.names import shown

if TYPE_CHECKING:
    from shared.control.job_service import JobService

MAX_MARKER_BYTES = 64 * 1024
_OPTION_KEYS = frozenset({"deployment_name", "settings", "output_path", "include_subfolders",
                          "mini_batch_size", "instance_count", "max_retries", "timeout",
                          "error_threshold", "output_file_name", "output_format", "input",
                          "input_type", "deadline"})
_JSON = ContentSettings(content_type="application/json")


@dataclass(frozen=True)
class DropOutcome:
    """What a marker did: the job it started (`created` False: it existed) or the refusal."""

    marker: str
    job: JobRecord | None = None
    created: bool = False
    error: BatchfnError | None = None


def is_marker(blob_name: str) -> bool:
    """True for a blob named `_start`, unless it is inside an `_output/` folder: what a job
    writes there (its output may be named anything) never starts another job."""
    parts = blob_name.split("/")
    return parts[-1] == DROP_MARKER and OUTPUT_FOLDER not in parts[:-1]


def is_drop_control_file(container: str, relative_path: str) -> bool:
    """True for a file blob drop reads or writes beside a job's inputs (never an input).

    `relative_path` is relative to the input folder. The marker is skipped in any folder;
    the feedback files and the `_output/` folder only in the drop container.
    """
    name = posixpath.basename(relative_path)
    if name == DROP_MARKER:
        return True
    if container != DROP_CONTAINER:
        return False
    return name in (JOB_FEEDBACK, ERROR_FEEDBACK) or relative_path.startswith(
        OUTPUT_FOLDER + "/")


def drop_job_name(blob_name: str, etag: str) -> str:
    """The job name of one upload of a marker (same name + ETag: same job)."""
    return "drop-" + hashlib.sha256(f"{blob_name}\n{etag}".encode()).hexdigest()[:20]


def process_marker(service: JobService, marker: BlobClient) -> DropOutcome | None:
    """Read a dropped marker, start its job or refuse it, and answer beside it.

    None when the blob is not a marker or is gone or replaced since the event. Storage
    failures propagate, so the trigger tries again; the job name keeps that idempotent.
    """
    name = marker.blob_name
    if not is_marker(name):
        return None
    container = service.store.service.get_container_client(DROP_CONTAINER)
    try:
        try:
            content, etag = read_marker(marker)
        except (ResourceNotFoundError, ResourceModifiedError):
            return None  # deleted, or replaced by a newer drop that has its own event
        job, created = start_from_marker(service, name, etag, content)
    except BatchfnError as exc:
        _answer(container, name, ERROR_FEEDBACK, exc.to_dict(), replaces=JOB_FEEDBACK)
        return DropOutcome(marker=name, error=exc)
    body = job_feedback(job, service.store.service.url, name, etag)
    _answer(container, name, JOB_FEEDBACK, body, replaces=ERROR_FEEDBACK)
    return DropOutcome(marker=name, job=job, created=created)


def read_marker(marker: BlobClient) -> tuple[bytes, str]:
    """(content, ETag) of a marker; PayloadTooLarge above MAX_MARKER_BYTES.

    The size is checked before anything is read, and the content read is the version the
    ETag names: a marker replaced meanwhile raises ResourceModifiedError (its own event
    starts the newer drop).
    """
    properties = marker.get_blob_properties()
    if properties.size > MAX_MARKER_BYTES:
        raise PayloadTooLarge(
            f"the {DROP_MARKER} marker is {properties.size} bytes; a marker holds at most "
            f"{MAX_MARKER_BYTES} bytes of JSON options (or nothing)", code="marker_too_large")
    if properties.size == 0:
        return b"", properties.etag
    content = marker.download_blob(etag=properties.etag,
                                   match_condition=MatchConditions.IfNotModified).readall()
    return content[:MAX_MARKER_BYTES], properties.etag


def start_from_marker(service: JobService, blob_name: str, etag: str,
                      content: bytes) -> tuple[JobRecord, bool]:
    """Create the job the marker `<endpoint>/<folder>/_start` asks for; (job, created)."""
    parts = blob_name.split("/")
    if len(parts) < 3:
        raise InvalidRequest(
            f"{DROP_CONTAINER}/{blob_name}: a marker starts a job only in a folder of an "
            f"endpoint: {DROP_CONTAINER}/<endpoint>/<folder>/{DROP_MARKER}",
            details={"marker": blob_name}, code="invalid_marker_location")
    endpoint, folder = parts[0], posixpath.dirname(blob_name)
    options = _options(content)
    drop_url = f"{service.store.service.url.rstrip('/')}/{DROP_CONTAINER}/{folder}"
    body = {"output_path": f"{drop_url}/{OUTPUT_FOLDER}", "input": drop_url, **options,
            "name": drop_job_name(blob_name, etag)}
    # The one job that may read this folder of the drop container and write beside it.
    return service.invoke(endpoint, body, drop_folder=BlobLocation(DROP_CONTAINER, folder))


def job_feedback(job: JobRecord, account_url: str, marker: str, etag: str) -> dict[str, Any]:
    """What `_job.json` says about the job a marker started."""
    output = job.output_blob
    return {
        "name": job.id,
        "endpoint": job.endpoint,
        "deployment": job.deployment,
        "status": job.status,
        "status_url": f"/api/jobs/{job.id}",
        "output": {"container": output.container, "path": output.path,
                   "url": f"{account_url.rstrip('/')}/{output.container}/{output.path}"},
        "marker": {"name": marker, "etag": etag},
        "created_at": job.created_at,
    }


def _answer(container: ContainerClient, marker: str, name: str, body: dict[str, Any], *,
            replaces: str) -> None:
    # One answer per folder: the latest marker's. An answer of the other kind is stale.
    folder = posixpath.dirname(marker)
    prefix = f"{folder}/" if folder else ""
    container.upload_blob(prefix + name, json.dumps(body, indent=2).encode(), overwrite=True,
                          content_settings=_JSON)
    try:
        container.delete_blob(prefix + replaces)
    except ResourceNotFoundError:
        pass


def _options(content: bytes) -> dict[str, Any]:
    if not content.strip():
        return {}
    try:
        options = parse_json_object(content, what=f"the {DROP_MARKER} marker")
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, code="invalid_marker") from None
    unknown = sorted(set(options) - _OPTION_KEYS)
    if unknown:
        raise InvalidRequest(f"unknown option(s) in {DROP_MARKER}: {', '.join(unknown)}",
                             details={"allowed": sorted(_OPTION_KEYS)}, code="invalid_marker")
    data = options.get("input")
    if data is not None and (not isinstance(data, str) or data_reference(data) is None):
        raise InvalidRequest(
            f"{DROP_MARKER}: input {shown(data)} must name a data asset (azureml:<name>@latest "
            "or azureml:<name>:<version>); without it the job scores the folder's files",
            details={"field": "input"}, code="invalid_marker")
    return options
