"""Column types applied row by row: a value that does not convert fails its row only.

pandas infers types per range, so one range may read a column as int64 and another as
float64 (a missing value) or str (a stray word). Where the types are known (an MLflow
model's signature), each column is converted to its type and a value that cannot be is a
failed row, instead of a failed mini-batch or, as in Azure ML, a failed file. The type
names are MLflow's column types.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

INTEGER_TYPES = {"integer": "int32", "long": "int64"}
FLOAT_TYPES = {"float": "float32", "double": "float64"}
COLUMN_TYPES = frozenset({*INTEGER_TYPES, *FLOAT_TYPES, "boolean", "string", "binary",
                          "datetime"})
_TRUE = frozenset({"true", "1", "yes", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "f", "n"})


def coerce_columns(frame: pd.DataFrame, types: Mapping[str, str]
                   ) -> tuple[pd.DataFrame, dict[int, str]]:
    """Convert the columns of `frame` named in `types` to those column types.

    Returns the converted frame (all its rows) and, by row position, why a row's value
    could not be converted (the first such column); those rows hold a placeholder and are
    for the caller to drop. Columns that `frame` lacks are left to the caller.
    """
    converted = frame.copy()
    bad: dict[int, str] = {}
    for column, kind in types.items():
        if column not in frame.columns:
            continue
        values, problems = _convert(frame[column], kind)
        converted[column] = values
        for position in np.flatnonzero(problems.to_numpy()).tolist():
            if position not in bad:
                raw = frame[column].iloc[position]
                bad[position] = (f"column {column!r}: {_show(raw)} is not a valid {kind}"
                                 if not _missing(raw) else
                                 f"column {column!r} has no value (type {kind} needs one)")
    return converted, bad


def _convert(series: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    if kind not in COLUMN_TYPES:
        raise ValueError(f"unknown column type {kind!r}")
    missing = series.isna()
    if kind in INTEGER_TYPES:
        numbers = pd.to_numeric(series, errors="coerce")
        info = np.iinfo(INTEGER_TYPES[kind])
        integral = numbers.notna() & (numbers % 1 == 0) & numbers.between(info.min, info.max)
        problems = ~integral
        return numbers.where(integral, 0).astype(INTEGER_TYPES[kind]), problems
    if kind in FLOAT_TYPES:
        numbers = pd.to_numeric(series, errors="coerce")
        return numbers.astype(FLOAT_TYPES[kind]), numbers.isna() & ~missing
    if kind == "boolean":
        flags = series.map(_boolean)
        problems = flags.isna()
        return flags.where(~problems, False).astype(bool), problems
    if kind == "datetime":
        times = pd.to_datetime(series, errors="coerce")
        return times, times.isna() & ~missing
    if kind == "string":
        text = series.map(lambda v: None if _missing(v) else str(v)).astype(object)
        return text, pd.Series(False, index=series.index)
    return series.astype(object), pd.Series(False, index=series.index)  # binary: as read


def _boolean(value: object) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if _missing(value):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA \
        or value is pd.NaT


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
