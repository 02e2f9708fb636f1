"""Job verbs of the Python client (mixed into BatchfnClient): invoke, show, list, stream,
download, cancel, rerun, errors. Local inputs are uploaded first through an upload grant."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobClient

TERMINAL_STATUSES = ("Completed", "Failed", "Canceled")
_UPLOAD_THREADS = 8


class JobClientMixin:
    """Needs `request(method, path, body, params=, headers=)`, `url` and `key`."""

    url: str
    key: str | None
    timeout: float
    request: Callable[..., Any]

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
        if path.is_file():
            files = [path.name]
            base = path.parent
        elif path.is_dir():
            files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
            base = path
            if not files:
                raise ValueError(f"{path} has no files to upload")
        else:
            raise FileNotFoundError(f"input {path} is neither a URL nor an existing local path")
        grant = self.request("POST", "data/uploads", {"name": path.name, "files": files})

        def upload(entry: dict[str, str]) -> None:
            with (base / entry["path"]).open("rb") as stream:
                BlobClient.from_blob_url(entry["url"]).upload_blob(stream, overwrite=True)

        with ThreadPoolExecutor(_UPLOAD_THREADS) as pool:
            list(pool.map(upload, grant["files"]))
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
        return self.request("POST", f"jobs/{_quote(name)}/cancel", {})

    def rerun_job(self, name: str, *, failed_only: bool = False,
                  new_name: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"failed_only": failed_only}
        if new_name:
            body["name"] = new_name
        return self.request("POST", f"jobs/{_quote(name)}/rerun", body)

    def job_errors(self, name: str) -> list[dict[str, Any]]:
        """The per-file errors report of a finished job."""
        return self.request("GET", f"jobs/{_quote(name)}/errors")["value"]

    def wait_job(self, name: str, *, poll: float = 0.5, timeout: float | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll a job until it ends; returns the final job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(name)
            if on_progress:
                on_progress(job)
            if job["status"] in TERMINAL_STATUSES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {name} still {job['status']} after {timeout}s")
            time.sleep(poll)

    def download_job_output(self, name: str, output_name: str = "score",
                            download_path: str | Path = ".") -> Path:
        """Save a named output as Azure ML does: <path>/named-outputs/<output>/<file>."""
        from batchfn.client import _api_error

        url = f"{self.url}/api/jobs/{_quote(name)}/outputs/{_quote(output_name)}"
        request = urllib.request.Request(url, method="GET")
        if self.key:
            request.add_header("x-functions-key", self.key)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                disposition = response.headers.get("Content-Disposition", "")
                content = response.read()
        except urllib.error.HTTPError as exc:
            raise _api_error(exc.code, exc.read()) from None
        file_name = disposition.partition('filename="')[2].rstrip('"') or output_name
        target = Path(download_path) / "named-outputs" / output_name / Path(file_name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return target


def _quote(segment: str) -> str:
    return urllib.parse.quote(str(segment), safe="")
