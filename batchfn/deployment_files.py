"""Local checks of an endpoint.yml / deployment.yml before anything is sent or uploaded:
the document's fields, its folders (relative to the file) and the scoring script."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchfn.contract.deployment_spec import (
    AssetReference,
    DeploymentSpec,
    EndpointSpec,
    FolderSource,
    load_document,
)
from batchfn.contract.environment_spec import EnvironmentSpec
from batchfn.contract.errors import InvalidRequest
from batchfn.contract.script_check import check_scoring_script
from batchfn.errors import local_checks


@dataclass(frozen=True)
class LocalDeployment:
    """A checked deployment document and the local folders it uploads (None: registered)."""

    document: dict[str, Any]
    spec: DeploymentSpec
    model_dir: Path | None
    code_dir: Path | None  # None: registered code, or none (an MLflow model without a script)


def endpoint_document(file: str | Path | None, document: Mapping[str, Any] | None,
                      name: str | None) -> tuple[dict[str, Any], EndpointSpec]:
    """The endpoint document (from `document`, else the file) and its checked spec."""
    with local_checks():
        doc = dict(document or (load_document(file) if file else {}))
        return doc, EndpointSpec.from_document(doc, name=name)


def deployment_document(file: str | Path | None, document: Mapping[str, Any] | None,
                        base_dir: str | Path | None, endpoint_name: str | None,
                        name: str | None) -> LocalDeployment:
    """Check a deployment: fields, folders (relative to the file or `base_dir`), script."""
    with local_checks():
        if document is None and file is None:
            raise InvalidRequest("a deployment needs a file (deployment.yml) or a document",
                                 code="missing_file")
        doc = dict(document) if document is not None else load_document(file)  # type: ignore[arg-type]
        base = Path(base_dir) if base_dir else (Path(file).parent if file else Path.cwd())
        spec = DeploymentSpec.from_document(doc, endpoint_name=endpoint_name, name=name,
                                            base_dir=base)
        if isinstance(spec.environment, EnvironmentSpec):
            # The API takes the conda file's content: the file is read here.
            doc["environment"] = inline_environment(spec.environment)
        model_dir = _folder(base, spec.model)
        code_dir = _folder(base, spec.code) if spec.code is not None else None
        if code_dir is not None:
            assert spec.scoring_script is not None  # the spec gives both or neither
            _check_script(code_dir, spec.scoring_script)
        if spec.code is None and model_dir is not None:
            _check_mlflow_model(model_dir)
    return LocalDeployment(doc, spec, model_dir, code_dir)


def environment_document(file: str | Path | None, document: Mapping[str, Any] | None,
                         base_dir: str | Path | None, name: str | None
                         ) -> tuple[dict[str, Any], str]:
    """An environment document as the API takes it (its conda file read, relative to the
    file or `base_dir`) and the name to register it under (`name` wins over the file's)."""
    with local_checks():
        if document is None and file is None:
            raise InvalidRequest("an environment needs a file (environment.yml), a document "
                                 "or --conda-file", code="missing_file")
        doc = dict(document) if document is not None else load_document(file)  # type: ignore[arg-type]
        if name is not None:
            doc["name"] = name
        base = Path(base_dir) if base_dir else (Path(file).parent if file else Path.cwd())
        spec = EnvironmentSpec.from_document(doc, base_dir=base)
        if spec.name is None:
            raise InvalidRequest("the environment needs a name (name: in the file, or --name)",
                                 details={"field": "name"}, code="invalid_environment")
        return inline_environment(spec), spec.name


def inline_environment(spec: EnvironmentSpec) -> dict[str, Any]:
    """`spec` as an environment document with its conda file's content inline."""
    return {key: value for key, value in (
        ("name", spec.name), ("version", spec.version),
        ("description", spec.description or None), ("image", spec.image),
        ("conda_file", spec.conda_file)) if value is not None}


def _folder(base: Path, source: FolderSource | AssetReference) -> Path | None:
    if isinstance(source, AssetReference):
        return None
    folder = (base / source.path).resolve()
    if not folder.is_dir():
        raise InvalidRequest(f"folder {source.path!r} does not exist (looked in {folder})",
                             details={"path": str(folder)}, code="folder_not_found")
    return folder


def _check_mlflow_model(model_dir: Path) -> None:
    """A deployment without code_configuration needs an MLflow model the built-in scorer
    loads (the registry checks a registered model the same way)."""
    from batchfn.contract.mlmodel import MLMODEL_FILE, is_mlflow_model_folder, read_mlmodel

    if not is_mlflow_model_folder(model_dir):
        raise InvalidRequest(
            f"the deployment has no code_configuration, and the model folder {model_dir} has no "
            f"{MLMODEL_FILE} file: only MLflow models deploy without a scoring script; give "
            "code_configuration (code and scoring_script)",
            details={"field": "code_configuration", "path": str(model_dir)},
            code="scoring_script_required")
    read_mlmodel(model_dir)


def _check_script(code_dir: Path, scoring_script: str) -> None:
    script = code_dir / scoring_script
    if not script.is_file():
        raise InvalidRequest(f"scoring script {scoring_script!r} is not in {code_dir}",
                             details={"path": str(script)}, code="script_not_found")
    check_scoring_script(script.read_bytes(), scoring_script)
