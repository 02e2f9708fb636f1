"""Model and data assets as Azure ML writes them: `model.yml` / `data.yml`, or the flags of
`az ml model|data create`, and what a registration records besides the content.

A model is a folder (custom_model, or mlflow_model: an MLmodel file with the
python_function flavor). A data asset is a folder (uri_folder) or one file (uri_file):
a local path, uploaded once, content-addressed, to the default datastore; or a location
jobs may already read (`azureml://datastores/<name>/paths/<path>` or a storage URL of the
app's account), recorded as it is. Versions are numbers; without one, the next number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .asset_manifest import parse_asset_ref
from .deployment_spec import MODEL_TYPES, IgnoredField, tags_field, text_field
from .errors import InvalidRequest
from .names import check_asset_name, shown

ASSET_KINDS = ("model", "code", "data")
DATA_TYPES = ("uri_folder", "uri_file")
DEFAULT_TYPES = {"model": "custom_model", "data": "uri_folder"}
ASSET_TYPES = {"model": MODEL_TYPES, "data": DATA_TYPES}
MAX_VERSION_DIGITS = 9
_SET_BY_SERVICE = "set by the service, not by the file"
_IGNORED = {
    "$schema": "an editor hint",
    "properties": "batchfn keeps no free-form properties; use tags",
    "flavors": "an MLflow model's flavors are read from its MLmodel file",
    "stage": "batchfn has no model stages; archive versions instead",
    "job_name": _SET_BY_SERVICE,
    "id": _SET_BY_SERVICE,
    "creation_context": _SET_BY_SERVICE,
    "datastore": "a local path is uploaded to the default datastore (workspaceblobstore); "
                 "name another datastore in path: azureml://datastores/<name>/paths/<path>",
}
_FIELDS = frozenset({"name", "version", "type", "path", "description", "tags"})
_UNKNOWN = "not a field of Azure ML's asset schema (a typo?)"


def check_version(value: Any, *, latest: bool = False) -> str:
    """An asset version: a number of at most MAX_VERSION_DIGITS digits (or, with `latest`,
    the word latest); InvalidRequest otherwise."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(
        value, bool) else None
    if text == "latest" and latest:
        return text
    if text is None or not text.isdigit() or len(text) > MAX_VERSION_DIGITS or int(text) == 0:
        expected = "a number from 1" + (" or latest" if latest else "")
        raise InvalidRequest(f"invalid asset version {shown(value)}: expected {expected} "
                             f"(at most {MAX_VERSION_DIGITS} digits; batchfn numbers versions)",
                             details={"field": "version", "value": shown(value)},
                             code="invalid_version")
    return str(int(text))


@dataclass(frozen=True)
class AssetMetadata:
    """What a registration records besides the content: type, description, tags, and the
    version asked for (None: the next number)."""

    type: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    version: str | None = None

    @classmethod
    def from_dict(cls, kind: str, data: Mapping[str, Any]) -> AssetMetadata:
        """Validate the metadata fields of a registration body or an asset document."""
        version = data.get("version")
        return cls(type=asset_type(kind, data.get("type")),
                   description=text_field(data.get("description"), "description"),
                   tags=tags_field(data.get("tags"), "tags"),
                   version=None if version is None else check_version(version))

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "description": self.description,
                                "tags": dict(self.tags)}
        if self.version is not None:
            body["version"] = self.version
        return body


def asset_type(kind: str, value: Any) -> str | None:
    """The type of a model (custom_model, mlflow_model) or data asset (uri_folder,
    uri_file); the kind's default when None; code has none."""
    if kind not in ASSET_TYPES:
        return None
    if value is None:
        return DEFAULT_TYPES[kind]
    allowed = ASSET_TYPES[kind]
    spelling = str(value).lower()
    if spelling not in allowed:
        extra = (" (mltable data assets are not supported: register the folder as uri_folder)"
                 if spelling == "mltable" else "")
        raise InvalidRequest(f"{kind} type {shown(value)} is not supported: expected one of "
                             + ", ".join(allowed) + extra,
                             details={"field": "type", "value": shown(value)},
                             code="invalid_asset_type")
    return spelling


@dataclass(frozen=True)
class AssetSpec:
    """A model or data asset to register: `model.yml`/`data.yml`, or create's flags."""

    kind: str
    name: str
    path: str
    metadata: AssetMetadata
    ignored: tuple[IgnoredField, ...] = ()

    @classmethod
    def from_document(cls, kind: str, data: Any) -> AssetSpec:
        """Validate an asset document (flags given on the command line merged in)."""
        if not isinstance(data, Mapping):
            raise InvalidRequest(f"{kind} document must be a mapping, got "
                                 f"{type(data).__name__}", code="invalid_document")
        path = data.get("path")
        if not isinstance(path, str) or not path.strip():
            raise InvalidRequest(f"a {kind} asset needs a path (--path, or path: in the file)",
                                 details={"field": "path"}, code="invalid_document")
        ignored = tuple(IgnoredField(key, _IGNORED.get(key, _UNKNOWN))
                        for key in sorted(data) if key not in _FIELDS)
        return cls(kind=kind, name=check_asset_name(data.get("name")), path=path.strip(),
                   metadata=AssetMetadata.from_dict(kind, data), ignored=ignored)


def is_location(path: str) -> bool:
    """True for a data location jobs read where it is (a URL or an azureml:// URI), False
    for a local path to upload."""
    return "://" in path


def data_reference(uri: str) -> tuple[str, str] | None:
    """(name, version) of an input naming a data asset (`azureml:<name>@latest`,
    `azureml:<name>:<version>`, or its resource id); None for any other input. Version
    may be "latest"."""
    if not uri.startswith("azureml:") or uri.startswith("azureml://"):
        return None
    name, version = parse_asset_ref(uri)
    return name, check_version(version, latest=True)
