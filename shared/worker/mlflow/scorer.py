"""Scoring with an MLflow model, as Azure ML does for an MLflow deployment without a script.

The model is loaded once with `mlflow.pyfunc`. In a mini-batch of files, each file is
scored on its own, as Azure ML does: `.csv`, `.parquet` and `.pqt` files become a pandas
DataFrame, image files (`.png`, `.jpg`, `.jpeg`, `.tiff`, `.tif`, `.bmp`, `.gif`) a numpy
array, any other file fails with a message naming its type. With a tabular input format
run() gets the rows as one DataFrame and they are scored together.

The model's signature is enforced when reading: a column signature converts each column
to its type row by row (a value that does not convert fails its row, not the file as in
Azure ML; a missing column fails every row), a tensor signature reshapes an image to the
tensor's shape and type. Predictions are returned "as is", one output row per input row
(per image file), with Azure ML's columns: `row` (the row number in its file; left out of
a mini-batch of images alone), the prediction, and `file_name`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.worker.input_errors import UnsplittableInput
from shared.worker.portable import zip_equal
from shared.worker.tabular.column_types import COLUMN_TYPES, coerce_columns
from shared.worker.tabular.failures import FailedInput, report
from shared.worker.tabular.formats import CSV, PARQUET
from shared.worker.tabular.read import ROW_ORIGINS_ATTR, BatchPiece, TableReader, origin_columns
from shared.worker.tabular.sources import LocalFileSource
from shared.worker.tabular.split import plan_table

ROW_COLUMN = "row"
PREDICTION_COLUMN = "prediction"
FILE_COLUMN = "file_name"
TABLE_SUFFIXES = {".csv": CSV, ".parquet": PARQUET, ".pqt": PARQUET}
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tiff", ".tif", ".bmp", ".gif"})
SUPPORTED_SUFFIXES = tuple(sorted({*TABLE_SUFFIXES, *IMAGE_SUFFIXES}))


MLMODEL_FILE = "MLmodel"


def model_folder(model_dir: str | os.PathLike[str]) -> Path:
    """The MLflow model folder under AZUREML_MODEL_DIR.

    AZUREML_MODEL_DIR contains the registered folder (`<dir>/model/MLmodel`); a model
    registered as its files alone has MLmodel at the top. More than one candidate is an
    error rather than a guess. (Deployment create checked the MLmodel file itself: a
    python_function flavor; mlflow.pyfunc reads it here.)
    """
    root = Path(model_dir)
    found = sorted(p.parent for p in root.glob(f"*/{MLMODEL_FILE}"))
    if (root / MLMODEL_FILE).is_file():
        found.insert(0, root)
    if not found:
        raise FileNotFoundError(f"no {MLMODEL_FILE} file in the model folder {root} or the "
                                "folders directly in it: is this an MLflow model?")
    if len(found) > 1:
        raise FileNotFoundError(f"more than one {MLMODEL_FILE} under {root}: "
                                + ", ".join(str(p) for p in found))
    return found[0]


class MlflowScorer:
    """One MLflow model, loaded once, scoring mini-batches of files or rows."""

    def __init__(self, model_dir: str | os.PathLike[str]) -> None:
        import mlflow.pyfunc  # imported by the worker that scores, never by the API

        self.folder = model_folder(model_dir)
        self.model = mlflow.pyfunc.load_model(str(self.folder))
        schema = self.model.metadata.get_input_schema()
        self._column_types: dict[str, str] = {}
        self._required: tuple[str, ...] = ()
        self._tensor: tuple[np.dtype, tuple[int, ...]] | None = None
        if schema is not None and schema.is_tensor_spec():
            if len(schema.inputs) == 1:
                spec = schema.inputs[0]
                self._tensor = (np.dtype(spec.type), tuple(spec.shape or ()))
        elif schema is not None:
            for spec in schema.inputs:
                kind = getattr(spec.type, "name", None)
                if spec.name is not None and kind in COLUMN_TYPES:
                    self._column_types[spec.name] = kind
            self._required = tuple(schema.required_input_names()) if schema.has_input_names() \
                else ()
        self._reader = TableReader()

    def score(self, mini_batch: Sequence[str] | pd.DataFrame) -> pd.DataFrame:
        """Score run()'s argument: file paths, or a DataFrame of rows (tabular input)."""
        if isinstance(mini_batch, pd.DataFrame):
            return self.score_rows(mini_batch)
        return self.score_files(mini_batch)

    def score_files(self, paths: Sequence[str]) -> pd.DataFrame:
        """Score each file on its own; failed files and rows are reported, not raised.

        Failures name a file by the path run() was given (the worker knows which input it
        is); the output's `file_name` is its base name, as in Azure ML.
        """
        tables = []
        for path in paths:
            name = os.path.basename(path)
            suffix = Path(name).suffix.lower()
            if suffix in TABLE_SUFFIXES:
                table = self._score_table_file(path, name, TABLE_SUFFIXES[suffix])
            elif suffix in IMAGE_SUFFIXES:
                table = self._score_image(path, name)
            else:
                report(FailedInput.make(
                    path, f"file type '{suffix.lstrip('.') or '(none)'}' is not supported by "
                    f"the built-in MLflow scorer (it reads {', '.join(SUPPORTED_SUFFIXES)}); "
                    "deploy the model with a scoring script to read other files"))
                continue
            if table is not None:
                tables.append(table)
        table = _concat(tables)
        if len(table) and table[ROW_COLUMN].isna().all():
            # Only images: no row numbers (Azure ML writes the prediction and file name).
            table = table.drop(columns=ROW_COLUMN)
        return table

    def score_rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Score a tabular mini-batch: its rows' file names and numbers come from
        frame.attrs[ROW_ORIGINS_ATTR] (set by the reader)."""
        origins = frame.attrs.get(ROW_ORIGINS_ATTR)
        if origins and sum(count for _, _, count in origins) == len(frame):
            files, rows = origin_columns(origins)
        else:
            files = np.full(len(frame), None, dtype=object)
            rows = np.arange(len(frame), dtype=np.int64)
        return self._score_frame(frame, files, rows) if len(frame) else _concat([])

    def _score_table_file(self, path: str, name: str, fmt: str) -> pd.DataFrame | None:
        source = LocalFileSource(path)
        try:
            plan = plan_table(source, fmt, rows_per_range=sys.maxsize)
        except UnsplittableInput as exc:
            report(FailedInput.make(path, exc.reason))
            return None
        if not plan.ranges:
            return None
        rows = self._reader.read(BatchPiece(path, source, fmt, plan.ranges[0]))
        for failure in rows.failed:
            report(failure)
        if not len(rows.frame):
            return None
        return self._score_frame(rows.frame, np.full(len(rows.frame), path, dtype=object),
                                 rows.row_numbers, np.full(len(rows.frame), name, dtype=object))

    def _score_frame(self, frame: pd.DataFrame, files: np.ndarray, rows: np.ndarray,
                     names: np.ndarray | None = None) -> pd.DataFrame | None:
        """Predict `frame`'s rows: `files` and `rows` say where each row comes from (for
        failures), `names` what the output calls its file (`files` when None)."""
        names = files if names is None else names
        missing = [column for column in self._required if column not in frame.columns]
        if missing:
            message = (f"the model's signature needs column(s) {', '.join(missing)}, which the "
                       "input does not have")
            for file, first, count in _runs(files, rows):
                report(FailedInput.make(file, message, row=first, rows=count))
            return None
        frame, bad = coerce_columns(frame, self._column_types)
        if bad:
            for position, message in bad.items():
                report(FailedInput.make(str(files[position]), message,
                                        row=int(rows[position])))
            keep = np.ones(len(frame), dtype=bool)
            keep[list(bad)] = False
            frame, rows, names = frame[keep].reset_index(drop=True), rows[keep], names[keep]
            if not len(frame):
                return None
        table = _prediction_table(self.model.predict(frame), len(frame))
        table.insert(0, ROW_COLUMN, pd.array(rows, dtype="Int64"))
        table[FILE_COLUMN] = names
        return table

    def _score_image(self, path: str, name: str) -> pd.DataFrame | None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                array = np.asarray(image)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            report(FailedInput.make(path, f"cannot read the image: {exc}"))
            return None
        if self._tensor is not None:
            try:
                array = _fit_tensor(array, *self._tensor)
            except ValueError as exc:
                report(FailedInput.make(path, str(exc)))
                return None
        table = _prediction_table(self.model.predict(array), 1)
        table.insert(0, ROW_COLUMN, pd.array([None], dtype="Int64"))
        table[FILE_COLUMN] = [name]
        return table


def _prediction_table(prediction: Any, rows: int) -> pd.DataFrame:
    """Predictions as columns: one named "prediction", or the model's own named columns.

    A multi-valued prediction per row (class probabilities) stays one value, a list. With
    one expected row, a prediction of another length is that row's value as a whole.
    """
    if isinstance(prediction, pd.DataFrame):
        table = prediction.reset_index(drop=True)
        if len(table.columns) == 1:
            table.columns = [PREDICTION_COLUMN]
    elif isinstance(prediction, dict):
        table = pd.DataFrame({str(k): _values(v, rows) for k, v in prediction.items()})
    else:
        table = pd.DataFrame({PREDICTION_COLUMN: _values(prediction, rows)})
    if len(table) != rows:
        raise ValueError(f"the model returned {len(table)} predictions for {rows} rows")
    return table


def _values(prediction: Any, rows: int) -> list[Any] | pd.Series:
    if isinstance(prediction, pd.Series):
        return prediction.reset_index(drop=True)
    array = np.asarray(prediction, dtype=object if isinstance(prediction, list) else None)
    if array.ndim == 0 or (rows == 1 and len(array) != 1):
        return [array.tolist()]
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    return list(array) if array.ndim == 1 else [item.tolist() for item in array]


def _fit_tensor(image: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """One image as the signature's tensor: its shape (-1: any size) with a batch of one,
    and its type. A reshape never turns one image into several."""
    target = (1, *shape[1:]) if shape and shape[0] == -1 else shape
    array = image[np.newaxis] if target and image.ndim == len(target) - 1 else image
    fits = array.ndim == len(target) and all(
        want in (-1, have) for want, have in zip_equal(target, array.shape))
    if target and not fits:
        try:
            array = image.reshape(target)
        except ValueError:
            raise ValueError(f"the image's shape {image.shape} does not fit the model's "
                             f"tensor shape {shape}") from None
    return array.astype(dtype, copy=False)


def _runs(files: np.ndarray, rows: np.ndarray) -> list[tuple[str, int, int]]:
    """Consecutive rows of one file as (file, first row, count)."""
    runs: list[tuple[str, int, int]] = []
    for file, row in zip_equal(files.tolist(), rows.tolist()):
        if runs and runs[-1][0] == file and runs[-1][1] + runs[-1][2] == row:
            runs[-1] = (file, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((str(file), int(row), 1))
    return runs


def _concat(tables: list[pd.DataFrame]) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame({ROW_COLUMN: pd.array([], dtype="Int64"), PREDICTION_COLUMN: [],
                             FILE_COLUMN: []})
    return pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
