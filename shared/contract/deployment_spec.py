"""Azure ML `endpoint.yml` / `deployment.yml` documents, parsed and validated.

The same parser reads a user's YAML file (CLI/client: model and code may be local folders,
relative to the YAML file) and an API body (model and code must be registered assets,
`azureml:<name>:<version>`). Every field of Azure ML's batch endpoint and model batch
deployment schemas is accepted, in the `settings:` form and in the older form with the
settings at the top level. `compute` names a scoring pool (contract/compute_spec.py).
Fields batchfn cannot honour (`resources.instance_type`, `auth_mode`, an environment's
`image`, ...) are reported in `ignored`, each with the reason, never an error;
`type: pipeline` deployments are refused with a clear error. `environment` is honoured
(environment_spec.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .asset_manifest import parse_asset_ref
from .environment_spec import IMAGE_NOTE, EnvironmentSpec
from .errors import InvalidRequest
from .names import check_asset_name, check_relative_path, check_resource_name, shown
from .settings import DeploymentSettings

# Azure ML's older deployment.yml puts these settings at the top level.
LEGACY_SETTING_KEYS = frozenset({
    "mini_batch_size", "max_concurrency_per_instance", "output_action", "output_file_name",
    "retry_settings", "error_threshold", "logging_level",
})
CUSTOM_MODEL_TYPE = "custom_model"
MLFLOW_MODEL_TYPE = "mlflow_model"
MODEL_TYPES = (CUSTOM_MODEL_TYPE, MLFLOW_MODEL_TYPE)
AUTH_MODES = ("aad_token", "key", "aml_token")
MAX_ENVIRONMENT_VARIABLES = 256
MAX_ENVIRONMENT_VALUE = 32 * 1024
# All names and values together: a process's environment is limited (Linux: 2 MiB with the
# arguments), and every worker process of the deployment carries it.
MAX_ENVIRONMENT_BYTES = 64 * 1024
# The scoring worker sets these for the script itself: the Azure ML variables, its GPU, its
# math-library threads, its account, home, temp folder and environment.
RESERVED_ENVIRONMENT = frozenset({
    "AZUREML_MODEL_DIR", "AZUREML_BI_OUTPUT_PATH", "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "HOME", "USER", "LOGNAME", "TMPDIR", "TMP", "TEMP", "VIRTUAL_ENV", "PYTHONHOME",
    "PYTHONPATH"})
RESERVED_ENVIRONMENT_PREFIX = "BATCHFN_"
MAX_TEXT = 8 * 1024  # characters of a description or a path
MAX_TAGS = 100
MAX_TAG_KEY = 256
MAX_TAG_VALUE = 1024

_SET_BY_SERVICE = "set by the service, not by the file"
_PIPELINE_ONLY = "belongs to pipeline deployments, which batchfn does not run"
_UNKNOWN = "not a field of Azure ML's batch schema (a typo?)"
_NO_CONTAINERS = "batchfn starts no container per deployment: scoring runs in the scoring app"
_NO_PROPERTIES = "batchfn keeps no free-form properties; use tags"

# Why each Azure ML field that batchfn accepts but cannot honour is ignored.
DEPLOYMENT_IGNORED = {
    "$schema": "an editor hint",
    "properties": _NO_PROPERTIES,
    "id": _SET_BY_SERVICE,
    "provisioning_state": _SET_BY_SERVICE,
    "component": _PIPELINE_ONLY,
    "job_definition": _PIPELINE_ONLY,
}
RESOURCES_IGNORED = {
    "instance_type": "the host size is the scoring profile of the deployment's compute "
                     "(its size), not per deployment",
    "properties": _NO_CONTAINERS,
    "shm_size": _NO_CONTAINERS,
    "docker_args": _NO_CONTAINERS,
}
MODEL_IGNORED = {
    "$schema": "an editor hint",
    "description": "a reference names a registered version; describe it with model update",
    "tags": "a reference names a registered version; tag it with model update",
    "properties": _NO_PROPERTIES,
    "flavors": "an MLflow model's flavors are read from its MLmodel file",
    "stage": "batchfn has no model stages",
    "id": _SET_BY_SERVICE,
    "job_name": _SET_BY_SERVICE,
    "utc_time_created": _SET_BY_SERVICE,
    "datastore": "model folders are uploaded by the CLI/client, not read from a datastore",
}
ENDPOINT_IGNORED = {
    "$schema": "an editor hint",
    "auth_mode": "batchfn authenticates every call with the app's function keys (or Entra ID "
                 "in front of the app), not per endpoint",
    "identity": "jobs read and write storage with the scoring app's managed identity",
    "properties": _NO_PROPERTIES,
    "id": _SET_BY_SERVICE,
    "location": _SET_BY_SERVICE,
    "scoring_uri": _SET_BY_SERVICE,
    "openapi_uri": _SET_BY_SERVICE,
    "provisioning_state": _SET_BY_SERVICE,
}
ENDPOINT_FIELDS = frozenset({"name", "description", "tags", "defaults"})
DEPLOYMENT_FIELDS = frozenset({
    "name", "endpoint_name", "description", "tags", "type", "model", "code_configuration",
    "settings", "resources", "environment_variables", "environment", "compute",
}) | LEGACY_SETTING_KEYS
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")


@dataclass(frozen=True)
class IgnoredField:
    """A field of the document that batchfn accepted but does not use, and why."""

    field: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class FolderSource:
    """A local folder the CLI/client uploads as an asset (`name` None: derived). An inline
    model may say its version (None: the next, or the one with the same content),
    description and tags, recorded with the version it registers."""

    path: str
    name: str | None = None
    version: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)


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
    ignored: tuple[IgnoredField, ...] = ()

    @classmethod
    def from_document(cls, data: Any, *, name: str | None = None) -> EndpointSpec:
        """Validate an endpoint document; `name` (CLI --name or URL) wins over the file."""
        doc = _mapping(data, "endpoint document")
        defaults = _mapping(doc.get("defaults") or {}, "defaults")
        default = defaults.get("deployment_name")
        if default is not None:
            check_resource_name("deployment", default)
        if doc.get("auth_mode") is not None:
            _auth_mode(doc["auth_mode"])
        ignored = _ignored(doc, ENDPOINT_FIELDS, ENDPOINT_IGNORED)
        ignored += _ignored(defaults, frozenset({"deployment_name"}), {}, prefix="defaults.")
        return cls(
            name=check_resource_name("endpoint", name if name is not None else doc.get("name")),
            description=text_field(doc.get("description"), "description"),
            tags=tags_field(doc.get("tags"), "tags"),
            default_deployment=default,
            ignored=ignored,
        )


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    endpoint_name: str
    model: FolderSource | AssetReference
    # None (no code_configuration): an MLflow model scored by the built-in MLflow scorer.
    code: FolderSource | AssetReference | None
    scoring_script: str | None
    settings: DeploymentSettings = field(default_factory=DeploymentSettings)
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    environment_variables: dict[str, str] = field(default_factory=dict)
    model_type: str | None = None  # Azure ML's model.type: custom_model, mlflow_model
    ignored: tuple[IgnoredField, ...] = ()
    # Inline, a registered environment, or None: the scoring image's packages (an MLflow
    # model: its own requirements).
    environment: EnvironmentSpec | AssetReference | None = None
    compute: str | None = None  # the scoring pool named by `compute:`; None: the default one

    @classmethod
    def from_document(cls, data: Any, *, endpoint_name: str | None = None,
                      name: str | None = None, base_dir: Path | None = None
                      ) -> DeploymentSpec:
        """Validate a deployment document; explicit names win over the file's. With
        `base_dir` (the CLI and client) an inline environment's conda_file may be a path
        relative to it."""
        doc = _mapping(data, "deployment document")
        _check_type(doc.get("type"))
        endpoint = check_resource_name(
            "endpoint", endpoint_name if endpoint_name is not None else doc.get("endpoint_name"))
        deployment = check_resource_name(
            "deployment", name if name is not None else doc.get("name"))
        settings, environment = split_settings(doc)
        model, model_type, model_ignored = _model_source(doc.get("model"))
        code_cfg = _code_configuration(doc.get("code_configuration"), model_type)
        ignored = _ignored(doc, DEPLOYMENT_FIELDS, DEPLOYMENT_IGNORED)
        ignored += _ignored(_mapping(doc.get("resources") or {}, "resources"),
                            frozenset({"instance_count"}), RESOURCES_IGNORED,
                            prefix="resources.")
        ignored += _ignored(code_cfg or {}, frozenset({"code", "scoring_script"}), {},
                            prefix="code_configuration.")
        environment_source = environment_field(doc.get("environment"), base_dir)
        if isinstance(environment_source, EnvironmentSpec) and environment_source.image:
            ignored += (IgnoredField("environment.image", IMAGE_NOTE),)
        return cls(
            name=deployment,
            endpoint_name=endpoint,
            model=model,
            code=_code_source(code_cfg["code"]) if code_cfg else None,
            scoring_script=check_relative_path(code_cfg["scoring_script"],
                                               field="scoring_script") if code_cfg else None,
            settings=DeploymentSettings.from_dict(settings),
            description=text_field(doc.get("description"), "description"),
            tags=tags_field(doc.get("tags"), "tags"),
            environment_variables=environment,
            model_type=model_type,
            ignored=tuple(sorted(ignored + model_ignored, key=lambda item: item.field)),
            environment=environment_source,
            compute=None if doc.get("compute") is None else compute_name(doc["compute"]),
        )


def environment_field(value: Any, base_dir: Path | None = None
                      ) -> EnvironmentSpec | AssetReference | None:
    """A deployment's `environment`: absent, `azureml:<name>:<version>|@latest`, or inline."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.startswith("azureml:"):
            raise InvalidRequest(
                f"environment {shown(value)} is not valid: expected azureml:<name>:<version>, "
                "azureml:<name>@latest or an inline environment (conda_file, image, ...)",
                details={"field": "environment"}, code="invalid_environment")
        return AssetReference(*parse_asset_ref(value))
    return EnvironmentSpec.from_document(value, base_dir=base_dir)


def split_settings(doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(settings, environment variables) of a deployment document or update.

    Settings come from `settings:` and from the older top-level keys, `instance_count` also
    from `resources.instance_count`; environment variables from the top-level
    `environment_variables` and `settings.environment_variables`. A value given in two
    places must agree.
    """
    nested = dict(_mapping(doc.get("settings") or {}, "settings"))
    environment = _environment(doc.get("environment_variables"), "environment_variables")
    nested_environment = _environment(nested.pop("environment_variables", None),
                                      "settings.environment_variables")
    settings: dict[str, Any] = {k: doc[k] for k in LEGACY_SETTING_KEYS if k in doc}
    resources = _mapping(doc.get("resources") or {}, "resources")
    if "instance_count" in resources:
        settings["instance_count"] = resources["instance_count"]
    for key, value in nested.items():
        if key in settings and settings[key] != value:
            where = "resources.instance_count" if key == "instance_count" else key
            raise InvalidRequest(
                f"settings.{key} ({value!r}) and {where} ({settings[key]!r}) disagree: give "
                "the value once", details={"field": f"settings.{key}"}, code="invalid_setting")
        settings[key] = value
    for key, value in nested_environment.items():
        if environment.get(key, value) != value:
            raise InvalidRequest(
                f"environment variable {key} is set twice with different values "
                "(environment_variables and settings.environment_variables)",
                details={"field": f"settings.environment_variables.{key}"},
                code="invalid_setting")
        environment[key] = value
    if len(environment) > MAX_ENVIRONMENT_VARIABLES:
        raise InvalidRequest(f"at most {MAX_ENVIRONMENT_VARIABLES} environment variables",
                             details={"field": "environment_variables"}, code="invalid_setting")
    size = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in environment.items())
    if size > MAX_ENVIRONMENT_BYTES:
        raise InvalidRequest(f"the environment variables take {size} bytes; at most "
                             f"{MAX_ENVIRONMENT_BYTES} together",
                             details={"field": "environment_variables"}, code="invalid_setting")
    return settings, environment


def load_document(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) file into a mapping; InvalidRequest with the line if malformed."""
    import yaml  # only here: the API and most CLI commands never parse YAML

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
                         code: AssetReference | None) -> dict[str, Any]:
    """The document as the API takes it: local folders replaced by their registered assets.

    An inline model keeps its other fields (its `type` above all); only its folder becomes
    the registered version. `code` is None for a deployment without code_configuration.
    """
    body = dict(document)
    original = document.get("model")
    kept = ({k: v for k, v in original.items() if k not in ("path", "name", "version")}
            if isinstance(original, Mapping) else {})
    body["model"] = {**kept, "name": model.name, "version": model.version} if kept else model.ref
    if code is not None:
        body["code_configuration"] = {**dict(document["code_configuration"]), "code": code.ref}
    return body


def _code_configuration(value: Any, model_type: str | None) -> dict[str, Any] | None:
    """The code_configuration mapping, or None where a deployment may go without one.

    Like Azure ML, an MLflow model needs no scoring script; whether a model without a
    declared type is an MLflow model (an MLmodel file in its folder) is checked where the
    folder is (the CLI/client, and the registry for registered models).
    """
    if value is None:
        if model_type == CUSTOM_MODEL_TYPE:
            raise InvalidRequest(
                "a custom_model deployment needs code_configuration ('code', a folder, and "
                "'scoring_script'); only MLflow models deploy without a scoring script",
                details={"field": "code_configuration"}, code="invalid_deployment")
        return None
    code_cfg = _mapping(value, "code_configuration")
    if "code" not in code_cfg or "scoring_script" not in code_cfg:
        raise InvalidRequest("code_configuration needs 'code' (a folder) and 'scoring_script'",
                             details={"field": "code_configuration"},
                             code="invalid_deployment")
    return code_cfg


def _check_type(kind: Any) -> None:
    # No `type` is Azure ML's classic form, a model deployment.
    if kind is None or kind == "model":
        return
    if kind == "pipeline":
        raise InvalidRequest(
            "pipeline deployments (type: pipeline) are not supported by batchfn: deploy a "
            "model with a scoring script (type: model)",
            details={"field": "type", "value": kind}, code="unsupported_deployment_type")
    raise InvalidRequest(f"deployment type {kind!r} is not valid: expected model (or "
                         "pipeline, which batchfn does not support)",
                         details={"field": "type", "value": kind}, code="invalid_deployment")


def _auth_mode(value: Any) -> str:
    # Azure ML accepts the YAML spelling (aad_token) and the REST one (AADToken).
    spelling = str(value).lower().replace("_", "")
    for mode in AUTH_MODES:
        if mode.replace("_", "") == spelling:
            return mode
    raise InvalidRequest(f"auth_mode {value!r} is not valid: expected one of "
                         + ", ".join(AUTH_MODES),
                         details={"field": "auth_mode", "value": value}, code="invalid_endpoint")


def _model_source(value: Any) -> tuple[FolderSource | AssetReference, str | None,
                                        tuple[IgnoredField, ...]]:
    if isinstance(value, str):
        if value.startswith("azureml:"):
            return AssetReference(*parse_asset_ref(value)), None, ()
        return FolderSource(path=value), None, ()
    model = _mapping(value, "model")
    name = model.get("name")
    if name is not None:
        check_asset_name(name)
    model_type = _model_type(model.get("type"))
    known = frozenset({"name", "path", "type", "version"}) | (
        frozenset({"description", "tags"}) if model.get("path") else frozenset())
    ignored = _ignored(model, known, MODEL_IGNORED, prefix="model.")
    if model.get("path"):
        path = text_field(model["path"], "model.path")
        if "://" in path:
            raise InvalidRequest(
                f"model.path {path!r} is not a local folder: batchfn uploads model folders "
                "from this machine (or reference a registered model, azureml:<name>:<version>)",
                details={"field": "model.path"}, code="invalid_deployment")
        version = model.get("version")
        if version is not None and not str(version).isdigit():
            raise InvalidRequest(f"model.version {shown(version)} must be a number (batchfn "
                                 "numbers versions)", details={"field": "model.version"},
                                 code="invalid_version")
        return FolderSource(path=path, name=name,
                            version=None if version is None else str(int(str(version))),
                            description=text_field(model.get("description"),
                                                   "model.description"),
                            tags=tags_field(model.get("tags"), "model.tags")), model_type, ignored
    if name is not None and model.get("version") is not None:
        return (AssetReference(*parse_asset_ref(f"{name}:{model['version']}")), model_type,
                ignored)
    raise InvalidRequest("model needs 'path' (a folder) or a reference "
                         "azureml:<name>:<version> / azureml:<name>@latest",
                         details={"field": "model"}, code="invalid_deployment")


def compute_name(value: Any) -> str:
    """The scoring pool a deployment's `compute:` names: `azureml:<name>`, `<name>`, or
    Azure ML's resource id of it (batchfn has one workspace: only the name counts)."""
    if not isinstance(value, str):
        raise InvalidRequest(f"compute {shown(value)} must be a name: azureml:<name> or <name>",
                             details={"field": "compute"}, code="invalid_compute")
    name = value.removeprefix("azureml:")
    if "/computes/" in name:  # a resource id: .../workspaces/<w>/computes/<name>
        name = name.rstrip("/").rpartition("/computes/")[2]
    return check_resource_name("compute", name)


def _model_type(value: Any) -> str | None:
    if value is None:
        return None
    if value not in MODEL_TYPES:
        raise InvalidRequest(f"model.type {value!r} is not supported: expected one of "
                             + ", ".join(MODEL_TYPES),
                             details={"field": "model.type", "value": value},
                             code="invalid_deployment")
    return value


def _code_source(value: Any) -> FolderSource | AssetReference:
    if isinstance(value, str) and value.startswith("azureml:"):
        return AssetReference(*parse_asset_ref(value))
    if not isinstance(value, str) or not value:
        raise InvalidRequest("code_configuration.code must be a folder path or "
                             "azureml:<name>:<version>", code="invalid_deployment")
    return FolderSource(path=value)


def _environment(value: Any, what: str) -> dict[str, str]:
    variables = string_map(value, what)
    for key, text in variables.items():
        if not _ENV_NAME.fullmatch(key):
            raise InvalidRequest(
                f"{what}: {shown(key)} is not a valid environment variable name (letters, "
                "digits and '_', not starting with a digit, at most 256 characters)",
                details={"field": what, "value": shown(key)}, code="invalid_setting")
        if key in RESERVED_ENVIRONMENT or key.upper().startswith(RESERVED_ENVIRONMENT_PREFIX):
            raise InvalidRequest(
                f"{what}: {key} is set by batchfn for the scoring script and cannot be "
                f"overridden ({', '.join(sorted(RESERVED_ENVIRONMENT))}, "
                f"{RESERVED_ENVIRONMENT_PREFIX}*)",
                details={"field": f"{what}.{key}"}, code="invalid_setting")
        if len(text) > MAX_ENVIRONMENT_VALUE or "\x00" in text:
            raise InvalidRequest(f"{what}.{key}: the value must be at most "
                                 f"{MAX_ENVIRONMENT_VALUE} characters, without NUL",
                                 details={"field": f"{what}.{key}"}, code="invalid_setting")
    return variables


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{what} must be a mapping, got {type(value).__name__}",
                             details={"field": what}, code="invalid_document")
    return dict(value)


def text_field(value: Any, what: str) -> str:
    """A free-text field: a string of at most MAX_TEXT characters, None meaning empty."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InvalidRequest(f"{what} must be a string of at most {MAX_TEXT} characters",
                             details={"field": what}, code="invalid_document")
    return value


def tags_field(value: Any, what: str) -> dict[str, str]:
    """Tags: at most MAX_TAGS pairs, keys 1-MAX_TAG_KEY and values 0-MAX_TAG_VALUE chars."""
    tags = string_map(value, what)
    if len(tags) > MAX_TAGS or any(not 0 < len(k) <= MAX_TAG_KEY or len(v) > MAX_TAG_VALUE
                                   for k, v in tags.items()):
        raise InvalidRequest(f"{what}: at most {MAX_TAGS} tags, keys of 1 to {MAX_TAG_KEY} and "
                             f"values of at most {MAX_TAG_VALUE} characters",
                             details={"field": what}, code="invalid_document")
    return tags


def string_map(value: Any, what: str) -> dict[str, str]:
    """A str -> str mapping (tags, environment variables); scalar values become strings."""
    if value is None:
        return {}
    mapping = _mapping(value, what)
    return {str(k): "" if v is None else str(v) for k, v in mapping.items()}


def _ignored(doc: Mapping[str, Any], known: frozenset[str], reasons: Mapping[str, str], *,
             prefix: str = "") -> tuple[IgnoredField, ...]:
    return tuple(IgnoredField(f"{prefix}{key}", reasons.get(key, _UNKNOWN))
                 for key in sorted(doc) if key not in known)
