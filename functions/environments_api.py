"""Environments HTTP API: register, show and list environment versions
(shared/control/environments.py)."""

from __future__ import annotations

from typing import Any

import azure.functions as func

from functions.http_edge import api_errors, json_response, read_json
from functions.openapi import name_schema, operation, path_param
from shared.contract.environment_spec import MAX_REQUIREMENTS, EnvironmentSpec
from shared.contract.names import ASSET_NAME_PATTERN
from shared.control.context import registry as _registry
from shared.control.environments import MAX_VERSION_DIGITS

bp = func.Blueprint()
MAX_ENVIRONMENT_BODY = 512 * 1024  # a conda file and the fields around it


@bp.route(route="environments", methods=["GET"])
@api_errors
def list_environments(req: func.HttpRequest) -> func.HttpResponse:
    """The latest version of every environment."""
    records = _registry().environments.list_latest()
    return json_response({"value": [r.to_dict() for r in records]})


@bp.route(route="environments/{name}/versions", methods=["GET", "POST"])
@api_errors
def environment_versions(req: func.HttpRequest) -> func.HttpResponse:
    """List an environment's versions, or register a spec (resolved first) as its next one."""
    name = req.route_params["name"]
    environments = _registry().environments
    if req.method == "GET":
        return json_response({"value": [r.to_dict() for r in environments.list_versions(name)]})
    spec = EnvironmentSpec.from_document(read_json(req, max_bytes=MAX_ENVIRONMENT_BODY))
    record, created = environments.register(name, spec)
    return json_response(record.to_dict(), status=201 if created else 200)


@bp.route(route="environments/{name}/versions/{version}", methods=["GET"])
@api_errors
def environment_version(req: func.HttpRequest) -> func.HttpResponse:
    """One environment version (`latest` for the newest)."""
    record = _registry().environments.get(req.route_params["name"],
                                          req.route_params["version"])
    return json_response(record.to_dict())


# ----- OpenAPI ---------------------------------------------------------------------------

_REF = "#/components/schemas/"
_NAME = path_param("name", "Environment name", name_schema(ASSET_NAME_PATTERN, 255))
_VERSION = path_param("version", "number or latest",
                      name_schema(rf"(latest|[0-9]{{1,{MAX_VERSION_DIGITS}}})", 9))
_REQUIREMENTS = {"type": "array", "maxItems": MAX_REQUIREMENTS,
                 "items": {"type": "string", "maxLength": 500}}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "EnvironmentSpec": {
        "type": "object",
        "description": "an Azure ML environment: conda_file (a mapping or conda YAML text) "
                       "gives the Python version and pip requirements; image is kept, not "
                       "used",
        "properties": {"name": {"type": "string", "maxLength": 255},
                       "version": {"type": "string", "maxLength": 64},
                       "description": {"type": "string", "maxLength": 8192},
                       "image": {"type": "string", "maxLength": 1024},
                       "conda_file": {"oneOf": [{"type": "object"},
                                                {"type": "string", "maxLength": 262144}]},
                       "tags": {"type": "object"}, "os_type": {"type": "string"}}},
    "Environment": {"type": "object", "properties": {
        "name": {"type": "string"}, "version": {"type": "string"},
        "digest": {"type": "string"}, "python": {"type": "string", "nullable": True},
        "requirements": _REQUIREMENTS, "resolved": _REQUIREMENTS,
        "notes": {"type": "array", "items": {"type": "string"}},
        "image": {"type": "string", "nullable": True}, "created_at": {"type": "string"}}},
}


def _listing() -> dict[str, Any]:
    return {"type": "object", "properties": {"value": {"type": "array",
                                                       "items": {"$ref": _REF + "Environment"}}}}


OPENAPI_PATHS: dict[str, Any] = {
    "/environments": {
        "get": operation("List environments (the latest version of each)", "listEnvironments",
                         responses={200: "Environments"}, result=_listing(), errors=()),
    },
    "/environments/{name}/versions": {
        "get": operation("List an environment's versions", "listEnvironmentVersions",
                         parameters=[_NAME], responses={200: "Versions"}, result=_listing(),
                         errors=(400, 404)),
        "post": operation("Register an environment (resolved with uv first; the existing "
                          "version with identical content is returned)", "createEnvironment",
                          parameters=[_NAME], body="EnvironmentSpec",
                          responses={200: "Existing version", 201: "New version"},
                          result={"$ref": _REF + "Environment"}, errors=(400, 409, 413, 422)),
    },
    "/environments/{name}/versions/{version}": {
        "get": operation("Show an environment version (`latest` for the newest)",
                         "getEnvironmentVersion", parameters=[_NAME, _VERSION],
                         responses={200: "The environment"},
                         result={"$ref": _REF + "Environment"}),
    },
}
