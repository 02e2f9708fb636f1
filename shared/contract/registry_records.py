"""Registry records: endpoints, deployments and the versioned assets they pin.

Frozen dataclasses, serialised as JSON in blob storage. Validation of user input happens
where records are built (the registry), never on load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .compute_spec import COMPUTE_TYPE, DEFAULT_COMPUTE
from .environment_spec import EnvironmentSpec
from .settings import DeploymentSettings


@dataclass(frozen=True)
class AssetRef:
    """A content-addressed folder in the assets container.

    `kind` is "model" or "code". The folder's files live under `prefix` + `root` + "/"
    (e.g. `models/mnist-classifier-torch/3/` + `model/`), `root` being the uploaded folder's
    own name: Azure ML scripts expect `$AZUREML_MODEL_DIR/<folder name>/...`, so a worker
    downloads `prefix` and points `AZUREML_MODEL_DIR` at it. `digest` is the sha256 over the
    folder's sorted (relative path, file sha256) pairs.
    """

    kind: str
    name: str
    version: str
    digest: str
    prefix: str
    root: str
    files: int = 0
    size: int = 0

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


_ASSET_REF_FIELDS = tuple(f.name for f in fields(AssetRef))


@dataclass(frozen=True)
class AssetVersion:
    """One registered version of a model, code or data asset: its content (`content`) and
    what its owner said of it. A data asset registered from a datastore location has no
    content of its own (an empty digest); `path` is where invoke reads it from, an
    `azureml://datastores/<store>/paths/<path>` URI, for uploaded data too."""

    content: AssetRef
    type: str | None = None  # model: custom_model | mlflow_model; data: uri_folder | uri_file
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    archived: bool = False
    created_at: str = ""
    path: str | None = None

    @property
    def name(self) -> str:
        return self.content.name

    @property
    def version(self) -> str:
        return self.content.version

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.content), "type": self.type, "description": self.description,
                "tags": dict(self.tags), "archived": self.archived,
                "created_at": self.created_at, "path": self.path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AssetVersion:
        return cls(content=AssetRef(**{k: data[k] for k in _ASSET_REF_FIELDS if k in data}),
                   type=data.get("type"), description=data.get("description", ""),
                   tags=dict(data.get("tags") or {}), archived=bool(data.get("archived")),
                   created_at=data.get("created_at", ""), path=data.get("path"))


@dataclass(frozen=True)
class ComputeRecord:
    """A compute: a named scoring pool (contract/compute_spec.py says what each field
    means on Functions). `max_instances` None: no cap (only the built-in default pool);
    `profile` None: the main scoring app serves it."""

    name: str
    size: str | None = None
    profile: str | None = None
    min_instances: int = 0
    max_instances: int | None = None
    tier: str = "dedicated"
    idle_time_before_scale_down: int = 120
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "type": COMPUTE_TYPE, "tags": dict(self.tags)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComputeRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class EnvironmentRecord:
    """A registered environment version: its spec, and what uv resolved it to when it was
    registered (`resolved`: `name==version` lines, for the record; each scoring host
    installs over its own image). `digest` is the spec's (EnvironmentSpec.digest)."""

    name: str
    version: str
    digest: str
    spec: EnvironmentSpec
    resolved: tuple[str, ...] = ()
    created_at: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "digest": self.digest,
                **{k: v for k, v in self.spec.to_dict().items()
                   if k not in ("name", "version", "digest")},
                "resolved": list(self.resolved), "created_at": self.created_at,
                "id": f"azureml:{self.name}:{self.version}"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvironmentRecord:
        return cls(name=data["name"], version=str(data["version"]), digest=data["digest"],
                   spec=EnvironmentSpec.from_dict({k: v for k, v in data.items()
                                                   if k not in ("name", "version")}),
                   resolved=tuple(data.get("resolved") or ()),
                   created_at=data.get("created_at", ""))


@dataclass(frozen=True)
class EndpointRecord:
    name: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    default_deployment: str | None = None
    created_at: str = ""
    updated_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "tags": dict(self.tags),
            "defaults": {"deployment_name": self.default_deployment},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EndpointRecord:
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            tags=dict(data.get("tags") or {}),
            default_deployment=(data.get("defaults") or {}).get("deployment_name"),
            created_at=data.get("created_at", ""),
            updated_at=data.get("updated_at", ""),
        )


@dataclass(frozen=True)
class DeploymentRecord:
    """A deployment as registered. Without `code` (and `scoring_script`) its model is an
    MLflow model that the built-in MLflow scorer scores, as Azure ML does."""

    name: str
    endpoint_name: str
    model: AssetRef
    code: AssetRef | None
    scoring_script: str | None
    settings: DeploymentSettings = field(default_factory=DeploymentSettings)
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    environment_variables: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""
    # The environment its workers run in (None: the scoring image's packages), pinned at
    # create: scoring hosts never read the registry.
    environment: EnvironmentRecord | None = None
    compute: str = DEFAULT_COMPUTE  # the scoring pool its jobs run on
    # The model as the document named it (azureml:<name>@latest): `model` is what it resolved to.
    model_reference: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoint_name": self.endpoint_name,
            "environment": None if self.environment is None else self.environment.to_dict(),
            "description": self.description,
            "tags": dict(self.tags),
            "model": asdict(self.model),
            "model_reference": self.model_reference,
            "compute": self.compute,
            "code_configuration": None if self.code is None else {
                "code": asdict(self.code),
                "scoring_script": self.scoring_script,
            },
            "settings": self.settings.to_dict(),
            "resources": {"instance_count": self.settings.instance_count},
            "environment_variables": dict(self.environment_variables),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentRecord:
        code_cfg = data.get("code_configuration")
        return cls(
            name=data["name"],
            endpoint_name=data["endpoint_name"],
            description=data.get("description", ""),
            tags=dict(data.get("tags") or {}),
            model=AssetRef(**data["model"]),
            code=AssetRef(**code_cfg["code"]) if code_cfg else None,
            scoring_script=code_cfg["scoring_script"] if code_cfg else None,
            settings=DeploymentSettings.from_dict(data.get("settings")),
            environment_variables=dict(data.get("environment_variables") or {}),
            created_at=data.get("created_at", ""),
            updated_at=data.get("updated_at", ""),
            environment=(EnvironmentRecord.from_dict(data["environment"])
                         if data.get("environment") else None),
            compute=data.get("compute") or DEFAULT_COMPUTE,
            model_reference=data.get("model_reference"),
        )
