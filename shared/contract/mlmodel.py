"""The `MLmodel` file of an MLflow model folder, read without importing MLflow.

Creating a deployment checks it (in the API, and in the client before it uploads), which
must stay light: MLflow is only imported by the scoring worker that loads the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Unprocessable

MLMODEL_FILE = "MLmodel"
PYFUNC_FLAVOR = "python_function"
MAX_MLMODEL_BYTES = 1024 * 1024


@dataclass(frozen=True)
class MlflowModelInfo:
    """What batchfn needs to know of an MLflow model before loading it."""

    flavors: tuple[str, ...]
    signature: str  # "columns", "tensors" or "none"
    input_columns: tuple[str, ...]  # the signature's column names ("columns" only)

    @property
    def loads_as_pyfunc(self) -> bool:
        return PYFUNC_FLAVOR in self.flavors


def parse_mlmodel(text: str | bytes, where: str = MLMODEL_FILE) -> MlflowModelInfo:
    """Parse an MLmodel file; Unprocessable if it is not one batchfn can score.

    Like Azure ML, batchfn scores MLflow models through their `python_function` flavor;
    a model without it needs a scoring script that loads its own flavor.
    """
    import yaml  # only here: importing the contract loads no YAML parser

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _invalid(where, f"is not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        raise _invalid(where, "has no 'flavors' mapping: is it an MLflow MLmodel file?")
    flavors = tuple(str(name) for name in document["flavors"])
    if PYFUNC_FLAVOR not in flavors:
        raise _invalid(
            where, f"has no {PYFUNC_FLAVOR} flavor (it has: {', '.join(flavors) or 'none'}): "
            "the built-in MLflow scorer loads models with mlflow.pyfunc; deploy this model "
            "with a scoring script (code_configuration) that loads its own flavor")
    kind, columns = _signature(document.get("signature"), where)
    return MlflowModelInfo(flavors=flavors, signature=kind, input_columns=columns)


def read_mlmodel(folder: str | Path) -> MlflowModelInfo:
    """Parse `folder`/MLmodel (see parse_mlmodel)."""
    path = Path(folder) / MLMODEL_FILE
    if path.stat().st_size > MAX_MLMODEL_BYTES:
        raise _invalid(str(path), f"is larger than {MAX_MLMODEL_BYTES} bytes")
    return parse_mlmodel(path.read_bytes(), str(path))


def is_mlflow_model_folder(folder: str | Path) -> bool:
    """Whether a model folder is an MLflow model (it holds an MLmodel file at its top)."""
    return (Path(folder) / MLMODEL_FILE).is_file()


def _signature(signature: Any, where: str) -> tuple[str, tuple[str, ...]]:
    if not isinstance(signature, dict) or not signature.get("inputs"):
        return "none", ()
    try:
        inputs = json.loads(signature["inputs"])
    except (TypeError, ValueError) as exc:
        raise _invalid(where, f"has a signature whose inputs are not JSON: {exc}") from None
    if not isinstance(inputs, list) or not all(isinstance(spec, dict) for spec in inputs):
        raise _invalid(where, "has a signature whose inputs are not a list of specs")
    if any(spec.get("type") == "tensor" for spec in inputs):
        return "tensors", ()
    return "columns", tuple(str(spec["name"]) for spec in inputs if spec.get("name"))


def _invalid(where: str, problem: str) -> Unprocessable:
    return Unprocessable(f"MLflow model file {where} {problem}", details={"file": where},
                         code="invalid_mlflow_model")
