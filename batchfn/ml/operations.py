"""Operation groups shaped like azure-ai-ml's (`ml_client.batch_endpoints`, ...), over the
batchfn client. Creating and deleting is synchronous in batchfn: the pollers they return
already hold their result, so `.result()` returns at once, as a finished Azure operation's
does."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from batchfn.client import JOB_TERMINAL_STATUSES, BatchfnClient
from batchfn.contract.errors import InvalidRequest
from batchfn.contract.layout import DEFAULT_DATASTORE
from batchfn.contract.lifecycle_events import JobEvent
from batchfn.errors import local_checks
from batchfn.ml.constants import AssetTypes
from batchfn.ml.entities import (
    AmlCompute,
    BatchDeployment,
    BatchEndpoint,
    BatchJob,
    Data,
    Datastore,
    Input,
    Model,
    ModelBatchDeployment,
    Output,
)
from batchfn.output import progress_line

T = TypeVar("T")
log = logging.getLogger("batchfn.ml")

# params_override keys of Azure ML's invoke, and the batchfn job setting each one sets.
_PARAMS_OVERRIDE_SETTINGS = {
    "mini_batch_size": "mini_batch_size",
    "compute.instance_count": "instance_count",
    "instance_count": "instance_count",
    "output_file_name": "output_file_name",
    "error_threshold": "error_threshold",
    "retry_settings.max_retries": "retry_settings.max_retries",
    "retry_settings.timeout": "retry_settings.timeout",
    "logging_level": "logging_level",
    "deadline": "deadline",
    # batchfn's own: tabular inputs split by rows (docs/tabular.md)
    "input_format": "input_format",
    "passthrough_columns": "passthrough_columns",
}
_COMPUTE_UPDATABLE = ("size", "tier", "min_instances", "max_instances",
                      "idle_time_before_scale_down", "description", "tags")
_OUTPUT_DATASTORE = "output_dataset.datastore_id"
_OUTPUT_PATH = "output_dataset.path"
_INPUT_TYPES = (AssetTypes.URI_FOLDER, AssetTypes.URI_FILE)


class Poller(Generic[T]):
    """The result of a long-running operation (azure-core's LROPoller surface)."""

    def __init__(self, resolve: Callable[[float | None], T]) -> None:
        self._resolve = resolve
        self._done = False
        self._result: T | None = None

    @classmethod
    def finished(cls, result: T) -> Poller[T]:
        """A poller of an operation that already completed with `result`."""
        poller = cls(lambda _timeout: result)
        poller.result()
        return poller

    def result(self, timeout: float | None = None) -> T:
        """Wait for the operation (at most `timeout` seconds) and return its result."""
        if not self._done:
            self._result = self._resolve(timeout)
            self._done = True
        return self._result  # type: ignore[return-value]

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the operation to end."""
        self.result(timeout)

    def done(self) -> bool:
        """True once the result is known."""
        return self._done

    def status(self) -> str:
        return "Succeeded" if self._done else "InProgress"


def _note_ignored(kind: str, name: str, answer: dict[str, Any]) -> None:
    for item in answer.pop("ignored", None) or ():
        log.warning("%s %s: batchfn ignores %s: %s", kind, name, item["field"], item["reason"])


class BatchEndpointOperations:
    """`ml_client.batch_endpoints`: create, get, list, delete and invoke endpoints."""

    def __init__(self, client: BatchfnClient) -> None:
        self._client = client

    def begin_create_or_update(self, endpoint: BatchEndpoint) -> Poller[BatchEndpoint]:
        """Create the endpoint, or update its description, tags and default deployment."""
        answer = self._client.create_endpoint(document=endpoint._to_document(), replace=True)
        _note_ignored("endpoint", answer["name"], answer)
        return Poller.finished(BatchEndpoint._from_api(answer, self._client.url))

    def get(self, name: str) -> BatchEndpoint:
        """One endpoint."""
        return BatchEndpoint._from_api(self._client.get_endpoint(name), self._client.url)

    def list(self) -> list[BatchEndpoint]:
        """All endpoints."""
        return [BatchEndpoint._from_api(e, self._client.url)
                for e in self._client.list_endpoints()]

    def begin_delete(self, name: str) -> Poller[None]:
        """Delete an endpoint with its deployments (its jobs are kept)."""
        self._client.delete_endpoint(name)
        return Poller.finished(None)

    def list_jobs(self, endpoint_name: str, *, max_results: int | None = None) -> list[BatchJob]:
        """The jobs of an endpoint, newest first (the newest `max_results` if given)."""
        return [BatchJob._from_api(job) for job in self._client.list_jobs(
            endpoint_name, max_results=max_results)]

    def invoke(self, endpoint_name: str, *, deployment_name: str | None = None,
               inputs: Mapping[str, Input] | None = None, input: Input | None = None,
               job_name: str | None = None,
               params_override: Iterable[Mapping[str, Any]] | None = None,
               outputs: Mapping[str, Output] | None = None, output_path: Any = None,
               output_file_name: str | None = None, mini_batch_size: int | None = None,
               instance_count: int | None = None, deadline: float | str | None = None
               ) -> BatchJob:
        """Start a batch job over one input; a local file or folder is uploaded first.

        `params_override` takes Azure ML's keys (`mini_batch_size`, `compute.instance_count`,
        `output_file_name`, `output_dataset.datastore_id` with `output_dataset.path`, ...).
        `deadline` (seconds, or "30m", "2h", "PT2H") stops new mini-batches after it: the job
        ends Expired with what was scored.
        """
        with local_checks():
            source = _one_input(input, inputs)
            settings, override_path = _params_override(params_override or ())
            target = _output_path(outputs, output_path, settings) or override_path
        for key, value in (("output_file_name", output_file_name),
                           ("mini_batch_size", mini_batch_size),
                           ("instance_count", instance_count), ("deadline", deadline)):
            if value is not None:
                settings[key] = value
        path = os.fspath(source.path)
        # A data asset has its own type; Input's default (uri_folder) does not contradict it.
        input_type = (None if path.startswith("azureml:") and not path.startswith("azureml://")
                      and source.type == AssetTypes.URI_FOLDER else source.type)
        answer = self._client.invoke(
            endpoint_name, path, input_type=input_type, deployment_name=deployment_name,
            job_name=job_name, output_path=target, settings=settings)
        return BatchJob._from_api(answer)


class BatchDeploymentOperations:
    """`ml_client.batch_deployments`: create, get, list and delete deployments."""

    def __init__(self, client: BatchfnClient) -> None:
        self._client = client

    def begin_create_or_update(self, deployment: ModelBatchDeployment | BatchDeployment, *,
                               skip_script_validation: bool = False
                               ) -> Poller[ModelBatchDeployment]:
        """Create or replace a deployment; local model and code folders (relative to the
        working directory, as in azure-ai-ml) are uploaded first."""
        answer = self._client.create_deployment(document=deployment._to_document(),
                                                base_dir=Path.cwd(), replace=True)
        _note_ignored("deployment", answer["name"], answer)
        return Poller.finished(ModelBatchDeployment._from_api(answer))

    def get(self, name: str, endpoint_name: str) -> ModelBatchDeployment:
        """One deployment of an endpoint."""
        return ModelBatchDeployment._from_api(self._client.get_deployment(endpoint_name, name))

    def list(self, endpoint_name: str) -> list[ModelBatchDeployment]:
        """The deployments of an endpoint."""
        return [ModelBatchDeployment._from_api(d)
                for d in self._client.list_deployments(endpoint_name)]

    def begin_delete(self, name: str, endpoint_name: str) -> Poller[None]:
        """Delete a deployment (its jobs are kept)."""
        self._client.delete_deployment(endpoint_name, name)
        return Poller.finished(None)

    def list_jobs(self, endpoint_name: str, *, name: str | None = None,
                  max_results: int | None = None) -> list[BatchJob]:
        """The jobs of an endpoint, or of one of its deployments, newest first (the newest
        `max_results` if given)."""
        return [BatchJob._from_api(job) for job in self._client.list_jobs(
            endpoint_name, name, max_results=max_results)]


class JobOperations:
    """`ml_client.jobs`: get, list, stream, download and cancel batch jobs."""

    def __init__(self, client: BatchfnClient) -> None:
        self._client = client

    def get(self, name: str) -> BatchJob:
        """A job with its status and progress."""
        return BatchJob._from_api(self._client.get_job(name))

    def list(self, *, max_results: int | None = None) -> list[BatchJob]:
        """All jobs, newest first (the newest `max_results` if given), fetched page by
        page."""
        return [BatchJob._from_api(job)
                for job in self._client.list_jobs(max_results=max_results)]

    def stream(self, name: str, *, poll: float = 1.0) -> None:
        """Print the job's progress until it ends; JobError unless it Completed."""
        shown = [""]

        def show(job: dict[str, Any]) -> None:
            line = progress_line(job, job["status"] in JOB_TERMINAL_STATUSES)
            if line != shown[0]:
                print(f"{name}: {line}", flush=True)
                shown[0] = line

        self._client.wait_job(name, poll=poll, on_progress=show, require_completed=True)

    def download(self, name: str, *, download_path: str | os.PathLike[str] = ".",
                 output_name: str | None = None, all: bool = False) -> None:
        """Save output folders to `<download_path>/named-outputs/<output>/`: `score` (the
        merged file and every file the script wrote to AZUREML_BI_OUTPUT_PATH) by default,
        every output with `all`."""
        names = ("score", "errors") if all else (output_name or "score",)
        for output in names:
            self._client.download_job_output(name, output, download_path)

    def list_events(self, name: str) -> list[JobEvent]:
        """The job's lifecycle events so far (CloudEvents 1.0), oldest first."""
        return [JobEvent.from_dict(event) for event in self._client.job_events(name)]

    def stream_events(self, name: str, *, poll: float = 1.0,
                      timeout: float | None = None) -> Iterator[JobEvent]:
        """Yield the job's lifecycle events as they happen, each once, ending with the
        event that ends the job (completed, failed, canceled or expired)."""
        for event in self._client.watch_job_events(name, poll=poll, timeout=timeout):
            yield JobEvent.from_dict(event)

    def get_usage(self, name: str) -> dict[str, Any]:
        """What the job used and an estimate of its cost (so far, while it runs)."""
        return self._client.job_usage(name)

    def begin_cancel(self, name: str) -> Poller[None]:
        """Ask a job to stop; `.result()` waits until it has."""
        self._client.cancel_job(name)

        def stopped(timeout: float | None) -> None:
            self._client.wait_job(name, timeout=timeout)

        return Poller(stopped)


class _AssetOperations:
    """What `ml_client.models` and `ml_client.data` share: get, list, archive, restore."""

    kind = ""

    def __init__(self, client: BatchfnClient) -> None:
        self._client = client

    def _entity(self, asset: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _register(self, name: str | None, path: Any, **metadata: Any) -> dict[str, Any]:
        from batchfn.contract.asset_spec import AssetMetadata

        with local_checks():
            if not name or path is None:
                raise InvalidRequest(f"a {self.kind} to register needs a name and a path",
                                     code=f"invalid_{self.kind}")
            given = {key: value for key, value in metadata.items() if value is not None}
            checked = AssetMetadata.from_dict(self.kind, given)
        return self._client.create_asset(self.kind, name, os.fspath(path), checked)

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Any:
        """A version; the newest not archived with `label="latest"` or without a version."""
        return self._entity(self._client.get_asset(self.kind, name, version or "latest"))

    def list(self, name: str | None = None, *, archived_only: bool = False,
             include_archived: bool = False) -> list[Any]:
        """The versions of `name` (oldest first), or the latest version of every asset."""
        wide = archived_only or include_archived
        found = (self._client.list_asset_versions(self.kind, name, include_archived=wide)
                 if name else self._client.list_assets(self.kind, include_archived=wide))
        return [self._entity(a) for a in found if a["archived"] or not archived_only]

    def archive(self, name: str, version: str | None = None, label: str | None = None) -> None:
        """Archive a version (or, without one, every version): @latest then skips it."""
        self._client.archive_asset(self.kind, name, _version(version, label), archived=True)

    def restore(self, name: str, version: str | None = None, label: str | None = None) -> None:
        """Restore an archived version (or every version)."""
        self._client.archive_asset(self.kind, name, _version(version, label), archived=False)


class ModelOperations(_AssetOperations):
    """`ml_client.models`: register local model folders, get, list, archive, restore."""

    kind = "model"

    def _entity(self, asset: dict[str, Any]) -> Model:
        return Model._from_api(asset)

    def create_or_update(self, model: Model) -> Model:
        """Register a local folder as the model `name` (identical content: same version);
        an mlflow_model is checked to be one first."""
        asset = self._register(model.name, model.path, type=model.type,
                               description=model.description, tags=model.tags,
                               version=model.version)
        return Model._from_api(asset, like=model)


class DataOperations(_AssetOperations):
    """`ml_client.data`: register data assets (a local folder or file, uploaded once; or a
    datastore path), get, list, archive, restore."""

    kind = "data"

    def _entity(self, asset: dict[str, Any]) -> Data:
        return Data._from_api(asset)

    def create_or_update(self, data: Data) -> Data:
        """Register `data.path` as the data asset `name` (identical content: same version)."""
        return Data._from_api(self._register(data.name, data.path, type=data.type,
                                             description=data.description, tags=data.tags,
                                             version=data.version))


class ComputeOperations:
    """`ml_client.compute`: scoring pools (AmlCompute) to create, get, list, update, delete."""

    def __init__(self, client: BatchfnClient) -> None:
        self._client = client

    def begin_create_or_update(self, compute: AmlCompute) -> Poller[AmlCompute]:
        """Create or replace a compute."""
        answer = self._client.create_compute(document=compute._to_document(), replace=True)
        _note_ignored("compute", answer["name"], answer)
        return Poller.finished(AmlCompute._from_api(answer))

    def begin_update(self, compute: AmlCompute) -> Poller[AmlCompute]:
        """Update a compute's instance counts, idle time, size, tier, description, tags."""
        changes = {key: value for key, value in compute._to_document().items()
                   if key in _COMPUTE_UPDATABLE}
        answer = self._client.update_compute(compute.name, changes)
        _note_ignored("compute", answer["name"], answer)
        return Poller.finished(AmlCompute._from_api(answer))

    def get(self, name: str) -> AmlCompute:
        """One compute."""
        return AmlCompute._from_api(self._client.get_compute(name))

    def list(self, *, compute_type: str | None = None) -> list[AmlCompute]:
        """All computes, the built-in default among them."""
        return [AmlCompute._from_api(c) for c in self._client.list_computes()
                if compute_type is None or c["type"] == compute_type.lower()]

    def begin_delete(self, name: str) -> Poller[None]:
        """Delete a compute no deployment uses."""
        self._client.delete_compute(name)
        return Poller.finished(None)


class DatastoreOperations:
    """`ml_client.datastores`: the datastores batchfn's jobs read and write."""

    def get_default(self) -> Datastore:
        """The default datastore (`workspaceblobstore`)."""
        return Datastore(name=DEFAULT_DATASTORE)

    def get(self, name: str) -> Datastore:
        """A datastore by name."""
        with local_checks():
            if name != DEFAULT_DATASTORE:
                raise InvalidRequest(f"unknown datastore {name!r}; batchfn has "
                                     f"{DEFAULT_DATASTORE}", code="datastore_not_found")
        return Datastore(name=name)

    def list(self) -> list[Datastore]:
        """All datastores."""
        return [self.get_default()]


def _version(version: str | None, label: str | None) -> str | None:
    """A version to act on: a number, or (label latest) the newest not archived."""
    return version if version is not None else ("latest" if label == "latest" else None)


def _one_input(input: Input | None, inputs: Mapping[str, Input] | None) -> Input:
    if input is not None and inputs:
        raise InvalidRequest("give input or inputs, not both", code="invalid_input")
    if input is None:
        if not inputs or len(inputs) != 1:
            raise InvalidRequest("a model deployment takes exactly one input",
                                 code="invalid_input")
        (input,) = inputs.values()
    if not isinstance(input, Input) or input.path is None:
        raise InvalidRequest("the input must be an Input with a path", code="invalid_input")
    if input.type not in _INPUT_TYPES:
        raise InvalidRequest(f"input type {input.type!r} is not supported: use "
                             + " or ".join(_INPUT_TYPES), code="invalid_input")
    return input


def _params_override(overrides: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """(job settings, output path) from Azure ML's params_override list."""
    flat: dict[str, Any] = {}
    for item in overrides:
        if not isinstance(item, Mapping):
            raise InvalidRequest("params_override must be a list of {key: value} mappings",
                                 code="invalid_override")
        flat.update(item)
    settings: dict[str, Any] = {}
    for key, value in flat.items():
        if key in (_OUTPUT_DATASTORE, _OUTPUT_PATH):
            continue
        if key not in _PARAMS_OVERRIDE_SETTINGS:
            raise InvalidRequest(
                f"params_override key {key!r} is not supported; supported: "
                + ", ".join(sorted([*_PARAMS_OVERRIDE_SETTINGS, _OUTPUT_DATASTORE,
                                    _OUTPUT_PATH])), code="invalid_override")
        settings[_PARAMS_OVERRIDE_SETTINGS[key]] = value
    if _OUTPUT_DATASTORE not in flat and _OUTPUT_PATH not in flat:
        return settings, None
    datastore = str(flat.get(_OUTPUT_DATASTORE) or DEFAULT_DATASTORE).removeprefix("azureml:")
    name = datastore.rstrip("/").rpartition("datastores/")[2] or datastore
    path = str(flat.get(_OUTPUT_PATH) or "").strip("/")
    return settings, f"azureml://datastores/{name}/paths/{path}"


def _output_path(outputs: Mapping[str, Output] | None, output_path: Any,
                 settings: dict[str, Any]) -> str | None:
    """The output folder of `outputs={"score": Output(...)}` or the older `output_path`."""
    given = output_path
    if outputs:
        if len(outputs) != 1:
            raise InvalidRequest("a model deployment has one output (score)",
                                 code="invalid_output")
        given = next(iter(outputs.values()))
    if isinstance(given, Mapping):  # the older form: output_path={"score": Input(path=...)}
        given = next(iter(given.values()), None)
    if given is None:
        return None
    path = given if isinstance(given, str) else getattr(given, "path", None)
    if not isinstance(path, str) or not path:
        raise InvalidRequest("the output needs a path", code="invalid_output")
    if getattr(given, "type", None) == AssetTypes.URI_FILE:
        path, _, file_name = path.rstrip("/").rpartition("/")
        settings["output_file_name"] = file_name
    return path
