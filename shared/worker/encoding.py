"""Turning one run() return into the job's output lines, inside the worker process.

The worker process encodes what run() returned for the job's output format right after
run(), so the host receives bytes ready to store instead of a pickled DataFrame it would
have to import pandas for, unpickle and serialise again on its own (shared) interpreter
lock. Text formats (azureml, csv, jsonl) become final lines; parquet a small parquet file
that finalize appends to the merged one. pandas and pyarrow are imported only when the
return or the format needs them: a list return in Azure ML's format needs neither.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TEXT_FORMATS = ("azureml", "csv", "jsonl")
OUTPUT_FORMATS = (*TEXT_FORMATS, "parquet")
LIST_COLUMN = "result"  # the one column of the table made from a list return


@dataclass(frozen=True)
class EncodedPart:
    """One mini-batch's rows serialised for the output format."""

    data: bytes
    header: bytes = b""  # csv only: the header line, written once at the top of the output


@dataclass(frozen=True)
class EncodedResult:
    """What the host needs of one run() return: its row count, its part, the inputs it left out.

    `part` is None when no output format was asked for (`output_action: summary_only`).
    `missing` lists the positions of the inputs a short return (fewer rows than inputs)
    left out, found through a column that holds the input file names; every position when
    no column does. It is empty when the return has a row per input.
    """

    rows: int
    part: EncodedPart | None
    missing: tuple[int, ...] = ()


def encode_result(value: Any, returned_list: bool, output_format: str | None,
                  names: Sequence[str], azureml_separator: str = " ") -> EncodedResult:
    """Encode run()'s `value` (a DataFrame, or a list when `returned_list`) for the host.

    `names` are the display names of the mini-batch's input files, in order (empty for a
    mini-batch of rows, whose short returns are counted by the worker). The `azureml`
    format separates a DataFrame's columns with `azureml_separator`: a space for scoring
    scripts, a comma for the built-in MLflow scorer, as in Azure ML.
    """
    rows = len(value)
    part = None if output_format is None else encode_part(value, returned_list, output_format,
                                                           azureml_separator)
    missing = missing_inputs(value, returned_list, names) if rows < len(names) else ()
    return EncodedResult(rows, part, missing)


def encode_part(value: Any, returned_list: bool, output_format: str,
                azureml_separator: str = " ") -> EncodedPart:
    """Serialise one run() return for `output_format` (see the module docstring)."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {output_format!r}")
    if value is None or len(value) == 0:
        return EncodedPart(b"")
    if returned_list and output_format == "azureml":
        # Azure ML writes one str(element) line per element of a list return.
        return EncodedPart("".join(f"{element}\n" for element in value).encode())
    table = as_table(value, returned_list)
    if output_format == "azureml":
        return EncodedPart(table.to_csv(sep=azureml_separator, header=False, index=False,
                                        lineterminator="\n").encode())
    if output_format == "csv":
        header = ",".join(_csv_cell(str(column)) for column in table.columns) + "\n"
        return EncodedPart(table.to_csv(header=False, index=False, lineterminator="\n").encode(),
                           header.encode())
    if output_format == "jsonl":
        text = table.to_json(orient="records", lines=True, default_handler=str)
        return EncodedPart((text if text.endswith("\n") else text + "\n").encode())
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(_arrow_table(table), sink)
    return EncodedPart(sink.getvalue())


def as_table(value: Any, returned_list: bool) -> Any:
    """run()'s return as a DataFrame: a list return is one column named "result"."""
    import pandas

    if returned_list:
        return pandas.DataFrame({LIST_COLUMN: pandas.Series(list(value), dtype=object)})
    return value


def missing_inputs(value: Any, returned_list: bool, names: Sequence[str]) -> tuple[int, ...]:
    """Positions of the inputs a short return left out (see EncodedResult.missing)."""
    everything = tuple(range(len(names)))
    if value is None or len(value) == 0:
        return everything
    known = set(names) | {posixpath.basename(name) for name in names}
    columns = [list(value)] if returned_list else [value[c] for c in value.columns]
    for column in columns:
        values = {str(v) for v in column}
        if values and values <= known:
            return tuple(i for i, name in enumerate(names)
                         if name not in values and posixpath.basename(name) not in values)
    return everything


def _arrow_table(table: Any) -> Any:
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(table, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        # Mixed Python objects in a column: keep them readable rather than fail the batch.
        as_text = table.astype({c: str for c in table.columns if table[c].dtype == object})
        return pa.Table.from_pandas(as_text, preserve_index=False)


def _csv_cell(text: str) -> str:
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text
