"""Python client of the batchfn HTTP API: one method per verb, like the CLI.

    client = BatchfnClient()                      # BATCHFN_URL / BATCHFN_KEY, or the local devhost
    client.create_endpoint("endpoint.yml")
    client.create_deployment("deployment.yml", endpoint_name="mnist", set_default=True)
    job = client.invoke("mnist", "data/sample")   # a local folder is uploaded first
    client.wait_job(job["name"])

Model and code folders are hashed locally and uploaded straight to storage with the write
URLs the API grants (identical content is never uploaded twice); the API only sees the
manifest. Every failure raises an error of batchfn.errors (`ApiError` and its subclasses
for refusals, `TransportError` when the API cannot be reached).

What only creating deployments or uploading needs (YAML, the script check, hashing, the
blob SDK) is imported by the methods that use it, so `batchfn job show` starts quickly.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchfn.contract.errors import InvalidRequest
from batchfn.contract.names import check_resource_name
from batchfn.errors import (
    ApiError,
    JobError,
    JobTimeoutError,
    NotFoundError,
    api_error,
    local_checks,
)
from batchfn.target import resolve_target
from batchfn.transport import Transport

if TYPE_CHECKING:
    from batchfn.contract.deployment_spec import AssetReference, FolderSource

__all__ = ["ApiError", "BatchfnClient", "JOB_TERMINAL_STATUSES"]

JOB_TERMINAL_STATUSES = ("Completed", "Failed", "Canceled")
_DOWNLOAD_CHUNK = 1024 * 1024


class BatchfnClient:
    """Client of one batchfn deployment (`url`) with its function key (`key`)."""

    def __init__(self, url: str | None = None, key: str | None = None,
                 timeout: float = 60.0) -> None:
        self.transport = Transport(*resolve_target(url, key), timeout=timeout)

    @property
    def url(self) -> str:
        return self.transport.url

    def request(self, method: str, path: str, body: Any = None, *,
                params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None) -> Any:
        """Send one request to `/api/<path>`; the decoded JSON answer."""
        return self.transport.request(method, path, body, params=params, headers=headers)

    # ----- endpoints -------------------------------------------------------------------

    def create_endpoint(self, file: str | Path | None = None, *, name: str | None = None,
                        document: Mapping[str, Any] | None = None,
                        replace: bool = False) -> dict[str, Any]:
        """Create an endpoint from endpoint.yml (or a document); `replace` allows an update."""
        from batchfn.deployment_files import endpoint_document

        doc, spec = endpoint_document(file, document, name)
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

    # ----- environments ----------------------------------------------------------------

    def create_environment(self, file: str | Path | None = None, *, name: str | None = None,
                           document: Mapping[str, Any] | None = None,
                           base_dir: str | Path | None = None) -> dict[str, Any]:
        """Register an environment from environment.yml (or a document): its conda file is
        read here (relative to the YAML file, or `base_dir`), the service resolves it with
        uv and answers with the version (a new one, or the one with identical content)."""
        from batchfn.deployment_files import environment_document

        doc, spec_name = environment_document(file, document, base_dir, name)
        return self.request("POST", f"environments/{spec_name}/versions", doc)

    def get_environment(self, name: str, version: str = "latest") -> dict[str, Any]:
        """Show one environment version (`latest`: the newest)."""
        return self.request("GET", f"environments/{_asset_name(name)}/versions/"
                                   f"{urllib.parse.quote(str(version), safe='')}")

    def list_environments(self, name: str | None = None) -> list[dict[str, Any]]:
        """The latest version of every environment, or every version of `name`."""
        if name is None:
            return self.request("GET", "environments")["value"]
        return self.request("GET", f"environments/{_asset_name(name)}/versions")["value"]

    # ----- deployments -----------------------------------------------------------------

    def create_deployment(self, file: str | Path | None = None, *,
                          document: Mapping[str, Any] | None = None,
                          base_dir: str | Path | None = None,
                          endpoint_name: str | None = None, name: str | None = None,
                          set_default: bool = False, replace: bool = False) -> dict[str, Any]:
        """Create a deployment from deployment.yml: check it, upload its folders, register it.

        Folders are relative to the YAML file (or `base_dir` for a `document`). Everything
        that can be checked here (names, settings, folders, the scoring script) is checked
        before anything is uploaded. `replace` creates or replaces.
        """
        from batchfn.contract.deployment_spec import with_uploaded_assets
        from batchfn.deployment_files import deployment_document

        local = deployment_document(file, document, base_dir, endpoint_name, name)
        spec = local.spec
        self.get_endpoint(spec.endpoint_name)
        if not replace:
            self._require_absent(spec.endpoint_name, spec.name)
        model = self._upload_source("model", spec.model, local.model_dir,
                                    f"{spec.endpoint_name}-{spec.name}-model")
        code = None if spec.code is None else self._upload_source(
            "code", spec.code, local.code_dir, f"{spec.endpoint_name}-{spec.name}-code")
        body = with_uploaded_assets(local.document, model, code)
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
        from batchfn.contract.asset_manifest import scan_folder
        from batchfn.uploads import upload_files

        with local_checks():
            manifest = scan_folder(folder)
        segment = _asset_segment(kind)
        grant = self.request("POST", f"assets/{segment}/{_quote(name)}/uploads",
                             manifest.to_dict())
        if grant["exists"]:
            return grant["asset"]
        upload_files(folder, manifest, grant)
        # The server checks each staged file's sha256 before it records the version.
        return self.request("POST", f"assets/{segment}/{_quote(name)}/versions",
                            {**manifest.to_dict(), "upload_id": grant["upload_id"]})

    def get_asset(self, kind: str, name: str, version: str = "latest") -> dict[str, Any]:
        """One asset version (`latest` for the newest)."""
        return self.request("GET", f"assets/{_asset_segment(kind)}/{_quote(name)}/versions/"
                                   f"{_quote(version)}")

    def list_asset_versions(self, kind: str, name: str) -> list[dict[str, Any]]:
        """All versions of an asset."""
        return self.request(
            "GET", f"assets/{_asset_segment(kind)}/{_quote(name)}/versions")["value"]

    # ----- jobs ------------------------------------------------------------------------

    def invoke(self, endpoint_name: str, input: str | Path, *, input_type: str | None = None,
               deployment_name: str | None = None, job_name: str | None = None,
               output_path: str | None = None, include_subfolders: bool = False,
               settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Start a batch job; a local file or folder is uploaded first. Returns the job."""
        uri = str(input)
        if "://" not in uri:
            uri, input_type = self.upload_input(Path(uri), input_type)
        body: dict[str, Any] = {"input": uri, "include_subfolders": include_subfolders}
        for key, value in (("input_type", input_type), ("deployment_name", deployment_name),
                           ("name", job_name), ("output_path", output_path)):
            if value is not None:
                body[key] = value
        if settings:
            body["settings"] = dict(settings)
        return self.request("POST", f"endpoints/{_quote(endpoint_name)}/jobs", body)

    def upload_input(self, path: Path, input_type: str | None = None) -> tuple[str, str]:
        """Upload a local file or folder; returns (datastore URI, input type)."""
        from batchfn.uploads import upload_inputs

        if path.is_file():
            files, base = [path.name], path.parent
        elif path.is_dir():
            files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
            base = path
            if not files:
                with local_checks():
                    raise InvalidRequest(f"{path} has no files to upload", code="input_empty")
        else:
            with local_checks():
                raise InvalidRequest(f"input {path} is neither a URL nor an existing local path",
                                     details={"input": str(path)}, code="input_not_found")
        grant = self.request("POST", "data/uploads", {"name": path.name, "files": files})
        upload_inputs(base, grant["files"])
        return grant["uri"], input_type or grant["input_type"]

    def get_job(self, name: str) -> dict[str, Any]:
        """A job with its progress, rate, ETA and error summary."""
        return self.request("GET", f"jobs/{_quote(name)}")

    def list_jobs(self, endpoint_name: str | None = None,
                  deployment_name: str | None = None) -> list[dict[str, Any]]:
        """Jobs, newest first, optionally of one endpoint / deployment."""
        if endpoint_name and deployment_name:
            path = (f"endpoints/{_quote(endpoint_name)}/deployments/"
                    f"{_quote(deployment_name)}/jobs")
            return self.request("GET", path)["value"]
        return self.request("GET", "jobs", params={"endpoint": endpoint_name})["value"]

    def cancel_job(self, name: str) -> dict[str, Any]:
        """Ask a job to stop: CancelRequested now, Canceled once its workers have stopped."""
        return self.request("POST", f"jobs/{_quote(name)}/cancel", {})

    def rerun_job(self, name: str, *, failed_only: bool = False,
                  new_name: str | None = None) -> dict[str, Any]:
        """Start a new job over the same input (or, `failed_only`, the files that failed)."""
        body: dict[str, Any] = {"failed_only": failed_only}
        if new_name:
            body["name"] = new_name
        return self.request("POST", f"jobs/{_quote(name)}/rerun", body)

    def job_errors(self, name: str) -> list[dict[str, Any]]:
        """The per-file errors report of a finished job."""
        return self.request("GET", f"jobs/{_quote(name)}/errors")["value"]

    def wait_job(self, name: str, *, poll: float = 0.5, timeout: float | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 require_completed: bool = False) -> dict[str, Any]:
        """Poll a job until it ends; returns the final job.

        JobTimeoutError if it is still running after `timeout` seconds; with
        `require_completed`, JobError unless it Completed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(name)
            if on_progress:
                on_progress(job)
            if job["status"] in JOB_TERMINAL_STATUSES:
                if require_completed and job["status"] != "Completed":
                    reason = f": {job['reason']}" if job.get("reason") else ""
                    raise JobError(f"job {name} ended {job['status']}{reason}", job)
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeoutError(f"job {name} still {job['status']} after {timeout}s", job)
            time.sleep(poll)

    def download_job_output(self, name: str, output_name: str = "score",
                            download_path: str | Path = ".") -> Path:
        """Save a named output as Azure ML does: <path>/named-outputs/<output>/<file>."""
        path = f"jobs/{_quote(name)}/outputs/{_quote(output_name)}"
        with self.transport.open("GET", path) as response:
            file_name = attachment_name(response.headers.get("Content-Disposition", ""),
                                        output_name)
            target = Path(download_path) / "named-outputs" / output_name / file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as stream:
                while chunk := response.read(_DOWNLOAD_CHUNK):
                    stream.write(chunk)
        return target

    # ----- helpers ---------------------------------------------------------------------

    def _require_absent(self, endpoint_name: str, name: str) -> None:
        try:
            self.get_deployment(endpoint_name, name)
        except NotFoundError:
            return
        raise api_error(409, "already_exists",
                        f"deployment {name!r} already exists on endpoint {endpoint_name!r}: "
                        "use update to change it")

    def _upload_source(self, kind: str, source: FolderSource | AssetReference,
                       folder: Path | None, default_name: str) -> AssetReference:
        from batchfn.contract.deployment_spec import AssetReference

        if isinstance(source, AssetReference):
            return source
        assert folder is not None  # deployment_document() resolved every FolderSource
        asset = self.upload_asset(kind, source.name or default_name, folder)
        return AssetReference(asset["name"], asset["version"])


def _quote(segment: str) -> str:
    return urllib.parse.quote(str(segment), safe="")


def _name(kind: str, name: str) -> str:
    with local_checks():
        return check_resource_name(kind, name)


def _asset_segment(kind: str) -> str:
    return "models" if kind == "model" else kind


def _deployment_path(endpoint_name: str, name: str) -> str:
    return (f"endpoints/{_name('endpoint', endpoint_name)}/deployments/"
            f"{_name('deployment', name)}")


def attachment_name(disposition: str, default: str) -> str:
    """The file name a Content-Disposition header gives (RFC 5987 `filename*` first, then
    `filename`), reduced to a plain name; `default` when there is none."""
    extended = re.search(r"filename\*=UTF-8''([^;\s]+)", disposition, re.IGNORECASE)
    plain = re.search(r'filename="([^"]*)"', disposition)
    name = (urllib.parse.unquote(extended.group(1)) if extended
            else plain.group(1) if plain else "")
    name = Path(name.replace("\\", "/")).name
    return default if name in ("", ".", "..") else name


def _asset_name(name: str) -> str:
    from batchfn.contract.names import check_asset_name

    with local_checks():
        return check_asset_name(name)
