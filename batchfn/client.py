"""Python client of the batchfn HTTP API: one method per verb, like the CLI.

    client = BatchfnClient()                      # BATCHFN_URL / BATCHFN_KEY, or the local devhost
    client.create_endpoint("endpoint.yml")
    client.create_deployment("deployment.yml", endpoint_name="mnist", set_default=True)

Model and code folders are hashed locally and uploaded straight to storage with the write
URLs the API grants (identical content is never uploaded twice); the API only sees the
manifest. Every failure raises `ApiError(status, code, message, details)`.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batchfn.job_client import JobClientMixin
from batchfn.uploads import upload_files
from shared.assets import scan_folder
from shared.deployment_spec import (
    AssetReference,
    DeploymentSpec,
    EndpointSpec,
    FolderSource,
    load_document,
    with_uploaded_assets,
)
from shared.errors import BatchfnError, InvalidRequest
from shared.names import check_resource_name
from shared.script_check import check_scoring_script

DEFAULT_URL = "http://127.0.0.1:7071"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ApiError(Exception):
    """An error answer of the API (or a local check that failed before any request)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"


def resolve_target(url: str | None = None, key: str | None = None) -> tuple[str, str | None]:
    """The API's base URL and key: arguments, then BATCHFN_URL/BATCHFN_KEY, then the devhost."""
    base = (url or os.environ.get("BATCHFN_URL") or DEFAULT_URL).rstrip("/")
    return base, key or os.environ.get("BATCHFN_KEY") or devhost_key(base)


def devhost_key(url: str) -> str | None:
    """The key a local devhost wrote to `~/.devhost/<port>.json` (or DEVHOST_STATE_DIR)."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in _LOOPBACK:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    folder = Path(os.environ.get("DEVHOST_STATE_DIR") or Path.home() / ".devhost")
    try:
        state = json.loads((folder / f"{port}.json").read_text())
    except (OSError, ValueError):
        return None
    return state.get("key") if isinstance(state, dict) else None


@contextmanager
def local_checks() -> Iterator[None]:
    """Report a check made on this machine the way the API reports its own."""
    try:
        yield
    except BatchfnError as exc:
        raise ApiError(exc.status, exc.code, exc.message, exc.details) from None


class BatchfnClient(JobClientMixin):
    """Client of one batchfn deployment (`url`) with its function key (`key`)."""

    def __init__(self, url: str | None = None, key: str | None = None,
                 timeout: float = 60.0) -> None:
        self.url, self.key = resolve_target(url, key)
        self.timeout = timeout

    # ----- transport -------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *,
                params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None) -> Any:
        """Send one request to `/api/<path>`; the decoded JSON answer, or ApiError."""
        url = f"{self.url}/api/{path.lstrip('/')}"
        if params:
            url += "?" + urllib.parse.urlencode(
                {k: str(v).lower() if isinstance(v, bool) else v
                 for k, v in params.items() if v is not None})
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.key:
            request.add_header("x-functions-key", self.key)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise _api_error(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, "unreachable",
                           f"cannot reach batchfn at {self.url}: {reason} (is the devhost "
                           "running? start it with `make serve`, or set --url/BATCHFN_URL)"
                           ) from None
        return json.loads(payload) if payload else None

    # ----- endpoints -------------------------------------------------------------------

    def create_endpoint(self, file: str | Path | None = None, *, name: str | None = None,
                        document: Mapping[str, Any] | None = None,
                        replace: bool = False) -> dict[str, Any]:
        """Create an endpoint from endpoint.yml (or a document); `replace` allows an update."""
        with local_checks():
            doc = dict(document or (load_document(file) if file else {}))
            spec = EndpointSpec.from_document(doc, name=name)
        headers = None if replace else {"If-None-Match": "*"}
        return self.request("PUT", f"endpoints/{spec.name}", doc, headers=headers)

    def get_endpoint(self, name: str) -> dict[str, Any]:
        """Show one endpoint."""
        return self.request("GET", f"endpoints/{_name('endpoint', name)}")

    def list_endpoints(self) -> list[dict[str, Any]]:
        """All endpoints."""
        return self.request("GET", "endpoints")["value"]

    def update_endpoint(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Update description, tags or `defaults.deployment_name`."""
        return self.request("PATCH", f"endpoints/{_name('endpoint', name)}", dict(changes))

    def delete_endpoint(self, name: str) -> dict[str, Any]:
        """Delete an endpoint with its deployments (its jobs are kept)."""
        return self.request("DELETE", f"endpoints/{_name('endpoint', name)}")

    # ----- deployments -----------------------------------------------------------------

    def create_deployment(self, file: str | Path | None = None, *,
                          document: Mapping[str, Any] | None = None,
                          base_dir: str | Path | None = None,
                          endpoint_name: str | None = None, name: str | None = None,
                          set_default: bool = False, replace: bool = False) -> dict[str, Any]:
        """Create a deployment from deployment.yml: check it, upload its folders, register it.

        Folders are relative to the YAML file (or `base_dir` for a `document`). Everything
        that can be checked here (names, settings, folders, the scoring script) is checked
        before anything is uploaded.
        """
        with local_checks():
            doc = dict(document or load_document(_required_file(file)))
            base = Path(base_dir) if base_dir else (Path(file).parent if file else Path.cwd())
            spec = DeploymentSpec.from_document(doc, endpoint_name=endpoint_name, name=name)
            model_dir = _folder(base, spec.model)
            code_dir = _folder(base, spec.code)
            if code_dir is not None:
                _check_script(code_dir, spec.scoring_script)
        self.get_endpoint(spec.endpoint_name)
        if not replace:
            self._require_absent(spec.endpoint_name, spec.name)
        model = (self._upload_source("model", spec.model, model_dir,
                                     f"{spec.endpoint_name}-{spec.name}-model"))
        code = (self._upload_source("code", spec.code, code_dir,
                                    f"{spec.endpoint_name}-{spec.name}-code"))
        body = with_uploaded_assets(doc, model, code)
        body["name"], body["endpoint_name"] = spec.name, spec.endpoint_name
        return self.request(
            "PUT", f"endpoints/{spec.endpoint_name}/deployments/{spec.name}", body,
            params={"set_default": set_default or None},
            headers=None if replace else {"If-None-Match": "*"})

    def get_deployment(self, endpoint_name: str, name: str) -> dict[str, Any]:
        """Show one deployment."""
        return self.request("GET", _deployment_path(endpoint_name, name))

    def list_deployments(self, endpoint_name: str) -> list[dict[str, Any]]:
        """All deployments of an endpoint."""
        return self.request(
            "GET", f"endpoints/{_name('endpoint', endpoint_name)}/deployments")["value"]

    def update_deployment(self, endpoint_name: str, name: str,
                          changes: Mapping[str, Any]) -> dict[str, Any]:
        """Update settings, resources, environment variables, description or tags."""
        return self.request("PATCH", _deployment_path(endpoint_name, name), dict(changes))

    def delete_deployment(self, endpoint_name: str, name: str, *,
                          force: bool = False) -> dict[str, Any]:
        """Delete a deployment (`force`: even the default of an endpoint with others)."""
        return self.request("DELETE", _deployment_path(endpoint_name, name),
                            params={"force": force or None})

    # ----- assets ----------------------------------------------------------------------

    def upload_asset(self, kind: str, name: str, folder: str | Path) -> dict[str, Any]:
        """Register a folder as a model/code asset; identical content reuses its version."""
        with local_checks():
            manifest = scan_folder(folder)
        segment = "models" if kind == "model" else kind
        grant = self.request("POST", f"assets/{segment}/{name}/uploads", manifest.to_dict())
        if grant["exists"]:
            return grant["asset"]
        upload_files(folder, manifest, grant)
        return self.request("POST", f"assets/{segment}/{name}/versions", manifest.to_dict())

    def get_asset(self, kind: str, name: str, version: str = "latest") -> dict[str, Any]:
        """One asset version (`latest` for the newest)."""
        segment = "models" if kind == "model" else kind
        return self.request("GET", f"assets/{segment}/{name}/versions/{version}")

    def list_asset_versions(self, kind: str, name: str) -> list[dict[str, Any]]:
        """All versions of an asset."""
        segment = "models" if kind == "model" else kind
        return self.request("GET", f"assets/{segment}/{name}/versions")["value"]

    # ----- helpers ---------------------------------------------------------------------

    def _require_absent(self, endpoint_name: str, name: str) -> None:
        try:
            self.get_deployment(endpoint_name, name)
        except ApiError as exc:
            if exc.status == 404:
                return
            raise
        raise ApiError(409, "already_exists",
                       f"deployment {name!r} already exists on endpoint {endpoint_name!r}: "
                       "use update to change it")

    def _upload_source(self, kind: str, source: FolderSource | AssetReference,
                       folder: Path | None, default_name: str) -> AssetReference:
        if isinstance(source, AssetReference):
            return source
        assert folder is not None  # _folder() resolved every FolderSource
        asset = self.upload_asset(kind, source.name or default_name, folder)
        return AssetReference(asset["name"], asset["version"])


def _api_error(status: int, payload: bytes) -> ApiError:
    try:
        error = json.loads(payload)["error"]
        return ApiError(status, error.get("code", "error"), error.get("message", ""),
                        error.get("details"))
    except (ValueError, KeyError, TypeError):
        text = payload.decode("utf-8", "replace").strip()[:300]
        return ApiError(status, "http_error", f"HTTP {status}: {text or 'no details'}")


def _name(kind: str, name: str) -> str:
    with local_checks():
        return check_resource_name(kind, name)


def _deployment_path(endpoint_name: str, name: str) -> str:
    return (f"endpoints/{_name('endpoint', endpoint_name)}/deployments/"
            f"{_name('deployment', name)}")


def _required_file(file: str | Path | None) -> str | Path:
    if file is None:
        raise InvalidRequest("a deployment needs a file (deployment.yml) or a document",
                             code="missing_file")
    return file


def _folder(base: Path, source: FolderSource | AssetReference) -> Path | None:
    if isinstance(source, AssetReference):
        return None
    folder = (base / source.path).resolve()
    if not folder.is_dir():
        raise InvalidRequest(f"folder {source.path!r} does not exist (looked in {folder})",
                             details={"path": str(folder)}, code="folder_not_found")
    return folder


def _check_script(code_dir: Path, scoring_script: str) -> None:
    script = code_dir / scoring_script
    if not script.is_file():
        raise InvalidRequest(f"scoring script {scoring_script!r} is not in {code_dir}",
                             details={"path": str(script)}, code="script_not_found")
    check_scoring_script(script.read_bytes(), scoring_script)
