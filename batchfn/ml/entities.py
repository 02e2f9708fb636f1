"""Entities shaped like azure-ai-ml's batch entities (`azure.ai.ml.entities`).

They are mutable, keyword-only, with azure-ai-ml's names and defaults, so notebook code
that builds or edits them (`endpoint.defaults.deployment_name = ...`) runs unchanged.
Each converts to the Azure ML YAML document batchfn's API takes (`_to_document`) and back
from the API's answer (`_from_api`); fields batchfn does not use travel along and come
back as the API's `ignored` note.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from batchfn.ml.constants import AssetTypes


def _drop_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


def _path(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


@dataclass(kw_only=True)
class Input:
    """A job input: a local file or folder (uploaded first), a storage URL of batchfn's
    account, `azureml://datastores/<name>/paths/<path>`, or a data asset
    (`azureml:<name>@latest`, `azureml:<name>:<version>`)."""

    type: str = AssetTypes.URI_FOLDER
    path: str | os.PathLike[str] | None = None
    mode: str | None = None
    optional: bool | None = None
    description: str | None = None


@dataclass(kw_only=True)
class Output:
    """A job output location: a folder (`uri_folder`) or a file (`uri_file`)."""

    type: str = AssetTypes.URI_FOLDER
    path: str | None = None
    mode: str | None = None
    description: str | None = None


@dataclass(kw_only=True)
class BatchRetrySettings:
    """Retries of a failed or timed-out mini-batch, and the timeout of one `run()`."""

    max_retries: int | None = None
    timeout: int | None = None


@dataclass(kw_only=True)
class CodeConfiguration:
    """The scoring code: a local folder (or registered code) and the script in it."""

    code: str | os.PathLike[str] | None = None
    scoring_script: str | os.PathLike[str] | None = None


@dataclass(kw_only=True)
class ResourceConfiguration:
    """`resources:` of a deployment; batchfn honours `instance_count`."""

    instance_count: int | None = None
    instance_type: str | None = None
    properties: dict[str, Any] | None = None


@dataclass(kw_only=True)
class Model:
    """A model: a local folder to register (`path`) or a registered one (`name`, `version`)."""

    name: str | None = None
    version: str | None = None
    type: str | None = None
    path: str | os.PathLike[str] | None = None
    description: str | None = None
    tags: dict[str, str] | None = None
    properties: dict[str, str] | None = None
    flavors: dict[str, Any] | None = None
    stage: str | None = None
    id: str | None = None  # set by the service: azureml:<name>:<version>

    def _to_document(self) -> dict[str, Any] | str:
        if self.path is None and self.name and self.version:
            if self.type is None:
                return f"azureml:{self.name}:{self.version}"
            return {"name": self.name, "version": str(self.version), "type": self.type}
        return _drop_none({"name": self.name, "path": _path(self.path), "type": self.type,
                           "version": self.version, "description": self.description,
                           "tags": self.tags, "properties": self.properties,
                           "flavors": self.flavors, "stage": self.stage})

    @classmethod
    def _from_api(cls, asset: dict[str, Any], like: Model | None = None) -> Model:
        kept = like or cls()
        return cls(name=asset["name"], version=str(asset["version"]),
                   type=asset.get("type") or kept.type,
                   description=asset.get("description") or kept.description,
                   tags=dict(asset.get("tags") or kept.tags or {}),
                   properties=kept.properties, flavors=kept.flavors,
                   stage="Archived" if asset.get("archived") else None,
                   id=f"azureml:{asset['name']}:{asset['version']}")


@dataclass(kw_only=True)
class Data:
    """A data asset: a local folder or file to register (`path`, uploaded to the default
    datastore), a datastore path or storage URL, or a registered one (`name`, `version`)."""

    name: str | None = None
    version: str | None = None
    description: str | None = None
    tags: dict[str, str] | None = None
    properties: dict[str, str] | None = None
    type: str = AssetTypes.URI_FOLDER
    path: str | os.PathLike[str] | None = None
    datastore: str | None = None
    id: str | None = None  # set by the service: azureml:<name>:<version>

    @classmethod
    def _from_api(cls, asset: dict[str, Any]) -> Data:
        return cls(name=asset["name"], version=str(asset["version"]),
                   description=asset.get("description") or None,
                   tags=dict(asset.get("tags") or {}), type=asset.get("type") or "uri_folder",
                   path=asset.get("path"), id=f"azureml:{asset['name']}:{asset['version']}")


@dataclass(kw_only=True)
class AmlCompute:
    """A compute: in batchfn a named scoring pool. `max_instances` caps the scoring hosts its
    jobs use at once, `min_instances` is what to keep warm, `size` picks the scoring profile
    (T4 or A100 GPU, or CPU). SSH, network and identity settings have no meaning here."""

    name: str
    description: str | None = None
    size: str | None = None
    tags: dict[str, str] | None = None
    ssh_public_access_enabled: bool | None = None
    ssh_settings: Any = None
    min_instances: int | None = 0
    max_instances: int | None = 4
    network_settings: Any = None
    idle_time_before_scale_down: int | None = 120
    identity: Any = None
    tier: str | None = None
    enable_node_public_ip: bool = True
    type: str = "amlcompute"
    location: str | None = None
    provisioning_state: str | None = None
    id: str | None = None

    def _to_document(self) -> dict[str, Any]:
        # Settings with no meaning for a scoring pool go along only when the user set them,
        # so batchfn notes them as ignored.
        return _drop_none({
            "name": self.name, "type": self.type, "description": self.description,
            "size": self.size, "tags": self.tags, "min_instances": self.min_instances,
            "max_instances": self.max_instances,
            "idle_time_before_scale_down": self.idle_time_before_scale_down,
            "tier": self.tier, "ssh_public_access_enabled": self.ssh_public_access_enabled,
            "ssh_settings": self.ssh_settings, "network_settings": self.network_settings,
            "identity": self.identity, "location": self.location,
            "enable_node_public_ip": None if self.enable_node_public_ip else False})

    @classmethod
    def _from_api(cls, record: dict[str, Any]) -> AmlCompute:
        return cls(name=record["name"], description=record.get("description") or None,
                   size=record.get("size"), tags=dict(record.get("tags") or {}),
                   min_instances=record.get("min_instances"),
                   max_instances=record.get("max_instances"),
                   idle_time_before_scale_down=record.get("idle_time_before_scale_down"),
                   tier=record.get("tier"), provisioning_state="Succeeded",
                   id=f"azureml:{record['name']}")


@dataclass(kw_only=True)
class Environment:
    """An environment: `conda_file` (a path, or a mapping) gives the Python version and pip
    packages the deployment's workers run with; `image` is kept, not used (docs)."""

    name: str | None = None
    version: str | None = None
    description: str | None = None
    image: str | None = None
    conda_file: str | os.PathLike[str] | None = None
    build: Any = None
    tags: dict[str, str] | None = None
    properties: dict[str, str] | None = None

    def _to_document(self) -> dict[str, Any]:
        conda = self.conda_file if isinstance(self.conda_file, dict) else _path(self.conda_file)
        return _drop_none({"name": self.name, "version": self.version, "image": self.image,
                           "description": self.description, "conda_file": conda})


@dataclass(kw_only=True)
class BatchEndpointDefaults:
    """`defaults:` of an endpoint: the deployment an invoke without one goes to."""

    deployment_name: str | None = None


@dataclass(kw_only=True)
class BatchEndpoint:
    """A batch endpoint."""

    name: str | None = None
    description: str | None = None
    tags: dict[str, str] | None = None
    properties: dict[str, str] | None = None
    auth_mode: str = "aad_token"
    defaults: BatchEndpointDefaults | dict[str, str] | None = None
    location: str | None = None
    scoring_uri: str | None = None
    openapi_uri: str | None = None
    provisioning_state: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.defaults, dict):
            self.defaults = BatchEndpointDefaults(**self.defaults)
        elif self.defaults is None:
            self.defaults = BatchEndpointDefaults()

    def _to_document(self) -> dict[str, Any]:
        defaults = self.defaults if isinstance(self.defaults, BatchEndpointDefaults) else None
        default = defaults.deployment_name if defaults else None
        # Sent only when the user chose one: Azure ML's default would only earn a note.
        auth_mode = None if self.auth_mode == "aad_token" else self.auth_mode
        return _drop_none({"name": self.name, "description": self.description,
                           "tags": self.tags, "properties": self.properties,
                           "auth_mode": auth_mode,
                           "defaults": {"deployment_name": default} if default else None})

    @classmethod
    def _from_api(cls, record: dict[str, Any], base_url: str) -> BatchEndpoint:
        defaults = record.get("defaults") or {}
        return cls(name=record["name"], description=record.get("description"),
                   tags=dict(record.get("tags") or {}),
                   defaults=BatchEndpointDefaults(deployment_name=defaults.get("deployment_name")),
                   scoring_uri=f"{base_url}/api/endpoints/{record['name']}/jobs",
                   openapi_uri=f"{base_url}/api/openapi.json", provisioning_state="Succeeded")


@dataclass(kw_only=True)
class ModelBatchDeploymentSettings:
    """How a model deployment scores: Azure ML's settings, defaults applied by batchfn."""

    mini_batch_size: int | None = None
    instance_count: int | None = None
    max_concurrency_per_instance: int | None = None
    output_action: str | None = None
    output_file_name: str | None = None
    retry_settings: BatchRetrySettings | None = None
    environment_variables: dict[str, str] | None = None
    error_threshold: int | None = None
    logging_level: str | None = None

    def _to_document(self) -> dict[str, Any]:
        retry = _drop_none(asdict(self.retry_settings)) if self.retry_settings else None
        return _drop_none({**{key: getattr(self, key) for key in _SETTING_FIELDS},
                           "retry_settings": retry or None})


_SETTING_FIELDS = ("mini_batch_size", "instance_count", "max_concurrency_per_instance",
                   "output_action", "output_file_name", "environment_variables",
                   "error_threshold", "logging_level")


@dataclass(kw_only=True)
class _DeploymentBase:
    name: str | None = None
    endpoint_name: str | None = None
    description: str | None = None
    tags: dict[str, str] | None = None
    properties: dict[str, str] | None = None
    model: Model | str | None = None
    code_configuration: CodeConfiguration | None = None
    environment: Environment | str | None = None
    compute: str | None = None
    resources: ResourceConfiguration | None = None
    code_path: str | os.PathLike[str] | None = None  # promoted from code_configuration.code
    scoring_script: str | os.PathLike[str] | None = None  # ... and its scoring_script
    provisioning_state: str | None = None

    def __post_init__(self) -> None:
        if self.code_configuration is None and (self.code_path or self.scoring_script):
            self.code_configuration = CodeConfiguration(code=self.code_path,
                                                        scoring_script=self.scoring_script)

    def _common_document(self) -> dict[str, Any]:
        code = self.code_configuration
        model = self.model._to_document() if isinstance(self.model, Model) else self.model
        environment = (self.environment._to_document()
                       if isinstance(self.environment, Environment) else self.environment)
        resources = (_drop_none(asdict(self.resources)) if self.resources else None) or None
        return _drop_none({
            "name": self.name, "endpoint_name": self.endpoint_name,
            "description": self.description, "tags": self.tags, "properties": self.properties,
            "model": model, "environment": environment, "compute": self.compute,
            "resources": resources,
            "code_configuration": _drop_none({"code": _path(code.code),
                                              "scoring_script": _path(code.scoring_script)})
            if code else None,
        })


@dataclass(kw_only=True)
class ModelBatchDeployment(_DeploymentBase):
    """A model deployment with its `settings` (Azure ML's `type: model` form)."""

    settings: ModelBatchDeploymentSettings | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.settings is None:
            self.settings = ModelBatchDeploymentSettings()

    def _to_document(self) -> dict[str, Any]:
        settings = self.settings._to_document() if self.settings else {}
        return _drop_none({**self._common_document(), "type": "model",
                           "settings": settings or None})

    @classmethod
    def _from_api(cls, record: dict[str, Any]) -> ModelBatchDeployment:
        settings = record.get("settings") or {}
        retry = settings.get("retry_settings") or {}
        code = record.get("code_configuration")  # None: an MLflow model without a script
        return cls(
            name=record["name"], endpoint_name=record["endpoint_name"],
            description=record.get("description"), tags=dict(record.get("tags") or {}),
            model=Model._from_api(record["model"]), compute=record.get("compute"),
            code_configuration=CodeConfiguration(
                code=f"azureml:{code['code']['name']}:{code['code']['version']}",
                scoring_script=code["scoring_script"]) if code else None,
            resources=ResourceConfiguration(instance_count=settings.get("instance_count")),
            settings=ModelBatchDeploymentSettings(
                **{key: settings.get(key) for key in _SETTING_FIELDS
                   if key != "environment_variables"},
                retry_settings=BatchRetrySettings(max_retries=retry.get("max_retries"),
                                                  timeout=retry.get("timeout")),
                environment_variables=dict(record.get("environment_variables") or {})),
            provisioning_state="Succeeded",
        )


@dataclass(kw_only=True)
class BatchDeployment(_DeploymentBase):
    """A deployment in Azure ML's older form: the settings at the top level."""

    output_file_name: str | None = None
    output_action: str | None = None
    error_threshold: int | None = None
    retry_settings: BatchRetrySettings | None = None
    logging_level: str | None = None
    mini_batch_size: int | None = None
    max_concurrency_per_instance: int | None = None
    environment_variables: dict[str, str] | None = None
    instance_count: int | None = None

    def _to_document(self) -> dict[str, Any]:
        document = self._common_document()
        if self.instance_count is not None:
            document["resources"] = {**document.get("resources", {}),
                                     "instance_count": self.instance_count}
        retry = _drop_none(asdict(self.retry_settings)) if self.retry_settings else None
        return _drop_none({**document, "output_file_name": self.output_file_name,
                           "output_action": self.output_action,
                           "error_threshold": self.error_threshold,
                           "retry_settings": retry or None, "logging_level": self.logging_level,
                           "mini_batch_size": self.mini_batch_size,
                           "max_concurrency_per_instance": self.max_concurrency_per_instance,
                           "environment_variables": self.environment_variables})


@dataclass(kw_only=True)
class Datastore:
    """A datastore jobs may read and write (`azureml://datastores/<name>/paths/...`)."""

    name: str
    type: str = "azure_blob"

    @property
    def id(self) -> str:
        return f"/datastores/{self.name}"


@dataclass(kw_only=True)
class BatchJob:
    """A batch scoring job as the API shows it: status, progress, output location."""

    name: str
    status: str
    endpoint_name: str | None = None
    deployment_name: str | None = None
    reason: str | None = None
    progress: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    status_url: str | None = None
    deadline_at: str | None = None
    partial: bool = False  # the output holds only what was scored before a cancel or deadline

    @classmethod
    def _from_api(cls, record: dict[str, Any]) -> BatchJob:
        return cls(name=record["name"], status=record["status"],
                   endpoint_name=record.get("endpoint_name"),
                   deployment_name=record.get("deployment_name"), reason=record.get("reason"),
                   progress=record.get("progress"), outputs=dict(record.get("output") or {}),
                   created_at=record.get("created_at"), started_at=record.get("started_at"),
                   ended_at=record.get("ended_at"), status_url=record.get("status_url"),
                   deadline_at=record.get("deadline_at"), partial=bool(record.get("partial")))
