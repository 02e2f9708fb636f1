"""Per-mini-batch result parts and the output formats they merge into.

A part holds one mini-batch's rows already serialised for the job's output format, so
finalize only concatenates: text formats (azureml, csv, jsonl) store final lines, parquet
stores a small parquet file per part. Part metadata carries the counts (to recover a
completion record) and, for csv, the header line.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TEXT_FORMATS = ("azureml", "csv", "jsonl")


@dataclass(frozen=True)
class EncodedPart:
    data: bytes
    header: bytes = b""  # csv only: the header line, written once at the top of the output


def encode_part(table: pd.DataFrame | None, returned_list: bool, output_format: str) -> EncodedPart:
    """Serialise one run() return for `output_format` (see module docstring)."""
    if table is None or len(table) == 0:
        return EncodedPart(b"")
    if output_format == "azureml":
        if returned_list:
            return EncodedPart("".join(f"{value}\n" for value in table.iloc[:, 0]).encode())
        return EncodedPart(table.to_csv(sep=" ", header=False, index=False,
                                        lineterminator="\n").encode())
    if output_format == "csv":
        header = ",".join(_csv_cell(str(column)) for column in table.columns) + "\n"
        return EncodedPart(table.to_csv(header=False, index=False, lineterminator="\n").encode(),
                           header.encode())
    if output_format == "jsonl":
        text = table.to_json(orient="records", lines=True, default_handler=str)
        return EncodedPart((text if text.endswith("\n") else text + "\n").encode())
    if output_format == "parquet":
        sink = io.BytesIO()
        pq.write_table(_arrow_table(table), sink)
        return EncodedPart(sink.getvalue())
    raise ValueError(f"unknown output format {output_format!r}")


def header_to_metadata(header: bytes) -> str:
    return base64.b64encode(header).decode()


def header_from_metadata(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def read_parquet_part(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def _arrow_table(table: pd.DataFrame) -> pa.Table:
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
