"""Registry records: endpoints, deployments and the versioned assets they pin.

Frozen dataclasses, serialised as JSON in blob storage. Validation of user input happens
where records are built (the registry), never on load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoint_name": self.endpoint_name,
            "environment": None if self.environment is None else self.environment.to_dict(),
            "description": self.description,
            "tags": dict(self.tags),
            "model": asdict(self.model),
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
        )
