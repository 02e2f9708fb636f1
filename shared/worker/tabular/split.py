"""Planning row ranges: each tabular file cut into ranges of a given number of rows.

CSV and JSONL files are scanned once from start to end, a few MiB at a time
(`read_chunks`), and cut after every `rows_per_range`-th record: the row counts are exact,
so every range knows its first row number and size before anything is scored, and a
failed range is an exact number of failed rows. The scan holds at most a few chunks in
memory whatever the file's size, and finds record ends with numpy (`record_ends.py`), so its
speed is the speed of reading the file. Parquet files are not scanned: their footer gives
the rows of each row group, and ranges are cut by row number.

Cut points fall after a record's line feed, never inside a quoted field, so each range
parses on its own once the CSV header is put in front of it. Blank lines are no rows: a
range's `rows` counts only records with text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from shared.worker.input_errors import UnsplittableInput
from shared.worker.portable import zip_equal
from shared.worker.tabular.formats import CSV, PARQUET, TABULAR_FORMATS
from shared.worker.tabular.record_ends import UTF8_BOM, scan_bytes
from shared.worker.tabular.sources import SCAN_CHUNK_BYTES, ByteSource, SourceFile, read_chunks

# A record longer than this is refused: it is almost always an unbalanced quote that
# swallowed the rest of the file, and one range of it would not fit a worker's memory.
MAX_RECORD_BYTES = 64 * 1024 * 1024

FileKey = TypeVar("FileKey")


@dataclass(frozen=True)
class RowRange:
    """Rows [first_row, first_row + rows) of one file, counted from 0 after any header.

    For CSV and JSONL the rows are the records in bytes [start, end); for CSV the header
    record (with any byte order mark and blank lines before it) is bytes [0, header_end).
    Parquet rows are found through the file's footer, so its byte fields are 0.
    """

    first_row: int
    rows: int
    start: int = 0
    end: int = 0
    header_end: int = 0

    def to_list(self) -> list[int]:
        """A compact JSON form for manifests: [first_row, rows, start, end, header_end]."""
        return [self.first_row, self.rows, self.start, self.end, self.header_end]

    @classmethod
    def from_list(cls, values: Any) -> RowRange:
        """The inverse of `to_list`; ValueError if `values` is not five integers >= 0."""
        if not isinstance(values, (list, tuple)) or len(values) != 5 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ValueError(f"not a row range: {values!r}")
        return cls(*values)


@dataclass(frozen=True)
class TablePlan:
    """One file's row ranges, in order, covering every row once."""

    format: str
    size: int
    rows: int
    ranges: tuple[RowRange, ...]


def plan_table(source: ByteSource, fmt: str, rows_per_range: int,
               first_range_rows: int | None = None, *,
               chunk_bytes: int = SCAN_CHUNK_BYTES) -> TablePlan:
    """Cut `source` (a `fmt` file) into ranges of `rows_per_range` rows, in file order.

    The first range holds `first_range_rows` rows instead (when given), so that a file can
    fill the rest of a mini-batch that the previous file began (see RowBatcher). A CSV or
    JSONL file is read `chunk_bytes` at a time. Raises UnsplittableInput when the file
    cannot be split (not parquet, a runaway record) and SourceChanged when it disappears
    or changes while being read.
    """
    ranges = tuple(iter_ranges(source, fmt, rows_per_range, first_range_rows,
                               chunk_bytes=chunk_bytes))
    return TablePlan(fmt, source.size, sum(r.rows for r in ranges), ranges)


def iter_ranges(source: ByteSource, fmt: str, rows_per_range: int,
                first_range_rows: int | None = None, *,
                chunk_bytes: int = SCAN_CHUNK_BYTES,
                parquet_rows_known: int | None = None) -> Iterator[RowRange]:
    """The ranges of `plan_table`, each yielded as soon as the scan has found its end.

    A planner that hands ranges on as they come holds none of a large file's ranges, and
    its mini-batches can be scored while the rest of the file is scanned. The errors are
    plan_table's; they can come after some ranges were yielded (a runaway record half-way
    through the file). A parquet file's rows are read from its footer unless the caller
    read them already (`parquet_rows_known`, from `parquet_rows`).
    """
    if fmt not in TABULAR_FORMATS:
        raise ValueError(f"not a tabular format: {fmt!r}")
    if rows_per_range < 1 or (first_range_rows is not None and first_range_rows < 1):
        raise ValueError("ranges need at least one row")
    first = rows_per_range if first_range_rows is None else first_range_rows
    if fmt == PARQUET:
        rows = parquet_rows(source) if parquet_rows_known is None else parquet_rows_known
        yield from (RowRange(f, n) for f, n in _cuts(rows, first, rows_per_range))
        return
    scan = _TextScan(source.name, quoted=fmt == CSV, first_cut=first,
                     rows_per_range=rows_per_range)
    # The first chunk is read alone, so that a small file costs one request. A byte order
    # mark is no text: JSONL ranges begin after it (JSON parsers refuse it), a CSV header
    # keeps it in front (and the reader drops it).
    head = source.read(0, max(chunk_bytes, len(UTF8_BOM)))
    data_start = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0
    scan.begin(data_start)
    scan.feed(head[data_start:])
    yield from scan.take()
    for chunk in read_chunks(source, len(head), chunk_bytes):
        scan.feed(chunk)
        yield from scan.take()
    scan.finish(source.size)
    yield from scan.take()


def parquet_rows(source: ByteSource) -> int:
    """The number of rows of a parquet file, from its footer alone.

    It is what the file claims, not what it holds: the footer's total must add up over its
    row groups, and the reader checks each range's rows as it reads them (read.py).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(SourceFile(source)).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise UnsplittableInput(source.name, f"not a readable parquet file: {exc}") from None
    groups = sum(metadata.row_group(index).num_rows for index in range(metadata.num_row_groups))
    if metadata.num_rows != groups or metadata.num_rows < 0:
        raise UnsplittableInput(source.name, f"its footer claims {metadata.num_rows} rows but "
                                f"its row groups hold {groups}")
    return metadata.num_rows


def _cuts(rows: int, first: int, size: int) -> Iterator[tuple[int, int]]:
    start = 0
    step = first
    while start < rows:
        count = min(step, rows - start)
        yield start, count
        start += count
        step = size


class _TextScan:
    """The streaming state of one CSV/JSONL scan; see the module docstring."""

    def __init__(self, name: str, *, quoted: bool, first_cut: int, rows_per_range: int) -> None:
        self.name = name
        self.quoted = quoted
        self.rows_per_range = rows_per_range
        self.next_cut = first_cut  # the row count at which the next range ends
        self.rows = 0  # data rows seen so far
        self.ranges: list[RowRange] = []
        self._cut_rows = 0  # rows in ranges already emitted
        self._in_quotes = False
        self._offset = 0  # file offset of the next chunk
        self._record_start = 0  # file offset where the unfinished record began
        self._record_has_text = False  # whether it has a non-blank byte so far
        self._header_end: int | None = None  # CSV: unknown until the header ends
        self._range_start = 0

    def take(self) -> list[RowRange]:
        """The ranges found since the last call."""
        found, self.ranges = self.ranges, []
        return found

    def begin(self, data_start: int) -> None:
        self._offset = self._record_start = self._range_start = data_start
        if not self.quoted:
            self._header_end = 0

    def feed(self, chunk: bytes) -> None:
        scan = scan_bytes(chunk, quoted=self.quoted, in_quotes=self._in_quotes)
        has_text = scan.has_text
        has_text[0] |= self._record_has_text
        if scan.records:
            ends = self._offset + scan.ends + 1  # file offsets just past each record
            lengths = np.diff(ends, prepend=self._record_start)
            if int(lengths.max()) > MAX_RECORD_BYTES:
                where = int(np.argmax(lengths > MAX_RECORD_BYTES))
                self._too_long(int(ends[where] - lengths[where]))
            records = has_text[:scan.records]
            if self._header_end is None and records.any():
                header = int(np.argmax(records))
                records[header] = False
                self._header_end = self._range_start = int(ends[header])
            self._count(records, ends)
            self._record_start = int(ends[-1])
        self._record_has_text = bool(has_text[-1])
        self._offset += len(chunk)
        if self._offset - self._record_start > MAX_RECORD_BYTES:
            self._too_long(self._record_start)
        self._in_quotes = scan.in_quotes_after

    def finish(self, size: int) -> None:
        if self._offset != size:
            raise UnsplittableInput(self.name, f"read {self._offset} bytes of {size}")
        if self._record_has_text:  # the last record has no line feed
            if self._header_end is None:
                if self._in_quotes:
                    raise UnsplittableInput(self.name, "the header has an unterminated quote")
                self._header_end = self._range_start = size
            else:
                self.rows += 1
        if self.rows > self._cut_rows:
            self._emit(self.rows, size)

    def _count(self, has_text: np.ndarray, ends: np.ndarray) -> None:
        counts = np.cumsum(has_text, dtype=np.int64) + self.rows
        total = int(counts[-1])
        if total >= self.next_cut:
            targets = np.arange(self.next_cut, total + 1, self.rows_per_range, dtype=np.int64)
            positions = np.searchsorted(counts, targets, side="left")
            for target, end in zip_equal(targets.tolist(), ends[positions].tolist()):
                self._emit(target, end)
            self.next_cut = int(targets[-1]) + self.rows_per_range
        self.rows = total

    def _emit(self, rows_after: int, end: int) -> None:
        self.ranges.append(RowRange(first_row=self._cut_rows, rows=rows_after - self._cut_rows,
                                    start=self._range_start, end=end,
                                    header_end=self._header_end or 0))
        self._cut_rows = rows_after
        self._range_start = end

    def _too_long(self, start: int) -> None:
        raise UnsplittableInput(
            self.name, f"the record that starts at byte {start} is longer than "
            f"{MAX_RECORD_BYTES // (1024 * 1024)} MiB"
            + (": is a quote left open?" if self.quoted else ""))


@dataclass(frozen=True)
class RangePiece(Generic[FileKey]):
    """One file's part of a mini-batch: `range` of the file that `file` names."""

    file: FileKey
    range: RowRange


class RowBatcher(Generic[FileKey]):
    """Packs files' row ranges into mini-batches of `rows_per_batch` rows, in input order.

    Plan each file with `first_range_rows=batcher.room`: its first range then completes the
    mini-batch the previous files began, and a folder of small files makes full
    mini-batches rather than one small mini-batch per file. A range that does not fit
    starts a new mini-batch, so any plan is packed correctly. With `max_pieces` a
    mini-batch also ends at that many pieces (files), so that a folder of many tiny files
    does not make one mini-batch that reads thousands of files.
    """

    def __init__(self, rows_per_batch: int, max_pieces: int | None = None) -> None:
        if rows_per_batch < 1 or (max_pieces is not None and max_pieces < 1):
            raise ValueError("mini-batches need at least one row and one piece")
        self.rows_per_batch = rows_per_batch
        self.max_pieces = max_pieces
        self._pieces: list[RangePiece[FileKey]] = []
        self._rows = 0

    @property
    def room(self) -> int:
        """Rows the current mini-batch can still take."""
        return self.rows_per_batch - self._rows

    def add(self, file: FileKey,
            ranges: Iterable[RowRange]) -> list[tuple[RangePiece[FileKey], ...]]:
        """Add one file's ranges; returns the mini-batches they completed."""
        full = []
        for row_range in ranges:
            if row_range.rows > self.room and self._pieces:
                full.append(self._take())
            self._pieces.append(RangePiece(file, row_range))
            self._rows += row_range.rows
            if self._rows >= self.rows_per_batch or len(self._pieces) == self.max_pieces:
                full.append(self._take())
        return full

    def finish(self) -> tuple[RangePiece[FileKey], ...] | None:
        """The last, partly filled mini-batch (None when there is none)."""
        return self._take() if self._pieces else None

    def _take(self) -> tuple[RangePiece[FileKey], ...]:
        pieces = tuple(self._pieces)
        self._pieces.clear()
        self._rows = 0
        return pieces
