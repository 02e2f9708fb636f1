"""Blob drop: a `_start` marker dropped into the drop container starts a job.

Rule: `batchfn-drop/<endpoint>/<folder>/_start` starts a job on `<endpoint>`'s default
deployment over the files directly in `batchfn-drop/<endpoint>/<folder>/` (the marker itself
is never an input). The marker may be empty or hold a JSON object of invoke options
(deployment_name, settings, output_path, include_subfolders and the setting shorthands).
The job name is derived from the marker's name and ETag, so the same drop starts one job
however often the trigger fires, and re-uploading the marker starts a new one.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any

from shared.errors import InvalidRequest
from shared.jobs.model import JobRecord
from shared.jobs.planner import DROP_MARKER
from shared.jobs.service import JobService

DROP_CONTAINER = "batchfn-drop"
_OPTION_KEYS = frozenset({"deployment_name", "settings", "output_path", "include_subfolders",
                          "mini_batch_size", "instance_count", "max_retries", "timeout",
                          "error_threshold", "output_file_name", "output_format"})


def is_marker(blob_name: str) -> bool:
    """True for `<endpoint>/<folder>/_start` (a folder at least one level deep)."""
    parts = blob_name.split("/")
    return len(parts) >= 3 and parts[-1] == DROP_MARKER


def drop_job_name(blob_name: str, etag: str) -> str:
    return "drop-" + hashlib.sha256(f"{blob_name}\n{etag}".encode()).hexdigest()[:20]


def start_from_marker(service: JobService, blob_name: str, etag: str,
                      content: bytes) -> tuple[JobRecord, bool] | None:
    """Create the job a marker asks for; None when `blob_name` is not a marker."""
    if not is_marker(blob_name):
        return None
    endpoint = blob_name.split("/", 1)[0]
    folder = posixpath.dirname(blob_name)
    options = _options(content)
    body = {**options, "name": drop_job_name(blob_name, etag),
            "input": service.store.service.url.rstrip("/") + f"/{DROP_CONTAINER}/{folder}"}
    return service.invoke(endpoint, body)


def _options(content: bytes) -> dict[str, Any]:
    if not content.strip():
        return {}
    try:
        options = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the {DROP_MARKER} marker is not JSON: {exc}",
                             code="invalid_marker") from None
    if not isinstance(options, dict):
        raise InvalidRequest(f"the {DROP_MARKER} marker must hold a JSON object",
                             code="invalid_marker")
    unknown = sorted(set(options) - _OPTION_KEYS)
    if unknown:
        raise InvalidRequest(f"unknown option(s) in {DROP_MARKER}: {', '.join(unknown)}",
                             code="invalid_marker")
    return options
