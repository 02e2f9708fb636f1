"""Control plane HTTP API: endpoints, deployments, computes and assets (models, code, data)
(shared/control/registry.py)."""

from __future__ import annotations

from typing import Any

import azure.functions as func

from functions.http_edge import api_errors, json_response, query_flag, read_json
from functions.openapi import name_schema, operation, path_param, query_param
from shared.contract import settings
from shared.contract.asset_manifest import MAX_MANIFEST_FILES, AssetManifest
from shared.contract.asset_spec import DATA_TYPES, MAX_VERSION_DIGITS
from shared.contract.compute_spec import PROFILES, TIERS, ComputeSpec
from shared.contract.deployment_spec import (
    MAX_ENVIRONMENT_BYTES,
    MAX_ENVIRONMENT_VALUE,
    MAX_ENVIRONMENT_VARIABLES,
    MAX_TAG_VALUE,
    MAX_TAGS,
    MAX_TEXT,
    MODEL_TYPES,
    DeploymentSpec,
    EndpointSpec,
    IgnoredField,
)
from shared.contract.errors import InvalidRequest
from shared.contract.names import ASSET_NAME_PATTERN, MAX_RELATIVE_PATH, RESOURCE_NAME_PATTERN
from shared.contract.settings import INPUT_FORMATS, MAX_COLUMN_NAME_CHARS, MAX_PASSTHROUGH_COLUMNS
from shared.control.asset_registration import register_asset
from shared.control.context import job_service
from shared.control.context import registry as _registry

bp = func.Blueprint()

# URL segment -> asset kind; the plural reads naturally in URLs, the singular is accepted too.
_ASSET_KINDS = {"models": "model", "model": "model", "code": "code", "data": "data"}
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


# ----- computes ----------------------------------------------------------------------------

def _compute_answer(record: Any, spec: ComputeSpec | None = None) -> dict[str, Any]:
    body = record.to_dict()
    notes = _registry().computes.notes(record)
    if notes:
        body["notes"] = notes
    return _with_ignored(body, spec.ignored) if spec is not None else body


@bp.route(route="computes", methods=["GET"])
@api_errors
def list_computes(req: func.HttpRequest) -> func.HttpResponse:
    """All computes (scoring pools), the built-in default among them."""
    return json_response({"value": [c.to_dict() for c in _registry().computes.list()]})


@bp.route(route="computes/{name}", methods=["GET", "PUT", "PATCH", "DELETE"])
@api_errors
def compute_item(req: func.HttpRequest) -> func.HttpResponse:
    """Show, create/replace (PUT), update (PATCH) or delete one compute."""
    name = req.route_params["name"]
    registry = _registry()
    if req.method == "GET":
        return json_response(registry.computes.get(name).to_dict())
    if req.method == "DELETE":
        registry.computes.delete(name, lambda: registry.deployments_using(name))
        return json_response({"deleted": {"compute": name}})
    body = read_json(req)
    if req.method == "PATCH":
        return json_response(_compute_answer(registry.computes.update(name, body)))
    spec = ComputeSpec.from_document(body, name=name)
    record, created = registry.computes.create(spec, replace_existing=not _create_only(req))
    return json_response(_compute_answer(record, spec), status=201 if created else 200)


# ----- assets ----------------------------------------------------------------------------

def _asset_kind(req: func.HttpRequest) -> str:
    segment = req.route_params["kind"]
    if segment not in _ASSET_KINDS:
        raise InvalidRequest(f"unknown asset kind {segment!r}: expected models, code or data",
                             code="invalid_asset_kind")
    return _ASSET_KINDS[segment]


@bp.route(route="assets/{kind}", methods=["GET"])
@api_errors
def list_assets(req: func.HttpRequest) -> func.HttpResponse:
    """The latest version of every asset of a kind (archived ones with ?include_archived)."""
    versions = _registry().assets.versions.list_assets(
        _asset_kind(req), include_archived=query_flag(req, "include_archived"))
    return json_response({"value": [v.to_dict() for v in versions]})


@bp.route(route="assets/{kind}/{name}", methods=["PATCH"])
@api_errors
def archive_asset(req: func.HttpRequest) -> func.HttpResponse:
    """Archive (`{"archived": true}`) or restore every version of an asset."""
    body = read_json(req)
    unknown = sorted(set(body) - {"archived"})
    if unknown or not isinstance(body.get("archived"), bool):
        raise InvalidRequest('the body must be {"archived": true} or {"archived": false}',
                             code="invalid_update")
    versions = _registry().assets.versions.archive_all(_asset_kind(req),
                                                       req.route_params["name"],
                                                       body["archived"])
    return json_response({"value": [v.to_dict() for v in versions]})


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
    """List an asset's versions, or register uploaded content (or, for data, a location)
    as a version."""
    kind, name = _asset_kind(req), req.route_params["name"]
    assets = _registry().assets
    if req.method == "GET":
        versions = assets.versions.list_versions(
            kind, name, include_archived=query_flag(req, "include_archived"))
        return json_response({"value": [v.to_dict() for v in versions]})
    body = read_json(req, max_bytes=MAX_MANIFEST_BODY)
    service = job_service()
    asset, created = register_asset(assets, service.boundaries, service.store.service.url,
                                    kind, name, body)
    return json_response(asset.to_dict(), status=201 if created else 200)


@bp.route(route="assets/{kind}/{name}/versions/{version}", methods=["GET", "PATCH"])
@api_errors
def asset_version(req: func.HttpRequest) -> func.HttpResponse:
    """One asset version (`latest`: the newest not archived); PATCH archives or restores it
    (`archived`) or changes its description or tags."""
    kind, name, version = (_asset_kind(req), req.route_params["name"],
                           req.route_params["version"])
    versions = _registry().assets.versions
    if req.method == "PATCH":
        return json_response(versions.update(kind, name, version, read_json(req)).to_dict())
    return json_response(versions.get(kind, name, version).to_dict())


# ----- OpenAPI ---------------------------------------------------------------------------

_RESOURCE_NAME = name_schema(RESOURCE_NAME_PATTERN, 32)
_ASSET_NAME = name_schema(ASSET_NAME_PATTERN, 255)
_ENDPOINT = path_param("endpoint", "Endpoint name", _RESOURCE_NAME)
_DEPLOYMENT = path_param("deployment", "Deployment name", _RESOURCE_NAME)
_KIND = path_param("kind", "Asset kind", {"type": "string", "enum": sorted(_ASSET_KINDS)})
_ASSET = path_param("name", "Asset name", _ASSET_NAME)
_VERSION = path_param("version", "number or latest",
                      name_schema(rf"(latest|[0-9]{{1,{MAX_VERSION_DIGITS}}})", 9))
_COMPUTE = path_param("name", "Compute name", _RESOURCE_NAME)
_INCLUDE_ARCHIVED = query_param("include_archived", "archived versions too",
                                {"type": "boolean"})
_CREATE_ONLY = {"name": "If-None-Match", "in": "header", "required": False,
                "description": "`*`: create only; 409 if the name exists",
                "schema": {"type": "string", "maxLength": 64}}
_REF = "#/components/schemas/"


def _integer_range(minimum: int, maximum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}

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
_ASSET_METADATA = {
    "type": {"type": "string", "enum": [*MODEL_TYPES, *DATA_TYPES],
             "description": "models: custom_model or mlflow_model; data: uri_folder or "
                            "uri_file"},
    "description": _TEXT, "tags": _TAGS,
    "version": name_schema(rf"[1-9][0-9]{{0,{MAX_VERSION_DIGITS - 1}}}", MAX_VERSION_DIGITS)}
_MANIFEST_FILES = {
    "type": "array", "minItems": 1, "maxItems": MAX_MANIFEST_FILES,
    "items": {"type": "object", "required": ["path", "size", "sha256", "md5"], "properties": {
        "path": {"type": "string", "minLength": 1, "maxLength": MAX_RELATIVE_PATH},
        "size": {"type": "integer", "minimum": 0},
        "sha256": name_schema("[0-9a-fA-F]{64}", 64),
        "md5": name_schema("[0-9a-fA-F]{32}", 32)}}}
_COMPUTE_COUNTS = {
    "min_instances": _integer_range(0, settings.MAX_INSTANCE_COUNT),
    "max_instances": {**_integer_range(1, settings.MAX_INSTANCE_COUNT), "nullable": True,
                      "description": "scoring hosts working on the pool's jobs at once; "
                                     "null: no cap (the built-in default pool)"},
    "idle_time_before_scale_down": _integer_range(0, 7 * 24 * 3600)}
_IGNORED = {"type": "array", "description": "fields accepted but not used, with the reason",
            "items": {"type": "object", "properties": {"field": {"type": "string"},
                                                       "reason": {"type": "string"}}}}


def _integer(minimum: int, maximum: int) -> dict[str, Any]:
    return _integer_range(minimum, maximum)


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
        "files": _MANIFEST_FILES}},
    "AssetRegistration": {
        "type": "object",
        "description": "uploaded content: the folder's manifest (root, files) and the grant's "
                       "upload_id (not needed when a version with this content exists); or, "
                       "for a data asset, path: a datastore path or storage URL jobs may read",
        "properties": {
            "root": {**_ASSET_NAME, "description": "the folder's own name"},
            "files": _MANIFEST_FILES,
            "upload_id": name_schema("[0-9a-f]{32}", 32),
            "path": {"type": "string", "minLength": 1, "maxLength": 2048},
            **_ASSET_METADATA}},
    "Asset": {"type": "object", "properties": {
        "kind": {"type": "string"}, "name": {"type": "string"}, "version": {"type": "string"},
        "digest": {"type": "string"}, "prefix": {"type": "string"}, "root": {"type": "string"},
        "files": {"type": "integer"}, "size": {"type": "integer"},
        "type": {"type": "string", "nullable": True}, "description": {"type": "string"},
        "tags": _TAGS, "archived": {"type": "boolean"}, "created_at": {"type": "string"},
        "path": {"type": "string", "nullable": True,
                 "description": "data assets: where invoke reads them"}}},
    "AssetUpdate": {"type": "object", "additionalProperties": False, "properties": {
        "archived": {"type": "boolean"}, "description": _TEXT, "tags": _TAGS}},
    "AssetArchive": {"type": "object", "additionalProperties": False,
                     "required": ["archived"], "properties": {"archived": {"type": "boolean"}}},
    "Compute": {"type": "object", "description": "compute.yml (AmlCompute) as JSON: a scoring "
                                                 "pool (docs/concepts.md)",
                "properties": {
                    "name": _RESOURCE_NAME,
                    "type": {"type": "string", "enum": ["amlcompute"]},
                    "size": {"type": "string", "maxLength": 64, "nullable": True,
                             "description": "an Azure VM size of the T4, A100 or CPU "
                                            "families, or a profile: " + ", ".join(PROFILES)},
                    "profile": {"type": "string", "enum": list(PROFILES), "nullable": True},
                    **_COMPUTE_COUNTS,
                    "tier": {"type": "string", "enum": list(TIERS)},
                    "description": _TEXT, "tags": _TAGS,
                    "created_at": {"type": "string"}, "updated_at": {"type": "string"},
                    "notes": {"type": "array", "items": {"type": "string"}},
                    "ignored": _IGNORED}},
    "ComputeUpdate": {"type": "object", "additionalProperties": False, "properties": {
        "size": {"type": "string", "maxLength": 64}, **_COMPUTE_COUNTS,
        "tier": {"type": "string", "enum": list(TIERS)}, "description": _TEXT,
        "tags": _TAGS}},
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
    "/computes": {
        "get": operation("List computes (scoring pools)", "listComputes",
                         responses={200: "Computes"}, result=_listing("Compute"), errors=()),
    },
    "/computes/{name}": {
        "get": operation("Show a compute", "getCompute", parameters=[_COMPUTE],
                         responses={200: "The compute"}, result=_ref("Compute")),
        "put": operation("Create or replace a compute", "putCompute",
                         parameters=[_COMPUTE, _CREATE_ONLY], body="Compute",
                         responses={200: "Replaced", 201: "Created"}, result=_ref("Compute"),
                         errors=(400, 409, 413)),
        "patch": operation("Update a compute's size, instance counts, tier, idle time, "
                           "description or tags", "updateCompute", parameters=[_COMPUTE],
                           body="ComputeUpdate", responses={200: "Updated"},
                           result=_ref("Compute"), errors=(400, 404, 409, 413)),
        "delete": operation("Delete a compute no deployment uses", "deleteCompute",
                            parameters=[_COMPUTE], responses={200: "Deleted"},
                            errors=(400, 404, 409)),
    },
    "/assets/{kind}": {
        "get": operation("List the assets of a kind (the latest version of each)",
                         "listAssets", parameters=[_KIND, _INCLUDE_ARCHIVED],
                         responses={200: "Assets"}, result=_listing("Asset"), errors=(400,)),
    },
    "/assets/{kind}/{name}": {
        "patch": operation("Archive or restore every version of an asset", "archiveAsset",
                           parameters=[_KIND, _ASSET], body="AssetArchive",
                           responses={200: "The versions"}, result=_listing("Asset"),
                           errors=(400, 404, 409, 413)),
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
                         parameters=[_KIND, _ASSET, _INCLUDE_ARCHIVED],
                         responses={200: "Versions"}, result=_listing("Asset"), errors=(400,)),
        "post": operation("Register uploaded files (or, for data, a location) as a version: "
                          "the next one, the one asked for, or the existing one with "
                          "identical content", "registerAsset",
                          parameters=[_KIND, _ASSET], body="AssetRegistration",
                          responses={200: "Existing version", 201: "New version"},
                          result=_ref("Asset"), errors=(400, 409, 413, 422)),
    },
    "/assets/{kind}/{name}/versions/{version}": {
        "get": operation("Show an asset version (`latest`: the newest not archived)",
                         "getAssetVersion", parameters=[_KIND, _ASSET, _VERSION],
                         responses={200: "The asset"}, result=_ref("Asset")),
        "patch": operation("Archive or restore a version, or change its description or tags",
                           "updateAssetVersion", parameters=[_KIND, _ASSET, _VERSION],
                           body="AssetUpdate", responses={200: "Updated"},
                           result=_ref("Asset"), errors=(400, 404, 409, 413)),
    },
}
