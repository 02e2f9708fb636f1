"""Invoke requests: the native JSON body and Azure ML's REST body, parsed and checked.

Native body (every key optional except `input`):
  {"input": "<url or azureml path>" | {"uri": ..., "type": "uri_folder"|"uri_file",
   "include_subfolders": bool}, "input_type": ..., "include_subfolders": bool,
   "deployment_name": "d", "name": "<job name>", "output_path": "<url or azureml path>",
   "settings": {<per-job settings, nested or dotted>}, plus the shorthands mini_batch_size,
   instance_count, max_retries, timeout, error_threshold, output_file_name, output_format,
   deadline}
Azure ML body: {"properties": {"InputData": {"<name>": {"JobInputType": "UriFolder",
   "Uri": "..."}}, "OutputData": {"<name>": {"JobOutputType": "UriFolder", "Uri": "..."}}}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.contract.errors import InvalidRequest
from shared.contract.job_records import INPUT_FILE, INPUT_FOLDER, check_job_name
from shared.contract.names import check_resource_name

# Shorthand keys of the native body and the setting each one sets.
SHORTHANDS = {
    "mini_batch_size": "mini_batch_size",
    "instance_count": "instance_count",
    "max_retries": "retry_settings.max_retries",
    "timeout": "retry_settings.timeout",
    "error_threshold": "error_threshold",
    "output_file_name": "output_file_name",
    "output_format": "output_format",
    "deadline": "deadline",
}
_NATIVE_KEYS = frozenset({"input", "input_type", "include_subfolders", "deployment_name", "name",
                          "output_path", "settings"}) | frozenset(SHORTHANDS)
_INPUT_TYPES = {"uri_folder": INPUT_FOLDER, "urifolder": INPUT_FOLDER,
                "uri_file": INPUT_FILE, "urifile": INPUT_FILE}


@dataclass(frozen=True)
class InvokeRequest:
    """What an invoke asks for, before anything is resolved against storage or registry."""

    endpoint: str
    input_uri: str
    input_type: str | None = None  # None: not given (a folder, or a data asset's own type)
    include_subfolders: bool = False
    deployment: str | None = None
    job_name: str | None = None
    output_path: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def parse_invoke(endpoint: str, body: Any, header_deployment: str | None = None) -> InvokeRequest:
    """Parse an invoke body (native or Azure ML REST) plus the deployment header."""
    check_resource_name("endpoint", endpoint)
    if not isinstance(body, dict):
        raise InvalidRequest("the invoke body must be a JSON object", code="invalid_body")
    if "properties" in body:
        request = _parse_azureml(endpoint, body)
    else:
        request = _parse_native(endpoint, body)
    if header_deployment:
        check_resource_name("deployment", header_deployment)
        if request.deployment and request.deployment != header_deployment:
            raise InvalidRequest(
                f"the azureml-model-deployment header ({header_deployment!r}) and the body's "
                f"deployment_name ({request.deployment!r}) disagree", code="invalid_body")
        request = InvokeRequest(**{**request.__dict__, "deployment": header_deployment})
    return request


def _parse_native(endpoint: str, body: dict[str, Any]) -> InvokeRequest:
    unknown = sorted(set(body) - _NATIVE_KEYS)
    if unknown:
        raise InvalidRequest(f"unknown field(s) in invoke body: {', '.join(unknown)}",
                             details={"allowed": sorted(_NATIVE_KEYS)}, code="invalid_body")
    raw_input = body.get("input")
    input_type = body.get("input_type")
    include_subfolders = body.get("include_subfolders", False)
    if isinstance(raw_input, dict):
        extra = sorted(set(raw_input) - {"uri", "path", "type", "include_subfolders"})
        if extra:
            raise InvalidRequest(f"unknown field(s) in input: {', '.join(extra)}",
                                 code="invalid_body")
        input_type = raw_input.get("type", input_type)
        include_subfolders = raw_input.get("include_subfolders", include_subfolders)
        raw_input = raw_input.get("uri", raw_input.get("path"))
    if not isinstance(raw_input, str) or not raw_input.strip():
        raise InvalidRequest("input is required: a storage URL, an azureml://datastores/... "
                             "path or a data asset (azureml:<name>@latest)",
                             details={"field": "input"}, code="invalid_body")
    if not isinstance(include_subfolders, bool):
        raise InvalidRequest("include_subfolders must be true or false", code="invalid_body")
    overrides = body.get("settings") or {}
    if not isinstance(overrides, dict):
        raise InvalidRequest("settings must be an object", code="invalid_body")
    overrides = dict(overrides)
    for key, setting in SHORTHANDS.items():
        if key in body:
            overrides[setting] = body[key]
    output_path = body.get("output_path")
    if output_path is not None and not isinstance(output_path, str):
        raise InvalidRequest("output_path must be a string", code="invalid_body")
    return InvokeRequest(
        endpoint=endpoint,
        input_uri=raw_input.strip(),
        input_type=_input_type(input_type),
        include_subfolders=include_subfolders,
        deployment=_optional_deployment(body.get("deployment_name")),
        job_name=check_job_name(body["name"]) if body.get("name") is not None else None,
        output_path=output_path,
        overrides=overrides,
    )


def _parse_azureml(endpoint: str, body: dict[str, Any]) -> InvokeRequest:
    props = body.get("properties")
    if not isinstance(props, dict):
        raise InvalidRequest("properties must be an object", code="invalid_body")
    inputs = props.get("InputData")
    if not isinstance(inputs, dict) or len(inputs) != 1:
        raise InvalidRequest("properties.InputData must hold exactly one input",
                             code="invalid_body")
    (spec,) = inputs.values()
    if not isinstance(spec, dict) or not isinstance(spec.get("Uri"), str):
        raise InvalidRequest("properties.InputData.<name> needs JobInputType and Uri",
                             code="invalid_body")
    output_path = None
    overrides: dict[str, Any] = {}
    outputs = props.get("OutputData") or {}
    if not isinstance(outputs, dict) or len(outputs) > 1:
        raise InvalidRequest("properties.OutputData must hold at most one output",
                             code="invalid_body")
    for out in outputs.values():
        if not isinstance(out, dict) or not isinstance(out.get("Uri"), str):
            raise InvalidRequest("properties.OutputData.<name> needs JobOutputType and Uri",
                                 code="invalid_body")
        kind = str(out.get("JobOutputType", "UriFolder")).lower().replace("_", "")
        uri = out["Uri"].rstrip("/")
        if kind == "urifile":
            uri, _, file_name = uri.rpartition("/")
            overrides["output_file_name"] = file_name
        elif kind != "urifolder":
            raise InvalidRequest("JobOutputType must be UriFolder or UriFile", code="invalid_body")
        output_path = uri
    return InvokeRequest(
        endpoint=endpoint,
        input_uri=spec["Uri"].strip(),
        input_type=_input_type(spec.get("JobInputType")),
        output_path=output_path,
        overrides=overrides,
    )


def _input_type(value: Any) -> str | None:
    if value is None:
        return None
    kind = _INPUT_TYPES.get(str(value).lower().replace("-", "_"))
    if kind is None:
        raise InvalidRequest(f"input type {value!r} is not supported: use uri_folder or uri_file",
                             details={"field": "input_type", "value": value},
                             code="invalid_body")
    return kind


def _optional_deployment(value: Any) -> str | None:
    return None if value in (None, "") else check_resource_name("deployment", value)
