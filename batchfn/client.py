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

import itertools
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchfn.contract.errors import InvalidRequest
from batchfn.contract.lifecycle_events import END_EVENTS
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
    from batchfn.contract.asset_spec import AssetMetadata
    from batchfn.contract.deployment_spec import AssetReference, FolderSource

__all__ = ["ApiError", "BatchfnClient", "JOB_TERMINAL_STATUSES"]

JOB_TERMINAL_STATUSES = tuple(END_EVENTS)  # Completed, Failed, Canceled, Expired
JOB_END_EVENTS = frozenset(END_EVENTS.values())
PAGE_SIZE = 1000  # items asked for per page of a paged listing (the most a job page holds)
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
        return self.request("POST", f"environments/{_asset_name(spec_name)}/versions", doc)

    def get_environment(self, name: str, version: str = "latest") -> dict[str, Any]:
        """Show one environment version (`latest`: the newest)."""
        return self.request("GET", f"environments/{_asset_name(name)}/versions/"
                                   f"{_quote(version)}")

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
                                    f"{spec.endpoint_name}-{spec.name}-model",
                                    spec.model_type or "custom_model")
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

    # ----- computes --------------------------------------------------------------------

    def create_compute(self, file: str | Path | None = None, *, name: str | None = None,
                       document: Mapping[str, Any] | None = None,
                       replace: bool = False) -> dict[str, Any]:
        """Create a compute (a scoring pool) from compute.yml or a document; `replace`
        creates or replaces."""
        from batchfn.contract.compute_spec import ComputeSpec
        from batchfn.contract.deployment_spec import load_document

        with local_checks():
            doc = dict(document if document is not None
                       else load_document(file) if file else {})
            spec = ComputeSpec.from_document(doc, name=name)
        doc["name"] = spec.name
        return self.request("PUT", f"computes/{spec.name}", doc,
                            headers=None if replace else {"If-None-Match": "*"})

    def get_compute(self, name: str) -> dict[str, Any]:
        """Show one compute."""
        return self.request("GET", f"computes/{_name('compute', name)}")

    def list_computes(self) -> list[dict[str, Any]]:
        """All computes, the built-in `default` among them."""
        return self.request("GET", "computes")["value"]

    def update_compute(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change a compute's size, instance counts, tier, idle time, description or tags."""
        return self.request("PATCH", f"computes/{_name('compute', name)}", dict(changes))

    def delete_compute(self, name: str) -> dict[str, Any]:
        """Delete a compute no deployment uses."""
        return self.request("DELETE", f"computes/{_name('compute', name)}")

    # ----- assets ----------------------------------------------------------------------

    def create_asset(self, kind: str, name: str, path: str | Path,
                     metadata: AssetMetadata | None = None) -> dict[str, Any]:
        """Register a model (a local folder) or a data asset (a local folder or file,
        uploaded to the default datastore; or a datastore path or storage URL, recorded as
        it is). `metadata`: type, description, tags, version. An MLflow model is checked
        here before anything is uploaded."""
        from batchfn.contract.asset_spec import AssetMetadata, is_location

        metadata = metadata or AssetMetadata.from_dict(kind, {})
        text = str(path)
        if kind == "data" and is_location(text):
            return self.request("POST", f"assets/data/{_quote(name)}/versions",
                                {"path": text, **metadata.to_dict()})
        with local_checks():
            local = Path(text)
            if kind == "model" and metadata.type == "mlflow_model":
                _check_mlflow_folder(local)
            if kind == "data" and metadata.type == "uri_file" and not local.is_file():
                raise InvalidRequest(f"a uri_file data asset is one file: {text} is not a file",
                                     details={"path": text}, code="file_not_found")
            if kind == "data" and metadata.type == "uri_folder" and local.is_file():
                raise InvalidRequest(f"{text} is a file: register it with --type uri_file",
                                     details={"path": text}, code="invalid_asset_type")
        return self.upload_asset(kind, name, local, metadata)

    def upload_asset(self, kind: str, name: str, folder: str | Path,
                     metadata: AssetMetadata | None = None) -> dict[str, Any]:
        """Register a folder (or, for data, one file) as an asset version; identical content
        reuses its version."""
        from batchfn.contract.asset_manifest import scan_file, scan_folder
        from batchfn.uploads import upload_files

        with local_checks():
            local = Path(folder)
            manifest = scan_file(local) if kind == "data" and local.is_file() \
                else scan_folder(local)
        segment = _asset_segment(kind)
        extra = metadata.to_dict() if metadata is not None else {}
        grant = self.request("POST", f"assets/{segment}/{_quote(name)}/uploads",
                             manifest.to_dict())
        if grant["exists"] and extra.get("version") in (None, grant["asset"]["version"]):
            return grant["asset"]
        body = {**manifest.to_dict(), **extra}
        if not grant["exists"]:
            upload_files(local.parent if local.is_file() else local, manifest, grant)
            body["upload_id"] = grant["upload_id"]
        # The server checks each staged file's sha256 before it records the version.
        return self.request("POST", f"assets/{segment}/{_quote(name)}/versions", body)

    def get_asset(self, kind: str, name: str, version: str = "latest") -> dict[str, Any]:
        """One asset version (`latest`: the newest not archived)."""
        return self.request("GET", f"assets/{_asset_segment(kind)}/{_quote(name)}/versions/"
                                   f"{_quote(version)}")

    def list_asset_versions(self, kind: str, name: str, *,
                            include_archived: bool = False) -> list[dict[str, Any]]:
        """The versions of an asset, oldest first."""
        return self.request(
            "GET", f"assets/{_asset_segment(kind)}/{_quote(name)}/versions",
            params={"include_archived": include_archived or None})["value"]

    def list_assets(self, kind: str, *, include_archived: bool = False) -> list[dict[str, Any]]:
        """The latest version of every asset of a kind."""
        return self.request("GET", f"assets/{_asset_segment(kind)}",
                            params={"include_archived": include_archived or None})["value"]

    def update_asset(self, kind: str, name: str, version: str,
                     changes: Mapping[str, Any]) -> dict[str, Any]:
        """Archive or restore a version (`archived`), or change its description or tags."""
        return self.request("PATCH", f"assets/{_asset_segment(kind)}/{_quote(name)}/versions/"
                                     f"{_quote(version)}", dict(changes))

    def archive_asset(self, kind: str, name: str, version: str | None = None, *,
                      archived: bool = True) -> Any:
        """Archive (or, `archived=False`, restore) one version, or every version."""
        if version is not None:
            return self.update_asset(kind, name, version, {"archived": archived})
        return self.request("PATCH", f"assets/{_asset_segment(kind)}/{_quote(name)}",
                            {"archived": archived})["value"]

    # ----- jobs ------------------------------------------------------------------------

    def invoke(self, endpoint_name: str, input: str | Path, *, input_type: str | None = None,
               deployment_name: str | None = None, job_name: str | None = None,
               output_path: str | None = None, include_subfolders: bool = False,
               settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Start a batch job; a local file or folder is uploaded first (a storage URL, a
        datastore path or a data asset, `azureml:<name>@latest`, is sent as it is). Returns
        the job."""
        uri = str(input)
        if "://" not in uri and not uri.startswith("azureml:"):
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

    def list_jobs(self, endpoint_name: str | None = None, deployment_name: str | None = None,
                  *, status: str | None = None,
                  max_results: int | None = None) -> list[dict[str, Any]]:
        """Jobs, newest first, optionally of one endpoint / deployment / status: the first
        `max_results` of them (all by default), fetched page by page."""
        return list(itertools.islice(self.iter_jobs(endpoint_name, deployment_name,
                                                    status=status), max_results))

    def iter_jobs(self, endpoint_name: str | None = None, deployment_name: str | None = None,
                  *, status: str | None = None,
                  page_size: int = PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """Jobs, newest first, fetched a page of `page_size` at a time as they are consumed."""
        if endpoint_name and deployment_name:
            path = (f"endpoints/{_quote(endpoint_name)}/deployments/"
                    f"{_quote(deployment_name)}/jobs")
            return self._paged(path, {}, page_size)
        return self._paged("jobs", {"endpoint": endpoint_name, "status": status}, page_size)

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

    def job_errors(self, name: str, top: int | None = None) -> list[dict[str, Any]]:
        """The per-file errors report (its first `top` rows; all by default): file,
        mini-batch, attempts, error, traceback; the failures so far while the job runs."""
        return list(itertools.islice(self.iter_job_errors(name), top))

    def iter_job_errors(self, name: str, page_size: int = PAGE_SIZE
                        ) -> Iterator[dict[str, Any]]:
        """The errors report's rows, fetched a page of `page_size` at a time as they are
        consumed (a report of millions of rows is never held)."""
        return self._paged(f"jobs/{_quote(name)}/errors", {}, page_size)

    def _paged(self, path: str, params: Mapping[str, Any],
               page_size: int) -> Iterator[dict[str, Any]]:
        """The items of a paged listing (`value` + `continuation`), page after page."""
        token = None
        while True:
            page = self.request("GET", path,
                                params={**params, "top": page_size, "continuation": token})
            yield from page["value"]
            token = page.get("continuation")
            if not token:
                return

    def job_usage(self, name: str) -> dict[str, Any]:
        """What a job used and an estimate of its cost (so far, while it runs)."""
        return self.request("GET", f"jobs/{_quote(name)}/usage")

    def job_events(self, name: str) -> list[dict[str, Any]]:
        """A job's lifecycle events so far (CloudEvents 1.0 dicts), oldest first."""
        return self.request("GET", f"jobs/{_quote(name)}/events")["value"]

    def watch_job_events(self, name: str, *, poll: float = 1.0,
                         timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield a job's lifecycle events as they are recorded, each once, until the event
        that ends the job; JobTimeoutError after `timeout` seconds without it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: set[str] = set()
        while True:
            for event in self.job_events(name):
                if event["id"] in seen:
                    continue
                seen.add(event["id"])
                yield event
                if event["type"] in JOB_END_EVENTS:
                    return
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeoutError(f"job {name} has not ended after {timeout}s",
                                      self.get_job(name))
            time.sleep(poll)

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

    def list_job_output(self, name: str, output_name: str = "score") -> list[dict[str, Any]]:
        """The files of a named output folder: `score` holds the merged file (where there is
        one) and every file the script wrote to AZUREML_BI_OUTPUT_PATH."""
        return self.request("GET", f"jobs/{_quote(name)}/outputs/{_quote(output_name)}/"
                                   "files")["value"]

    def download_job_output(self, name: str, output_name: str = "score",
                            download_path: str | Path = ".") -> Path:
        """Save a named output folder as Azure ML does: every file of it under
        <path>/named-outputs/<output>/. Returns the output's own file where it has one (the
        merged file of `score`, errors.jsonl), else the folder (a summary_only job's files).
        NotFoundError when it holds no file (yet)."""
        from batchfn.contract.names import check_relative_path

        files = self.list_job_output(name, output_name)
        if not files:
            job = self.get_job(name)
            raise api_error(404, "output_not_found",
                            f"output {output_name!r} of job {name!r} has no files (job status "
                            f"{job['status']})")
        folder = Path(download_path) / "named-outputs" / output_name
        main = folder
        for entry in files:
            with local_checks():
                relative = check_relative_path(entry["path"], field="output file")
            target = folder.joinpath(*relative.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            path = (f"jobs/{_quote(name)}/outputs/{_quote(output_name)}/files/"
                    + "/".join(_quote(part) for part in relative.split("/")))
            with self.transport.open("GET", path) as response, target.open("wb") as stream:
                while chunk := response.read(_DOWNLOAD_CHUNK):
                    stream.write(chunk)
            if entry.get("main"):
                main = target
        return main

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
                       folder: Path | None, default_name: str,
                       model_type: str | None = None) -> AssetReference:
        from batchfn.contract.asset_spec import AssetMetadata
        from batchfn.contract.deployment_spec import AssetReference

        if isinstance(source, AssetReference):
            return source
        assert folder is not None  # deployment_document() resolved every FolderSource
        metadata = AssetMetadata(type=model_type, description=source.description,
                                 tags=dict(source.tags), version=source.version)
        asset = self.upload_asset(kind, source.name or default_name, folder,
                                  metadata if kind == "model" else None)
        return AssetReference(asset["name"], asset["version"])


def _check_mlflow_folder(folder: Path) -> None:
    """An mlflow_model must be an MLflow model folder the built-in scorer loads."""
    from batchfn.contract.mlmodel import MLMODEL_FILE, is_mlflow_model_folder, read_mlmodel

    if not folder.is_dir():
        raise InvalidRequest(f"folder {str(folder)!r} does not exist or is not a folder",
                             details={"path": str(folder)}, code="folder_not_found")
    if not is_mlflow_model_folder(folder):
        raise InvalidRequest(f"{folder} is not an MLflow model: it has no {MLMODEL_FILE} file "
                             "at the top; register it as custom_model, or the MLflow model's "
                             "own folder", details={"path": str(folder)},
                             code="not_an_mlflow_model")
    read_mlmodel(folder)


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


def _asset_name(name: str) -> str:
    from batchfn.contract.names import check_asset_name

    with local_checks():
        return check_asset_name(name)
