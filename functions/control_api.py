"""Control plane HTTP API: endpoints, deployments and asset uploads (shared/control/registry.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import azure.functions as func

from functions.http_edge import api_errors, json_response, query_flag, read_json
from functions.openapi import name_schema, operation, path_param, query_param
from shared.contract import settings
from shared.contract.asset_manifest import MAX_MANIFEST_FILES, AssetManifest
from shared.contract.deployment_spec import (
    MAX_ENVIRONMENT_BYTES,
    MAX_ENVIRONMENT_VALUE,
    MAX_ENVIRONMENT_VARIABLES,
    MAX_TAG_VALUE,
    MAX_TAGS,
    MAX_TEXT,
    DeploymentSpec,
    EndpointSpec,
    IgnoredField,
)
from shared.contract.errors import InvalidRequest
from shared.contract.names import ASSET_NAME_PATTERN, MAX_RELATIVE_PATH, RESOURCE_NAME_PATTERN
from shared.contract.settings import INPUT_FORMATS, MAX_COLUMN_NAME_CHARS, MAX_PASSTHROUGH_COLUMNS
from shared.control.asset_store import MAX_VERSION_DIGITS
from shared.control.context import registry as _registry

bp = func.Blueprint()

# URL segment -> asset kind; the plural reads naturally in URLs, the singular is accepted too.
_ASSET_KINDS = {"models": "model", "model": "model", "code": "code"}
MAX_MANIFEST_BODY = 32 * 1024 * 1024  # a manifest of MAX_MANIFEST_FILES files fits


def _create_only(req: func.HttpRequest) -> bool:
    # `If-None-Match: *` is HTTP's "create, never replace": the CLI's `create` sends it.
    return req.headers.get("If-None-Match", "").strip() == "*"


def _with_ignored(record: dict[str, Any], ignored: tuple[IgnoredField, ...]) -> dict[str, Any]:
    return {**record, "ignored": [item.to_dict() for item in ignored]} if ignored else record


# ----- endpoints -------------------------------------------------------------------------

@bp.route(route="endpoints", methods=["GET"])
@api_errors
def list_endpoints(req: func.HttpRequest) -> func.HttpResponse:
    """All endpoints."""
    return json_response({"value": [e.to_dict() for e in _registry().list_endpoints()]})


@bp.route(route="endpoints/{endpoint}", methods=["GET", "PUT", "PATCH", "DELETE"])
@api_errors
def endpoint_item(req: func.HttpRequest) -> func.HttpResponse:
    """Show, create/replace (PUT), update (PATCH) or delete one endpoint."""
    name = req.route_params["endpoint"]
    registry = _registry()
    if req.method == "GET":
        return json_response(registry.get_endpoint(name).to_dict())
    if req.method == "DELETE":
        deleted = registry.delete_endpoint(name)
        return json_response({"deleted": {"endpoint": name, "deployments": deleted}})
    body = read_json(req)
    if req.method == "PATCH":
        return json_response(registry.update_endpoint(name, body).to_dict())
    spec = EndpointSpec.from_document(body, name=name)
    if _create_only(req):
        record, created = registry.create_endpoint(spec), True
    else:
        record, created = registry.put_endpoint(spec)
    return json_response(_with_ignored(record.to_dict(), spec.ignored),
                         status=201 if created else 200)


# ----- deployments -----------------------------------------------------------------------

@bp.route(route="endpoints/{endpoint}/deployments", methods=["GET"])
@api_errors
def list_deployments(req: func.HttpRequest) -> func.HttpResponse:
    """All deployments of an endpoint."""
    records = _registry().list_deployments(req.route_params["endpoint"])
    return json_response({"value": [d.to_dict() for d in records]})


@bp.route(route="endpoints/{endpoint}/deployments/{deployment}",
          methods=["GET", "PUT", "PATCH", "DELETE"])
@api_errors
def deployment_item(req: func.HttpRequest) -> func.HttpResponse:
    """Show, create/replace (PUT), update (PATCH) or delete one deployment."""
    endpoint = req.route_params["endpoint"]
    name = req.route_params["deployment"]
    registry = _registry()
    if req.method == "GET":
        return json_response(registry.get_deployment(endpoint, name).to_dict())
    if req.method == "DELETE":
        registry.delete_deployment(endpoint, name, force=query_flag(req, "force"))
        return json_response({"deleted": {"endpoint": endpoint, "deployment": name}})
    body = read_json(req)
    if req.method == "PATCH":
        return json_response(registry.update_deployment(endpoint, name, body).to_dict())
    spec = DeploymentSpec.from_document(body, endpoint_name=endpoint, name=name)
    record, created = registry.create_deployment(
        spec, set_default=query_flag(req, "set_default"), replace_existing=not _create_only(req))
    return json_response(_with_ignored(record.to_dict(), spec.ignored),
                         status=201 if created else 200)


# ----- assets ----------------------------------------------------------------------------

def _asset_kind(req: func.HttpRequest) -> str:
    segment = req.route_params["kind"]
    if segment not in _ASSET_KINDS:
        raise InvalidRequest(f"unknown asset kind {segment!r}: expected models or code",
                             code="invalid_asset_kind")
    return _ASSET_KINDS[segment]


@bp.route(route="assets/{kind}/{name}/uploads", methods=["POST"])
@api_errors
def grant_asset_upload(req: func.HttpRequest) -> func.HttpResponse:
    """An upload grant for a folder's manifest, or the existing version with that content."""
    manifest = AssetManifest.from_dict(read_json(req, max_bytes=MAX_MANIFEST_BODY))
    grant = _registry().assets.grant_upload(_asset_kind(req), req.route_params["name"],
                                            manifest)
    return json_response(grant)


@bp.route(route="assets/{kind}/{name}/versions", methods=["GET", "POST"])
@api_errors
def asset_versions(req: func.HttpRequest) -> func.HttpResponse:
    """List an asset's versions, or register uploaded content as its next version."""
    kind, name = _asset_kind(req), req.route_params["name"]
    assets = _registry().assets
    if req.method == "GET":
        return json_response({"value": [asdict(a) for a in assets.list_versions(kind, name)]})
    body = read_json(req, max_bytes=MAX_MANIFEST_BODY)
    asset, created = assets.register(kind, name, AssetManifest.from_dict(body),
                                     body.get("upload_id"))
    return json_response(asdict(asset), status=201 if created else 200)


@bp.route(route="assets/{kind}/{name}/versions/{version}", methods=["GET"])
@api_errors
def asset_version(req: func.HttpRequest) -> func.HttpResponse:
    """One asset version (`latest` for the newest)."""
    asset = _registry().assets.get(_asset_kind(req), req.route_params["name"],
                                   req.route_params["version"])
    return json_response(asdict(asset))


# ----- OpenAPI ---------------------------------------------------------------------------

_RESOURCE_NAME = name_schema(RESOURCE_NAME_PATTERN, 32)
_ASSET_NAME = name_schema(ASSET_NAME_PATTERN, 255)
_ENDPOINT = path_param("endpoint", "Endpoint name", _RESOURCE_NAME)
_DEPLOYMENT = path_param("deployment", "Deployment name", _RESOURCE_NAME)
_KIND = path_param("kind", "Asset kind", {"type": "string", "enum": sorted(_ASSET_KINDS)})
_ASSET = path_param("name", "Asset name", _ASSET_NAME)
_VERSION = path_param("version", "number or latest",
                      name_schema(rf"(latest|[0-9]{{1,{MAX_VERSION_DIGITS}}})", 9))
_CREATE_ONLY = {"name": "If-None-Match", "in": "header", "required": False,
                "description": "`*`: create only; 409 if the name exists",
                "schema": {"type": "string", "maxLength": 64}}
_REF = "#/components/schemas/"
_TEXT = {"type": "string", "maxLength": MAX_TEXT}
_TAGS = {"type": "object", "maxProperties": MAX_TAGS,
         "additionalProperties": {"type": "string", "maxLength": MAX_TAG_VALUE}}
_ENVIRONMENT = {"type": "object", "maxProperties": MAX_ENVIRONMENT_VARIABLES,
                "description": f"names of letters, digits and _; at most "
                               f"{MAX_ENVIRONMENT_BYTES} bytes in all",
                "additionalProperties": {"type": "string", "maxLength": MAX_ENVIRONMENT_VALUE}}
_ASSET_REFERENCE = {"oneOf": [
    {"type": "string", "maxLength": MAX_TEXT,
     "description": "azureml:<name>:<version> or azureml:<name>@latest"},
    {"type": "object", "properties": {"name": _ASSET_NAME,
                                      "version": {"type": "string", "maxLength": 16},
                                      "type": {"type": "string", "maxLength": 32}}}]}
_IGNORED = {"type": "array", "description": "fields accepted but not used, with the reason",
            "items": {"type": "object", "properties": {"field": {"type": "string"},
                                                       "reason": {"type": "string"}}}}


def _integer(minimum: int, maximum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


_SETTINGS_PROPERTIES: dict[str, Any] = {
    "mini_batch_size": _integer(1, settings.MAX_MINI_BATCH_SIZE),
    "max_concurrency_per_instance": _integer(1, settings.MAX_CONCURRENCY_PER_INSTANCE),
    "instance_count": _integer(1, settings.MAX_INSTANCE_COUNT),
    "retry_settings": {"type": "object", "properties": {
        "max_retries": _integer(0, settings.MAX_RETRIES),
        "timeout": {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                    "maximum": settings.MAX_TIMEOUT_SECONDS}}},
    "error_threshold": _integer(-1, settings.MAX_ERROR_THRESHOLD),
    "output_action": {"type": "string", "enum": list(settings.OUTPUT_ACTIONS)},
    "output_file_name": {"type": "string", "minLength": 1,
                         "maxLength": settings.MAX_FILE_NAME},
    "output_format": {"type": "string", "enum": list(settings.OUTPUT_FORMATS)},
    "logging_level": {"type": "string", "enum": list(settings.LOGGING_LEVELS)},
    "input_format": {"type": "string", "enum": list(INPUT_FORMATS)},
    "passthrough_columns": {"type": "array", "maxItems": MAX_PASSTHROUGH_COLUMNS,
                            "items": {"type": "string", "minLength": 1,
                                      "maxLength": MAX_COLUMN_NAME_CHARS}},
    "deadline": settings.DEADLINE_SCHEMA,
}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Settings": {"type": "object", "description": "deployment settings (docs/jobs.md lists "
                                                  "defaults and limits)",
                 "properties": {**_SETTINGS_PROPERTIES, "environment_variables": _ENVIRONMENT}},
    "Endpoint": {"type": "object", "description": "endpoint.yml as JSON", "properties": {
        "name": _RESOURCE_NAME, "description": _TEXT, "tags": _TAGS,
        "defaults": {"type": "object", "properties": {
            "deployment_name": {**_RESOURCE_NAME, "nullable": True}}},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"},
        "ignored": _IGNORED}},
    "EndpointUpdate": {"type": "object", "additionalProperties": False, "properties": {
        "description": _TEXT, "tags": _TAGS,
        "defaults": {"type": "object", "properties": {"deployment_name": _RESOURCE_NAME}}}},
    "Deployment": {"type": "object",
                   "description": "deployment.yml as JSON; model and code_configuration.code "
                                  "are registered assets (azureml:<name>:<version>); the "
                                  "settings may also stand at the top level, as in Azure ML's "
                                  "older files",
                   "properties": {
                       "name": _RESOURCE_NAME, "endpoint_name": _RESOURCE_NAME,
                       "description": _TEXT, "tags": _TAGS, "model": _ASSET_REFERENCE,
                       "code_configuration": {
                           "type": "object", "nullable": True,
                           "description": "none for an MLflow model, which the built-in "
                                          "MLflow scorer scores",
                           "properties": {
                               "code": _ASSET_REFERENCE,
                               "scoring_script": {"type": "string",
                                                  "maxLength": MAX_RELATIVE_PATH}}},
                       "settings": {"$ref": _REF + "Settings"},
                       "resources": {"type": "object", "properties": {
                           "instance_count": _integer(1, settings.MAX_INSTANCE_COUNT)}},
                       "environment_variables": _ENVIRONMENT,
                       "ignored": _IGNORED}},
    "DeploymentUpdate": {"type": "object", "additionalProperties": False, "properties": {
        "description": _TEXT, "tags": _TAGS, "settings": {"$ref": _REF + "Settings"},
        "resources": {"type": "object", "properties": {
            "instance_count": _integer(1, settings.MAX_INSTANCE_COUNT)}},
        "environment_variables": _ENVIRONMENT}},
    "AssetManifest": {"type": "object", "required": ["root", "files"], "properties": {
        "root": {**_ASSET_NAME, "description": "the folder's own name"},
        "files": {"type": "array", "minItems": 1, "maxItems": MAX_MANIFEST_FILES,
                  "items": {"type": "object", "required": ["path", "size", "sha256", "md5"],
                            "properties": {
                                "path": {"type": "string", "minLength": 1,
                                         "maxLength": MAX_RELATIVE_PATH},
                                "size": {"type": "integer", "minimum": 0},
                                "sha256": name_schema("[0-9a-fA-F]{64}", 64),
                                "md5": name_schema("[0-9a-fA-F]{32}", 32)}}}}},
    "AssetRegistration": {"allOf": [{"$ref": _REF + "AssetManifest"}, {
        "type": "object", "required": ["upload_id"], "properties": {
            "upload_id": {**name_schema("[0-9a-f]{32}", 32),
                          "description": "the grant's upload_id (not needed when a version "
                                         "with this content exists)"}}}]},
    "Asset": {"type": "object", "properties": {
        "kind": {"type": "string"}, "name": {"type": "string"}, "version": {"type": "string"},
        "digest": {"type": "string"}, "prefix": {"type": "string"}, "root": {"type": "string"},
        "files": {"type": "integer"}, "size": {"type": "integer"}}},
    "UploadGrant": {"type": "object", "properties": {
        "exists": {"type": "boolean"}, "asset": {"$ref": _REF + "Asset"},
        "upload_id": {"type": "string"}, "digest": {"type": "string"},
        "expires_at": {"type": "string"},
        "files": {"type": "array", "items": {"type": "object", "properties": {
            "path": {"type": "string"}, "url": {"type": "string"}}}}}},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF + name}


def _listing(name: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"value": {"type": "array", "items": _ref(name)}}}


OPENAPI_PATHS: dict[str, Any] = {
    "/endpoints": {
        "get": operation("List endpoints", "listEndpoints", responses={200: "Endpoints"},
                         result=_listing("Endpoint"), errors=()),
    },
    "/endpoints/{endpoint}": {
        "get": operation("Show an endpoint", "getEndpoint", parameters=[_ENDPOINT],
                         responses={200: "The endpoint"}, result=_ref("Endpoint")),
        "put": operation("Create or replace an endpoint", "putEndpoint",
                         parameters=[_ENDPOINT, _CREATE_ONLY], body="Endpoint",
                         responses={200: "Replaced", 201: "Created"}, result=_ref("Endpoint"),
                         errors=(400, 409, 413)),
        "patch": operation("Update description, tags or defaults.deployment_name",
                           "updateEndpoint", parameters=[_ENDPOINT], body="EndpointUpdate",
                           responses={200: "Updated"}, result=_ref("Endpoint"),
                           errors=(400, 404, 409, 413)),
        "delete": operation("Delete an endpoint and its deployments (jobs are kept)",
                            "deleteEndpoint", parameters=[_ENDPOINT],
                            responses={200: "Deleted"}),
    },
    "/endpoints/{endpoint}/deployments": {
        "get": operation("List an endpoint's deployments", "listDeployments",
                         parameters=[_ENDPOINT], responses={200: "Deployments"},
                         result=_listing("Deployment")),
    },
    "/endpoints/{endpoint}/deployments/{deployment}": {
        "get": operation("Show a deployment", "getDeployment",
                         parameters=[_ENDPOINT, _DEPLOYMENT], responses={200: "The deployment"},
                         result=_ref("Deployment")),
        "put": operation("Create or replace a deployment", "putDeployment",
                         parameters=[_ENDPOINT, _DEPLOYMENT, _CREATE_ONLY,
                                     query_param("set_default", "make it the default",
                                                 {"type": "boolean"})],
                         body="Deployment", responses={200: "Replaced", 201: "Created"},
                         result=_ref("Deployment"), errors=(400, 404, 409, 413, 422)),
        "patch": operation("Update settings, resources, environment variables, description "
                           "or tags", "updateDeployment", parameters=[_ENDPOINT, _DEPLOYMENT],
                           body="DeploymentUpdate", responses={200: "Updated"},
                           result=_ref("Deployment"), errors=(400, 404, 409, 413)),
        "delete": operation("Delete a deployment", "deleteDeployment",
                            parameters=[_ENDPOINT, _DEPLOYMENT,
                                        query_param("force", "delete even the default of an "
                                                    "endpoint with other deployments",
                                                    {"type": "boolean"})],
                            responses={200: "Deleted"}, errors=(400, 404, 409)),
    },
    "/assets/{kind}/{name}/uploads": {
        "post": operation("Ask to upload a folder: the existing version with this content, "
                          "or per-file write URLs", "grantAssetUpload",
                          parameters=[_KIND, _ASSET], body="AssetManifest",
                          responses={200: "Grant"}, result=_ref("UploadGrant"),
                          errors=(400, 413)),
    },
    "/assets/{kind}/{name}/versions": {
        "get": operation("List an asset's versions", "listAssetVersions",
                         parameters=[_KIND, _ASSET], responses={200: "Versions"},
                         result=_listing("Asset"), errors=(400,)),
        "post": operation("Register uploaded files as the next version (or the existing one "
                          "with identical content)", "registerAsset",
                          parameters=[_KIND, _ASSET], body="AssetRegistration",
                          responses={200: "Existing version", 201: "New version"},
                          result=_ref("Asset"), errors=(400, 409, 413, 422)),
    },
    "/assets/{kind}/{name}/versions/{version}": {
        "get": operation("Show an asset version (`latest` for the newest)", "getAssetVersion",
                         parameters=[_KIND, _ASSET, _VERSION],
                         responses={200: "The asset"}, result=_ref("Asset")),
    },
}
