"""Control plane HTTP API: endpoints, deployments and asset uploads (calls shared.registry)."""

from __future__ import annotations

from dataclasses import asdict
from functools import cache
from typing import Any

import azure.functions as func

from functions.http_edge import api_errors, json_response, query_flag, read_json
from functions.openapi import operation, path_param, query_param
from shared.asset_manifest import AssetManifest
from shared.deployment_spec import DeploymentSpec, EndpointSpec, IgnoredField
from shared.errors import InvalidRequest
from shared.registry import Registry
from shared.storage import StorageAccount

bp = func.Blueprint()

# URL segment -> asset kind; the plural reads naturally in URLs, the singular is accepted too.
_ASSET_KINDS = {"models": "model", "model": "model", "code": "code"}


@cache
def _registry() -> Registry:
    return Registry(StorageAccount.from_settings())


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
    manifest = AssetManifest.from_dict(read_json(req, max_bytes=32 * 1024 * 1024))
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
    manifest = AssetManifest.from_dict(read_json(req, max_bytes=32 * 1024 * 1024))
    asset, created = assets.register(kind, name, manifest)
    return json_response(asdict(asset), status=201 if created else 200)


@bp.route(route="assets/{kind}/{name}/versions/{version}", methods=["GET"])
@api_errors
def asset_version(req: func.HttpRequest) -> func.HttpResponse:
    """One asset version (`latest` for the newest)."""
    asset = _registry().assets.get(_asset_kind(req), req.route_params["name"],
                                   req.route_params["version"])
    return json_response(asdict(asset))


# ----- OpenAPI ---------------------------------------------------------------------------

_ENDPOINT = path_param("endpoint", "Endpoint name")
_DEPLOYMENT = path_param("deployment", "Deployment name")
_KIND = path_param("kind", "Asset kind: models or code")
_ASSET = path_param("name", "Asset name")
_CREATE_ONLY = {"name": "If-None-Match", "in": "header", "required": False,
                "description": "`*`: create only; 409 if the name exists",
                "schema": {"type": "string"}}
_REF = "#/components/schemas/"
_IGNORED = {"type": "array", "description": "fields accepted but not used, with the reason",
            "items": {"type": "object", "properties": {"field": {"type": "string"},
                                                       "reason": {"type": "string"}}}}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Endpoint": {"type": "object", "description": "endpoint.yml as JSON", "properties": {
        "name": {"type": "string"}, "description": {"type": "string"},
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "defaults": {"type": "object",
                     "properties": {"deployment_name": {"type": "string", "nullable": True}}},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"},
        "ignored": _IGNORED}},
    "EndpointUpdate": {"type": "object", "properties": {
        "description": {"type": "string"},
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "defaults": {"type": "object", "properties": {"deployment_name": {"type": "string"}}}}},
    "Deployment": {"type": "object",
                   "description": "deployment.yml as JSON; model and code_configuration.code "
                                  "are registered assets (azureml:<name>:<version>)",
                   "properties": {
                       "name": {"type": "string"}, "endpoint_name": {"type": "string"},
                       "description": {"type": "string"}, "tags": {"type": "object"},
                       "model": {},
                       "code_configuration": {
                           "type": "object", "nullable": True,
                           "description": "none for an MLflow model, which the built-in "
                                          "MLflow scorer scores"},
                       "settings": {"type": "object"}, "resources": {"type": "object"},
                       "environment_variables": {"type": "object"},
                       "ignored": _IGNORED}},
    "DeploymentUpdate": {"type": "object", "properties": {
        "description": {"type": "string"}, "tags": {"type": "object"},
        "settings": {"type": "object"}, "resources": {"type": "object"},
        "environment_variables": {"type": "object"}}},
    "AssetManifest": {"type": "object", "required": ["root", "files"], "properties": {
        "root": {"type": "string", "description": "the folder's own name"},
        "files": {"type": "array", "items": {"type": "object", "properties": {
            "path": {"type": "string"}, "size": {"type": "integer"},
            "sha256": {"type": "string"}, "md5": {"type": "string"}}}}}},
    "Asset": {"type": "object", "properties": {
        "kind": {"type": "string"}, "name": {"type": "string"}, "version": {"type": "string"},
        "digest": {"type": "string"}, "prefix": {"type": "string"}, "root": {"type": "string"},
        "files": {"type": "integer"}, "size": {"type": "integer"}}},
    "UploadGrant": {"type": "object", "properties": {
        "exists": {"type": "boolean"}, "asset": {"$ref": _REF + "Asset"},
        "digest": {"type": "string"}, "prefix": {"type": "string"},
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
                          parameters=[_KIND, _ASSET], body="AssetManifest",
                          responses={200: "Existing version", 201: "New version"},
                          result=_ref("Asset"), errors=(400, 413, 422)),
    },
    "/assets/{kind}/{name}/versions/{version}": {
        "get": operation("Show an asset version (`latest` for the newest)", "getAssetVersion",
                         parameters=[_KIND, _ASSET, path_param("version", "number or latest")],
                         responses={200: "The asset"}, result=_ref("Asset")),
    },
}
