"""Azure ML `endpoint.yml` / `deployment.yml` documents, parsed and validated.

The same parser reads a user's YAML file (CLI/client: model and code may be local folders,
relative to the YAML file) and an API body (model and code must be registered assets,
`azureml:<name>:<version>`). Keys batchfn does not use (`$schema`, `environment`,
`compute`, ...) are accepted and reported back in `ignored`, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.assets import parse_asset_ref
from shared.errors import InvalidRequest
from shared.names import check_asset_name, check_relative_path, check_resource_name
from shared.settings import DeploymentSettings

ENDPOINT_KEYS = frozenset({"name", "description", "tags", "defaults"})
DEPLOYMENT_KEYS = frozenset({
    "name", "endpoint_name", "description", "tags", "type", "model", "code_configuration",
    "settings", "resources", "environment_variables",
})
# Azure ML's older deployment.yml puts these settings at the top level.
LEGACY_SETTING_KEYS = frozenset({
    "mini_batch_size", "max_concurrency_per_instance", "output_action", "output_file_name",
    "retry_settings", "error_threshold", "logging_level",
})


@dataclass(frozen=True)
class FolderSource:
    """A local folder the CLI/client uploads as an asset (`name` None: derived)."""

    path: str
    name: str | None = None


@dataclass(frozen=True)
class AssetReference:
    """An already registered asset: `name` and a version number or "latest"."""

    name: str
    version: str

    @property
    def ref(self) -> str:
        return f"azureml:{self.name}:{self.version}"


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    default_deployment: str | None = None
    ignored: tuple[str, ...] = ()

    @classmethod
    def from_document(cls, data: Any, *, name: str | None = None) -> EndpointSpec:
        """Validate an endpoint document; `name` (CLI --name or URL) wins over the file."""
        doc = _mapping(data, "endpoint document")
        defaults = _mapping(doc.get("defaults") or {}, "defaults")
        default = defaults.get("deployment_name")
        if default is not None:
            check_resource_name("deployment", default)
        return cls(
            name=check_resource_name("endpoint", name if name is not None else doc.get("name")),
            description=text_field(doc.get("description"), "description"),
            tags=string_map(doc.get("tags"), "tags"),
            default_deployment=default,
            ignored=_ignored(doc, ENDPOINT_KEYS),
        )


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    endpoint_name: str
    model: FolderSource | AssetReference
    code: FolderSource | AssetReference
    scoring_script: str
    settings: DeploymentSettings = field(default_factory=DeploymentSettings)
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    environment_variables: dict[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()

    @classmethod
    def from_document(cls, data: Any, *, endpoint_name: str | None = None,
                      name: str | None = None) -> DeploymentSpec:
        """Validate a deployment document; explicit names win over the file's."""
        doc = _mapping(data, "deployment document")
        kind = doc.get("type", "model")
        if kind != "model":
            raise InvalidRequest(f"deployment type {kind!r} is not supported: only 'model'",
                                 details={"field": "type"}, code="invalid_deployment")
        endpoint = check_resource_name(
            "endpoint", endpoint_name if endpoint_name is not None else doc.get("endpoint_name"))
        deployment = check_resource_name(
            "deployment", name if name is not None else doc.get("name"))
        code_cfg = _mapping(doc.get("code_configuration"), "code_configuration")
        if "code" not in code_cfg or "scoring_script" not in code_cfg:
            raise InvalidRequest("code_configuration needs 'code' (a folder) and 'scoring_script'",
                                 details={"field": "code_configuration"},
                                 code="invalid_deployment")
        resources = _mapping(doc.get("resources") or {}, "resources")
        merged: dict[str, Any] = {k: doc[k] for k in LEGACY_SETTING_KEYS if k in doc}
        if "instance_count" in resources:
            merged["instance_count"] = resources["instance_count"]
        merged.update(_mapping(doc.get("settings") or {}, "settings"))
        ignored = _ignored(doc, DEPLOYMENT_KEYS | LEGACY_SETTING_KEYS)
        ignored += tuple(f"resources.{k}" for k in sorted(resources) if k != "instance_count")
        return cls(
            name=deployment,
            endpoint_name=endpoint,
            model=_model_source(doc.get("model")),
            code=_code_source(code_cfg["code"]),
            scoring_script=check_relative_path(code_cfg["scoring_script"],
                                               field="scoring_script"),
            settings=DeploymentSettings.from_dict(merged),
            description=text_field(doc.get("description"), "description"),
            tags=string_map(doc.get("tags"), "tags"),
            environment_variables=string_map(doc.get("environment_variables"),
                                              "environment_variables"),
            ignored=ignored,
        )


def load_document(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) file into a mapping; InvalidRequest with the line if malformed."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRequest(f"file {str(file)!r} does not exist", code="file_not_found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read {str(file)!r}: {exc}", code="invalid_file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidRequest(f"{file.name} is not valid YAML{where}: {problem}",
                             details={"file": str(file)}, code="invalid_yaml") from None
    return _mapping(data, file.name)


def with_uploaded_assets(document: Mapping[str, Any], model: AssetReference,
                         code: AssetReference) -> dict[str, Any]:
    """The document as the API takes it: local folders replaced by their registered assets."""
    body = dict(document)
    body["model"] = model.ref
    body["code_configuration"] = {**dict(document["code_configuration"]), "code": code.ref}
    return body


def _model_source(value: Any) -> FolderSource | AssetReference:
    if isinstance(value, str):
        if value.startswith("azureml:"):
            return AssetReference(*parse_asset_ref(value))
        return FolderSource(path=value)
    model = _mapping(value, "model")
    name = model.get("name")
    if name is not None:
        check_asset_name(name)
    if model.get("path"):
        return FolderSource(path=text_field(model["path"], "model.path"), name=name)
    if name is not None and model.get("version") is not None:
        return AssetReference(*parse_asset_ref(f"{name}:{model['version']}"))
    raise InvalidRequest("model needs 'path' (a folder) or a reference "
                         "azureml:<name>:<version> / azureml:<name>@latest",
                         details={"field": "model"}, code="invalid_deployment")


def _code_source(value: Any) -> FolderSource | AssetReference:
    if isinstance(value, str) and value.startswith("azureml:"):
        return AssetReference(*parse_asset_ref(value))
    if not isinstance(value, str) or not value:
        raise InvalidRequest("code_configuration.code must be a folder path or "
                             "azureml:<name>:<version>", code="invalid_deployment")
    return FolderSource(path=value)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{what} must be a mapping, got {type(value).__name__}",
                             details={"field": what}, code="invalid_document")
    return dict(value)


def text_field(value: Any, what: str) -> str:
    """A free-text field: a string, None meaning empty."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string", details={"field": what},
                             code="invalid_document")
    return value


def string_map(value: Any, what: str) -> dict[str, str]:
    """A str -> str mapping (tags, environment variables); scalar values become strings."""
    if value is None:
        return {}
    mapping = _mapping(value, what)
    return {str(k): "" if v is None else str(v) for k, v in mapping.items()}


def _ignored(doc: Mapping[str, Any], known: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(k for k in doc if k not in known))
