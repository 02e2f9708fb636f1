"""Reading planned row ranges into pandas DataFrames, row by row failures included.

A CSV range costs one ranged read of its bytes (plus one of the header per file version,
cached), a JSONL range one read, a parquet range the footer (cached) and the column
chunks of the row groups it overlaps. Each record is checked on its own: a CSV record
with the wrong number of fields, an unclosed quote, bytes that are not UTF-8, a JSONL
line that is not a JSON object, or a value that does not convert to its column type
fails that row alone (a `FailedInput` with file and row number), and the other rows are
scored. A range that cannot be read at all (a corrupt parquet page, a file replaced since
planning) fails all its rows; errors of the storage service itself are raised, for the
mini-batch to be retried.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.worker.input_errors import InputChanged, UnreadableRange
from shared.worker.portable import zip_equal
from shared.worker.tabular.column_types import coerce_columns
from shared.worker.tabular.failures import FailedInput
from shared.worker.tabular.formats import CSV, JSONL, PARQUET, TABULAR_FORMATS
from shared.worker.tabular.record_ends import UTF8_BOM, scan_bytes
from shared.worker.tabular.sources import ByteSource, SourceFile
from shared.worker.tabular.split import RowRange

# frame.attrs key of the frame handed to run(): where its rows come from, as runs of
# (file, first row number, row count). Tuples, so that pandas can compare and copy them.
ROW_ORIGINS_ATTR = "batchfn_row_origins"
HEADER_CACHE_FILES = 256
FOOTER_CACHE_FILES = 16
PARQUET_BATCH_ROWS = 64 * 1024


@dataclass(frozen=True, eq=False)
class RangeRows:
    """What one range held: its parsed rows, their row numbers, and its failed rows."""

    frame: pd.DataFrame  # parsed rows in file order, index 0..n-1
    row_numbers: np.ndarray  # int64: the file row number of each frame row
    failed: tuple[FailedInput, ...]


@dataclass(frozen=True, eq=False)
class TabularBatch:
    """A mini-batch of rows: the frame run() gets, where its rows come from, what failed.

    `rows` is the number of rows planned, `len(frame)` + the rows of `failed`.
    """

    frame: pd.DataFrame
    origins: tuple[tuple[str, int, int], ...]  # (file, first row, count) runs of frame rows
    failed: tuple[FailedInput, ...]
    rows: int

    def origin_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Per frame row: its file name and its row number in that file."""
        return origin_columns(self.origins)


@dataclass(frozen=True)
class BatchPiece:
    """One range of one file to read: `file` is the name used in outputs and errors."""

    file: str
    source: ByteSource
    format: str
    range: RowRange


def origin_columns(origins: Sequence[tuple[str, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Expand (file, first row, count) runs to a file name and a row number per row."""
    counts = [count for _, _, count in origins]
    files = np.repeat(np.array([file for file, _, _ in origins], dtype=object), counts)
    rows = np.concatenate([np.arange(first, first + count, dtype=np.int64)
                           for _, first, count in origins]) if origins else \
        np.empty(0, dtype=np.int64)
    return files, rows


class TableReader:
    """Reads ranges; keeps CSV headers and parquet footers of recent file versions.

    One per worker process: consecutive mini-batches of one file then cost only their
    own bytes. Thread-safe.
    """

    def __init__(self) -> None:
        self._headers: OrderedDict[str, bytes] = OrderedDict()
        self._footers: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def read_batch(self, pieces: Sequence[BatchPiece],
                   column_types: Mapping[str, str] | None = None) -> TabularBatch:
        """Read every piece of a mini-batch into one frame, in order (see TabularBatch).

        The frame's attrs[ROW_ORIGINS_ATTR] holds its `origins`, for a scoring script to
        tell rows apart (the built-in MLflow scorer writes them as `row` and `file_name`).
        """
        frames, origins, failed = [], [], []
        rows = 0
        for piece in pieces:
            part = self.read(piece, column_types)
            rows += piece.range.rows
            failed.extend(part.failed)
            if len(part.frame):
                frames.append(part.frame)
                origins.extend(_runs(piece.file, part.row_numbers))
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else \
            frames[0] if frames else pd.DataFrame()
        frame.attrs[ROW_ORIGINS_ATTR] = tuple(origins)
        return TabularBatch(frame=frame, origins=tuple(origins), failed=tuple(failed),
                            rows=rows)

    def read(self, piece: BatchPiece,
             column_types: Mapping[str, str] | None = None) -> RangeRows:
        """Read one range (see the module docstring for what fails a row or the range)."""
        if piece.format not in TABULAR_FORMATS:
            raise ValueError(f"not a tabular format: {piece.format!r}")
        row_range = piece.range
        try:
            if piece.format == PARQUET:
                frame = self._read_parquet(piece.source, row_range)
                parsed = RangeRows(frame, np.arange(row_range.first_row,
                                                    row_range.first_row + len(frame)), ())
                return apply_column_types(parsed, piece.file, column_types)
            header, body = self._read_text(piece.source, row_range, piece.format)
            return parse_text_range(piece.format, header, body, row_range, piece.file,
                                    column_types)
        except (InputChanged, UnreadableRange) as exc:
            return RangeRows(pd.DataFrame(), np.empty(0, dtype=np.int64), (FailedInput.make(
                piece.file, exc, row=row_range.first_row, rows=row_range.rows),))

    def _read_text(self, source: ByteSource, row_range: RowRange,
                   fmt: str) -> tuple[bytes, bytes]:
        if fmt != CSV or not row_range.header_end:
            return b"", source.read(row_range.start, row_range.end - row_range.start)
        key = source.identity
        with self._lock:
            header = self._headers.get(key)
            if header is not None:
                self._headers.move_to_end(key)
        if header is not None:
            return header, source.read(row_range.start, row_range.end - row_range.start)
        if row_range.start == row_range.header_end:  # the file's first range: one read
            data = source.read(0, row_range.end)
            header, body = data[:row_range.header_end], data[row_range.header_end:]
        else:
            header = source.read(0, row_range.header_end)
            body = source.read(row_range.start, row_range.end - row_range.start)
        self._remember(self._headers, key, header, HEADER_CACHE_FILES)
        return header, body

    def _read_parquet(self, source: ByteSource, row_range: RowRange) -> pd.DataFrame:
        import pyarrow as pa
        import pyarrow.parquet as pq

        key = source.identity
        with self._lock:
            metadata = self._footers.get(key)
        try:
            parquet = pq.ParquetFile(SourceFile(source), metadata=metadata)
            if metadata is None:
                self._remember(self._footers, key, parquet.metadata, FOOTER_CACHE_FILES)
            table = _parquet_rows(parquet, row_range)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise UnreadableRange(f"cannot read rows {row_range.first_row}.."
                                  f"{row_range.first_row + row_range.rows - 1}: {exc}") \
                from None
        if table.num_rows != row_range.rows:
            # The footer's counts are claims: what the pages hold decides.
            raise UnreadableRange(f"rows {row_range.first_row}.."
                                  f"{row_range.first_row + row_range.rows - 1} were planned from "
                                  f"the file's footer, but it holds {table.num_rows} of them")
        return table.to_pandas()

    def _remember(self, cache: OrderedDict[str, Any], key: str, value: Any,
                  limit: int) -> None:
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > limit:
                cache.popitem(last=False)


def parse_text_range(fmt: str, header: bytes, body: bytes, row_range: RowRange, file: str,
                     column_types: Mapping[str, str] | None = None) -> RangeRows:
    """Parse a CSV or JSONL range from its bytes (`header`: the CSV header bytes).

    Pure: the caller fetched the bytes however it likes. Raises InputChanged when the
    bytes hold another number of rows than planned.
    """
    scan = scan_bytes(body, quoted=fmt == CSV, count_delimiters=fmt == CSV)
    ends = np.append(scan.ends, len(body))
    records = np.flatnonzero(scan.has_text)
    if records.size != row_range.rows:
        raise InputChanged(f"{file}: bytes {row_range.start}..{row_range.end} hold "
                            f"{records.size} rows where {row_range.rows} were planned; "
                            "did the file change?")
    spans = _Spans(scan.starts[records], ends[records])
    numbers = np.arange(row_range.first_row, row_range.first_row + records.size,
                        dtype=np.int64)
    if fmt == JSONL:
        parsed = _parse_jsonl(body, spans, numbers, file)
    else:
        fields = scan.delimiters[records] + 1
        open_quote = scan.in_quotes_after and records.size and records[-1] == scan.ends.size
        parsed = _parse_csv(header, body, spans, fields, bool(open_quote), numbers, file)
    return apply_column_types(parsed, file, column_types)


class _Spans:
    """Where each record of a body lies: [starts[i], stops[i]), line feed excluded."""

    def __init__(self, starts: np.ndarray, stops: np.ndarray) -> None:
        self.starts, self.stops = starts, stops

    def __len__(self) -> int:
        return int(self.starts.size)

    def __getitem__(self, position: int) -> tuple[int, int]:
        return int(self.starts[position]), int(self.stops[position])

    def pairs(self) -> list[tuple[int, int]]:
        return list(zip_equal(self.starts.tolist(), self.stops.tolist()))


def apply_column_types(parsed: RangeRows, file: str,
                       column_types: Mapping[str, str] | None) -> RangeRows:
    """Convert typed columns; a row whose value does not convert fails (see column_types)."""
    if not column_types or not len(parsed.frame):
        return parsed
    frame, bad = coerce_columns(parsed.frame, column_types)
    if not bad:
        return RangeRows(frame, parsed.row_numbers, parsed.failed)
    keep = np.ones(len(frame), dtype=bool)
    keep[list(bad)] = False
    failed = [FailedInput.make(file, message, row=int(parsed.row_numbers[position]))
              for position, message in bad.items()]
    return RangeRows(frame[keep].reset_index(drop=True), parsed.row_numbers[keep],
                     _in_row_order(parsed.failed, failed))


def _parse_jsonl(body: bytes, spans: _Spans, numbers: np.ndarray, file: str) -> RangeRows:
    objects, keep, failed = [], [], []
    for position, (start, end) in enumerate(spans.pairs()):
        try:
            value = json.loads(body[start:end])
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            failed.append(FailedInput.make(file, f"not valid JSON: {exc}",
                                           row=int(numbers[position])))
            continue
        if not isinstance(value, dict):
            failed.append(FailedInput.make(
                file, f"a JSONL row must be a JSON object, found {type(value).__name__}",
                row=int(numbers[position])))
            continue
        objects.append(value)
        keep.append(position)
    return RangeRows(pd.DataFrame(objects), numbers[keep], tuple(failed))


def _parse_csv(header: bytes, body: bytes, spans: _Spans, fields: np.ndarray,
               open_quote: bool, numbers: np.ndarray, file: str) -> RangeRows:
    header = header.removeprefix(UTF8_BOM)
    if header and not header.endswith(b"\n"):
        header += b"\n"
    columns = _header_fields(header, file)
    failed: dict[int, str] = {}
    if open_quote:
        failed[len(spans) - 1] = "a quoted field is not closed before the end of the file"
    for position in np.flatnonzero(fields != len(columns)).tolist():
        failed.setdefault(position, f"expected {len(columns)} fields as in the header, "
                                    f"found {int(fields[position])}")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        for position, (start, end) in enumerate(spans.pairs()):
            try:
                body[start:end].decode("utf-8")
            except UnicodeDecodeError as exc:
                failed.setdefault(position, f"not valid UTF-8: {exc.reason} at byte "
                                            f"{exc.start} of the row")
    keep = np.ones(len(spans), dtype=bool)
    keep[list(failed)] = False
    good = np.flatnonzero(keep).tolist()
    data = body if not failed else b"".join(body[s:e] + b"\n" for s, e in
                                           (spans[p] for p in good))
    frame = _read_csv(header + data, len(good))
    if frame is None:
        # pandas saw other rows than the records found (a quote inside an unquoted field,
        # a bare carriage return): parse each record alone to find the ones at fault.
        parsed = {}
        for position in good:
            start, end = spans[position]
            row, problem = _read_one_csv_row(header, body[start:end])
            if problem is None:
                parsed[position] = row
            else:
                failed[position] = problem
        good = [p for p in good if p in parsed]
        frame = pd.concat([parsed[p] for p in good], ignore_index=True) if good else \
            pd.DataFrame(columns=columns)
    return RangeRows(frame, numbers[good], tuple(
        FailedInput.make(file, failed[p], row=int(numbers[p])) for p in sorted(failed)))


def _header_fields(header: bytes, file: str) -> list[str]:
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableRange(f"the CSV header of {file} is not valid UTF-8: {exc}") from None
    for fields in csv.reader(io.StringIO(text)):
        if any(field.strip() for field in fields):
            return fields
    raise UnreadableRange(f"{file} has no CSV header")


def _read_csv(data: bytes, expected_rows: int) -> pd.DataFrame | None:
    """The rows of `data` (header first), or None unless pandas finds `expected_rows`."""
    try:
        frame = pd.read_csv(io.BytesIO(data), index_col=False, encoding="utf-8")
    except (pd.errors.ParserError, ValueError):
        return None
    return frame if len(frame) == expected_rows else None


def _read_one_csv_row(header: bytes, record: bytes) -> tuple[pd.DataFrame, str | None]:
    try:
        frame = pd.read_csv(io.BytesIO(header + record + b"\n"), index_col=False,
                            encoding="utf-8")
    except (pd.errors.ParserError, ValueError) as exc:
        return pd.DataFrame(), f"cannot parse the row: {exc}"
    if len(frame) != 1:
        return frame, (f"the row reads as {len(frame)} rows: is there a quote inside an "
                       "unquoted field, or a bare carriage return?")
    return frame, None


def _runs(file: str, numbers: np.ndarray) -> list[tuple[str, int, int]]:
    """(file, first, count) runs of consecutive row numbers."""
    if not numbers.size:
        return []
    breaks = np.flatnonzero(np.diff(numbers) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [numbers.size]))
    return [(file, int(numbers[a]), int(b - a))
            for a, b in zip_equal(starts.tolist(), stops.tolist())]


def _parquet_rows(parquet: Any, row_range: RowRange) -> Any:
    """The rows of `row_range` as an arrow table, decoding only the row groups it touches."""
    import pyarrow as pa

    metadata = parquet.metadata
    first, stop = row_range.first_row, row_range.first_row + row_range.rows
    if stop > metadata.num_rows:
        raise InputChanged(f"rows {first}..{stop - 1} were planned but the file has "
                            f"{metadata.num_rows}; did it change?")
    groups, skip, group_start = [], 0, 0
    for index in range(metadata.num_row_groups):
        group_rows = metadata.row_group(index).num_rows
        group_stop = group_start + group_rows
        if group_stop > first and group_start < stop:
            if not groups:
                skip = first - group_start
            groups.append(index)
        group_start = group_stop
    batches, wanted = [], row_range.rows
    if groups:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups,
                                          use_threads=False):
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                continue
            batch = batch.slice(skip, wanted)
            skip = 0
            batches.append(batch)
            wanted -= batch.num_rows
            if not wanted:
                break
    return pa.Table.from_batches(batches, schema=parquet.schema_arrow)


def _in_row_order(*groups: Sequence[FailedInput]) -> tuple[FailedInput, ...]:
    return tuple(sorted((f for group in groups for f in group), key=lambda f: f.row or 0))
