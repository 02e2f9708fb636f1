"""Environments as Azure ML writes them, reduced to what batchfn builds: a Python version and
pip requirements.

A deployment's `environment` is inline (`conda_file`, `image`, `name`, `version`,
`description`), a registered environment (`azureml:<name>:<version>`,
`azureml:<name>@latest`), or absent; an MLflow model without one brings its own
(`conda.yaml`, `python_env.yaml`, `requirements.txt`, read by `mlflow_environment`). From a
conda file batchfn takes the Python version and the `pip:` requirements; conda packages
that have a pip equivalent are installed from pip, build tools (pip, setuptools, wheel) are
left to uv, and any other conda package is refused by name. `image` is kept with a note: a
Functions host starts no container per deployment, environments layer over the scoring
app's image. An environment's identity (`EnvironmentSpec.digest`) is the hash of what it
resolves from: its Python version and its requirements.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidRequest
from .names import check_asset_name, shown

# Python versions the worker runtime (shared/worker) runs on.
SUPPORTED_PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
MAX_REQUIREMENTS = 500
MAX_REQUIREMENT_CHARS = 500
MAX_CONDA_FILE_BYTES = 256 * 1024
MLFLOW_PACKAGES = frozenset({"mlflow", "mlflow-skinny"})
# What the built-in MLflow scorer needs when a model's requirements name no mlflow (Azure
# ML adds its own packages the same way).
MLFLOW_ADDED = "mlflow-skinny"
MLFLOW_ENVIRONMENT_FILES = ("conda.yaml", "python_env.yaml", "requirements.txt")
# Conda packages whose pip package installs the same thing (conda name -> pip name).
PIP_EQUIVALENTS = {name: name for name in (
    "numpy", "pandas", "scipy", "scikit-learn", "pillow", "matplotlib", "requests", "tqdm",
    "pyarrow", "cloudpickle", "joblib", "mlflow", "mlflow-skinny", "tensorflow", "keras",
    "xgboost", "lightgbm", "catboost", "protobuf", "h5py", "psutil", "python-dateutil",
    "pytz", "six", "packaging", "click", "jinja2", "markupsafe", "statsmodels", "numba",
    "llvmlite", "sympy", "networkx", "transformers", "tokenizers", "onnx", "onnxruntime",
    "pydantic", "pyyaml", "typing-extensions", "scikit-image", "seaborn", "nltk", "spacy",
    "sentencepiece", "safetensors", "huggingface-hub", "datasets", "fsspec", "polars",
    "shap", "torchvision", "torchaudio", "pytorch-lightning", "lightning", "azureml-core",
    "azureml-defaults", "azureml-mlflow", "opencv-python-headless", "imageio", "regex",
)} | {"pytorch": "torch", "py-xgboost": "xgboost", "opencv": "opencv-python-headless",
      "typing_extensions": "typing-extensions", "python-dateutil": "python-dateutil"}
# Installed by uv itself, never into the environment.
BUILD_TOOLS = frozenset({"pip", "setuptools", "wheel"})
ENVIRONMENT_FIELDS = frozenset({"name", "version", "description", "tags", "image",
                                "conda_file", "os_type", "$schema"})
IMAGE_NOTE = ("kept, not used: a Functions host starts no container per deployment; the "
              "environment is built over the scoring app's image")
_CHANNELS_NOTE = ("conda channels are not used: batchfn installs from the scoring app's "
                  "package index (PyPI unless UV_INDEX is set)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PYTHON = re.compile(r"python\s*(?:==?|\s)\s*(\d+)\.(\d+)(?:\.[0-9*]+)?(?:=\S*)?")
_CONDA_SPEC = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<rest>.*)")


@dataclass(frozen=True)
class EnvironmentSpec:
    """What batchfn builds for a deployment, and the Azure ML fields it keeps.

    `python` is "X.Y" (None: the scoring host's own), `requirements` are pip requirement
    lines, `notes` say what of the source was not installed and why.
    """

    requirements: tuple[str, ...] = ()
    python: str | None = None
    name: str | None = None
    version: str | None = None
    description: str = ""
    image: str | None = None
    conda_file: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """The identity of what this environment resolves from (Python and requirements)."""
        content = {"python": self.python or "", "requirements": sorted(set(self.requirements))}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "description": self.description,
                "image": self.image, "conda_file": self.conda_file, "python": self.python,
                "requirements": list(self.requirements), "notes": list(self.notes),
                "digest": self.digest}

    @classmethod
    def from_document(cls, data: Any, *, base_dir: Path | None = None) -> EnvironmentSpec:
        """An Azure ML environment document (`environment.yml`, or a deployment's inline
        `environment:`). `conda_file` is a mapping, conda YAML text, or (with `base_dir`:
        the CLI and client) a file path relative to the document."""
        doc = _mapping(data, "environment")
        unknown = sorted(set(doc) - ENVIRONMENT_FIELDS)
        if "build" in unknown:
            raise InvalidRequest(
                "environment.build (a Docker build context) cannot be honoured: batchfn builds "
                "no images; give conda_file (pip requirements) instead",
                details={"field": "environment.build"}, code="invalid_environment")
        if unknown:
            raise InvalidRequest(f"unknown environment field(s): {', '.join(unknown)}",
                                 details={"fields": unknown}, code="invalid_environment")
        if doc.get("os_type") not in (None, "linux", "Linux"):
            raise InvalidRequest("environment.os_type must be linux: scoring hosts run Linux",
                                 details={"field": "environment.os_type"},
                                 code="invalid_environment")
        name = doc.get("name")
        if name is not None:
            check_asset_name(name)
        version = doc.get("version")
        if version is not None and not (isinstance(version, (str, int))
                                        and len(str(version)) <= 64):
            raise InvalidRequest("environment.version must be a short string",
                                 details={"field": "environment.version"},
                                 code="invalid_environment")
        image = doc.get("image")
        if image is not None and not (isinstance(image, str) and len(image) <= 1024):
            raise InvalidRequest("environment.image must be an image name",
                                 details={"field": "environment.image"},
                                 code="invalid_environment")
        conda = _conda_document(doc.get("conda_file"), base_dir)
        python, requirements, notes = (None, (), ()) if conda is None else parse_conda(conda)
        if image is not None:
            notes = (f"image {image}: {IMAGE_NOTE}", *notes)
        description = doc.get("description") or ""
        if not isinstance(description, str) or len(description) > 8192:
            raise InvalidRequest("environment.description must be a string of at most 8192 "
                                 "characters", code="invalid_environment")
        return cls(requirements=requirements, python=python, name=name,
                   version=None if version is None else str(version),
                   description=description, image=image, conda_file=conda, notes=notes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvironmentSpec:
        """A stored spec (to_dict's output); not validated again."""
        return cls(requirements=tuple(data.get("requirements") or ()),
                   python=data.get("python"), name=data.get("name"),
                   version=data.get("version"), description=data.get("description") or "",
                   image=data.get("image"), conda_file=data.get("conda_file"),
                   notes=tuple(data.get("notes") or ()))


def parse_conda(conda: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
    """(Python "X.Y" or None, pip requirements, notes) of a conda environment file."""
    dependencies = conda.get("dependencies") or []
    if not isinstance(dependencies, list):
        raise InvalidRequest("conda_file: dependencies must be a list",
                             details={"field": "conda_file.dependencies"},
                             code="invalid_environment")
    python = None
    requirements: list[str] = []
    notes: list[str] = []
    conda_only: list[str] = []
    for entry in dependencies:
        if isinstance(entry, Mapping):
            pip = entry.get("pip")
            if set(entry) != {"pip"} or not isinstance(pip, list):
                raise InvalidRequest(
                    f"conda_file: a mapping in dependencies must be 'pip: [requirements]', "
                    f"got {shown(dict(entry))}", details={"field": "conda_file.dependencies"},
                    code="invalid_environment")
            requirements.extend(check_requirement(line) for line in pip)
            continue
        if not isinstance(entry, str) or not entry.strip():
            raise InvalidRequest(f"conda_file: dependency {shown(entry)} is not a package spec",
                                 details={"field": "conda_file.dependencies"},
                                 code="invalid_environment")
        spec = entry.strip()
        found = _PYTHON.fullmatch(spec)
        if found or spec == "python":
            python = check_python(f"{found.group(1)}.{found.group(2)}") if found else python
            continue
        match = _CONDA_SPEC.fullmatch(spec.split("::")[-1])
        name = match.group("name").lower() if match else spec
        if name in BUILD_TOOLS:
            notes.append(f"{spec}: not installed (uv installs packages without pip)")
        elif name in PIP_EQUIVALENTS and match:
            requirements.append(PIP_EQUIVALENTS[name] + _pip_specifier(match.group("rest")))
        else:
            conda_only.append(spec)
    if conda_only:
        raise InvalidRequest(
            "conda_file: these conda packages have no pip equivalent batchfn knows, and "
            f"batchfn installs from pip only: {', '.join(conda_only)}. List their pip "
            "packages under 'pip:' instead (CUDA libraries come with the scoring image or "
            "with the pip packages that need them)",
            details={"field": "conda_file.dependencies", "packages": conda_only[:50]},
            code="conda_only_packages")
    if conda.get("channels"):
        notes.append(_CHANNELS_NOTE)
    if len(requirements) > MAX_REQUIREMENTS:
        raise InvalidRequest(f"at most {MAX_REQUIREMENTS} requirements",
                             code="invalid_environment")
    return python, tuple(requirements), tuple(notes)


def check_requirement(line: Any) -> str:
    """One pip requirement as uv takes it (a name with extras, versions, markers, or a
    `name @ https://...` URL); options, editable installs and local paths are refused."""
    if not isinstance(line, str):
        raise _bad_requirement(line, "a requirement is a string")
    text = " ".join(line.split(" #", 1)[0].split())  # an inline comment is dropped
    if not text or len(text) > MAX_REQUIREMENT_CHARS or any(ord(c) < 32 for c in line):
        raise _bad_requirement(line, f"1 to {MAX_REQUIREMENT_CHARS} printable characters")
    if text.startswith("-"):
        raise _bad_requirement(line, "pip options (-r, -e, --index-url, ...) are not taken: "
                               "indexes are the scoring app's (UV_INDEX), list packages "
                               "themselves")
    if text.startswith((".", "/", "~", "file:")) or "file:" in text:
        raise _bad_requirement(line, "a local path cannot be installed on a scoring host")
    if not _NAME.match(text):
        raise _bad_requirement(line, "a requirement starts with a package name")
    return text


def check_python(version: Any) -> str:
    """A Python "X.Y" the worker runtime supports."""
    text = str(version).strip()
    parts = text.split(".")
    short = ".".join(parts[:2])
    if short not in SUPPORTED_PYTHONS:
        raise InvalidRequest(
            f"Python {shown(text)} is not supported: scoring workers run on Python "
            f"{SUPPORTED_PYTHONS[0]} to {SUPPORTED_PYTHONS[-1]} (an old pin such as 3.8 "
            "cannot run the worker runtime: raise it)",
            details={"field": "python", "value": shown(text)}, code="unsupported_python")
    return short


def package_name(requirement: str) -> str:
    """The normalised project name of a requirement line (PEP 503)."""
    match = _NAME.match(requirement)
    return re.sub(r"[-_.]+", "-", match.group(0) if match else requirement).lower()


def mlflow_environment(files: Mapping[str, str]) -> EnvironmentSpec:
    """The environment of an MLflow model from its own files (name -> text), as Azure ML
    builds it: `conda.yaml` first, else `python_env.yaml` with `requirements.txt`, else
    `requirements.txt`; `mlflow-skinny` is added when no mlflow is required."""
    import yaml  # only here: parsing YAML is the rare path

    def load(name: str) -> Any:
        try:
            return yaml.safe_load(files[name])
        except yaml.YAMLError as exc:
            raise InvalidRequest(f"the model's {name} is not valid YAML: {exc}",
                                 code="invalid_environment") from None

    python = None
    if "conda.yaml" in files:
        python, requirements, notes = parse_conda(_mapping(load("conda.yaml"), "conda.yaml"))
        source = "the model's conda.yaml"
    else:
        notes = ()
        lines = files.get("requirements.txt", "").splitlines()
        if "python_env.yaml" in files:
            python_env = _mapping(load("python_env.yaml"), "python_env.yaml")
            if python_env.get("python"):
                python = check_python(python_env["python"])
            lines = [str(d) for d in python_env.get("dependencies") or []
                     if not str(d).startswith("-r ")] + lines
        requirements = tuple(check_requirement(line) for line in lines
                             if line.strip() and not line.strip().startswith("#"))
        source = "the model's requirements.txt"
    if not any(package_name(r) in MLFLOW_PACKAGES for r in requirements):
        requirements = (*requirements, MLFLOW_ADDED)
        notes = (*notes, f"{MLFLOW_ADDED} added: the built-in MLflow scorer loads the model "
                         "with it")
    return EnvironmentSpec(requirements=requirements, python=python,
                           description=f"from {source}", notes=notes)


def _pip_specifier(rest: str) -> str:
    """A conda version spec (`=1.2`, `1.2.*`, `>=1,<2`, `=1.2=build`) as a pip specifier."""
    text = rest.strip()
    if not text:
        return ""
    if text.startswith("==") or text[0] in "<>!":
        return text.replace(" ", "")
    version = text.lstrip("=").split("=")[0].strip()  # a build string after "=" is dropped
    return f"=={version}" if "*" in version or version.count(".") >= 2 else f"=={version}.*"


def _conda_document(value: Any, base_dir: Path | None) -> dict[str, Any] | None:
    import yaml

    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str) or len(value) > MAX_CONDA_FILE_BYTES:
        raise InvalidRequest("environment.conda_file must be a file path, conda YAML or a "
                             "mapping", details={"field": "environment.conda_file"},
                             code="invalid_environment")
    if "\n" not in value and (base_dir is not None or value.endswith((".yml", ".yaml"))):
        if base_dir is None:
            raise InvalidRequest(
                f"environment.conda_file {value!r} is a local file: the API takes its "
                "content; the CLI and client read the file", code="local_path_not_allowed",
                details={"field": "environment.conda_file"})
        path = Path(base_dir) / value
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"cannot read conda_file {str(path)!r}: {exc}",
                                 details={"field": "environment.conda_file"},
                                 code="file_not_found") from None
    else:
        text = value
    try:
        return _mapping(yaml.safe_load(text), "conda_file")
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"conda_file is not valid YAML: {exc}",
                             details={"field": "environment.conda_file"},
                             code="invalid_yaml") from None


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{what} must be a mapping, got {type(value).__name__}",
                             details={"field": what}, code="invalid_environment")
    return dict(value)


def _bad_requirement(line: Any, why: str) -> InvalidRequest:
    return InvalidRequest(f"requirement {shown(line)} is not taken: {why}",
                          details={"field": "requirements", "value": shown(line)},
                          code="invalid_requirement")
