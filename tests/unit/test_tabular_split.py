"""Row-range planning over real CSV, JSONL and parquet files: every row once, in order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.contract.errors import InvalidRequest
from shared.contract.settings import check_input_format
from shared.worker.input_errors import UnsplittableInput
from shared.worker.tabular import split as split_module
from shared.worker.tabular.formats import check_splittable, is_data_file
from shared.worker.tabular.read import BatchPiece, TableReader
from shared.worker.tabular.record_ends import scan_bytes
from shared.worker.tabular.sources import LocalFileSource, read_chunks
from shared.worker.tabular.split import RowBatcher, RowRange, plan_table

# Quoted line feeds (LF and CRLF), doubled quotes, CRLF line ends, blank and
# whitespace-only lines, a byte order mark and a blank line before the header.
TRICKY_CSV = (
    b"\xef\xbb\xbf\r\n"
    b"id,note,score\r\n"
    b'0,"two\nlines",1.5\r\n'
    b"\r\n"
    b'1,"say ""hi"", then go",2.5\n'
    b"   \n"
    b'2,"crlf\r\ninside",3.5\n'
    b'3,"",4.5\n'
    b"\t\n"
    b'4,"a,b,c",5.5\n'
    b'5,"""quoted""",6.5\n'
    b"6,last,7.5"  # no line feed at the end
)


def write(tmp_path: Path, name: str, data: bytes) -> LocalFileSource:
    path = tmp_path / name
    path.write_bytes(data)
    return LocalFileSource(path)


def read_all(source: LocalFileSource, fmt: str, ranges: tuple[RowRange, ...]) -> pd.DataFrame:
    reader = TableReader()
    parts = [reader.read(BatchPiece("f", source, fmt, r)) for r in ranges]
    for part, row_range in zip(parts, ranges, strict=True):
        assert not part.failed
        assert list(part.row_numbers) == list(range(row_range.first_row,
                                                    row_range.first_row + row_range.rows))
    return pd.concat([p.frame for p in parts], ignore_index=True)


@pytest.mark.parametrize("rows_per_range", [1, 2, 3, 4, 6, 7, 100])
@pytest.mark.parametrize("chunk_bytes", [1, 5, 16, 1 << 20])
def test_csv_ranges_hold_every_row_once_in_order(tmp_path, rows_per_range, chunk_bytes):
    source = write(tmp_path, "tricky.csv", TRICKY_CSV)

    plan = plan_table(source, "csv", rows_per_range, chunk_bytes=chunk_bytes)

    expected = pd.read_csv(source.name)
    assert plan.rows == len(expected) == 7
    assert [r.rows for r in plan.ranges] == [min(rows_per_range, 7 - first)
                                             for first in range(0, 7, rows_per_range)]
    assert plan.ranges[0].start == plan.ranges[0].header_end
    assert all(a.end == b.start for a, b in zip(plan.ranges, plan.ranges[1:], strict=False))
    assert plan.ranges[-1].end == source.size
    # Types are inferred per range (a range of one empty note reads it as float).
    pd.testing.assert_frame_equal(read_all(source, "csv", plan.ranges), expected,
                                  check_dtype=False)


def test_a_quoted_field_keeps_its_line_feeds_across_chunk_boundaries(tmp_path):
    long_note = "line\n" * 50
    frame = pd.DataFrame({"id": range(20), "note": [long_note] * 20})
    path = tmp_path / "notes.csv"
    frame.to_csv(path, index=False)
    source = LocalFileSource(path)

    plan = plan_table(source, "csv", 3, chunk_bytes=7)

    assert plan.rows == 20
    result = read_all(source, "csv", plan.ranges)
    assert list(result["id"]) == list(range(20))
    assert (result["note"] == long_note).all()


def test_200000_row_csv_splits_into_1000_row_ranges_read_back_exactly(tmp_path):
    rows = 200_000
    ids = np.arange(rows)
    frame = pd.DataFrame({"id": ids, "value": ids * 0.5,
                          "text": np.where(ids % 97 == 0, 'multi\nline "quoted", text', "plain")})
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    source = LocalFileSource(path)

    plan = plan_table(source, "csv", 1000, chunk_bytes=256 * 1024)

    assert plan.rows == rows
    assert len(plan.ranges) == 200
    assert all(r.rows == 1000 for r in plan.ranges)
    assert [r.first_row for r in plan.ranges] == list(range(0, rows, 1000))
    result = read_all(source, "csv", plan.ranges)
    assert len(result) == rows
    assert (result["id"].to_numpy() == ids).all()
    assert (result["text"] == frame["text"]).all()


def test_jsonl_ranges_skip_blank_lines_a_bom_and_crlf(tmp_path):
    records = [{"id": i, "text": f"row {i}\nwith an escaped line feed", "n": i * 2}
               for i in range(9)]
    lines = [json.dumps(r).encode() for r in records]
    data = (b"\xef\xbb\xbf" + lines[0] + b"\r\n\r\n" + b"\n".join(lines[1:5]) + b"\n  \n"
            + b"\r\n".join(lines[5:]))
    source = write(tmp_path, "rows.jsonl", data)

    plan = plan_table(source, "jsonl", 4, chunk_bytes=10)

    assert [r.rows for r in plan.ranges] == [4, 4, 1]
    assert plan.ranges[0].start == 3  # after the byte order mark
    result = read_all(source, "jsonl", plan.ranges)
    assert result.to_dict("records") == records


def test_parquet_ranges_come_from_the_footer_and_cross_row_groups(tmp_path):
    table = pa.table({"id": pa.array(range(1000)), "name": [f"n{i}" for i in range(1000)]})
    path = tmp_path / "groups.parquet"
    pq.write_table(table, path, row_group_size=130)  # 8 groups: 7 x 130 + 90
    source = LocalFileSource(path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 8

    plan = plan_table(source, "parquet", 300)

    assert [(r.first_row, r.rows) for r in plan.ranges] == [(0, 300), (300, 300), (600, 300),
                                                             (900, 100)]
    result = read_all(source, "parquet", plan.ranges)
    assert list(result["id"]) == list(range(1000))
    assert list(result["name"]) == [f"n{i}" for i in range(1000)]


def test_planning_a_parquet_file_reads_only_its_footer(tmp_path):
    table = pa.table({"payload": [f"{i:05d}" * 200 for i in range(5000)]})
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=500, compression="none", use_dictionary=False)
    source = CountingSource(LocalFileSource(path))

    plan = plan_table(source, "parquet", 1000)

    assert plan.rows == 5000
    # pyarrow reads the last 64 KiB, where the footer lies, and nothing else.
    assert source.reads <= 2
    assert source.bytes_read <= 64 * 1024 < source.size // 10


def test_planning_a_small_csv_file_costs_one_read(tmp_path):
    source = CountingSource(write(tmp_path, "small.csv", TRICKY_CSV))
    assert plan_table(source, "csv", 2).rows == 7
    assert source.reads == 1


def test_a_file_that_is_not_parquet_is_unsplittable(tmp_path):
    source = write(tmp_path, "fake.parquet", b"not parquet at all")
    with pytest.raises(UnsplittableInput, match="not a readable parquet file"):
        plan_table(source, "parquet", 10)


def test_a_parquet_footer_whose_counts_disagree_is_unsplittable(tmp_path):
    from tests.conftest import parquet_claiming

    path = tmp_path / "liar.parquet"
    path.write_bytes(parquet_claiming(10 ** 9, row_groups_too=False))
    with pytest.raises(UnsplittableInput, match="claims 1000000000 rows but its row groups "
                                                "hold 1"):
        plan_table(LocalFileSource(path), "parquet", 10)


def test_first_range_rows_fills_the_rest_of_a_mini_batch(tmp_path):
    source = write(tmp_path, "a.csv", b"x\n" + b"".join(b"%d\n" % i for i in range(10)))

    plan = plan_table(source, "csv", 4, first_range_rows=1)

    assert [r.rows for r in plan.ranges] == [1, 4, 4, 1]


def test_row_batcher_packs_small_files_into_full_mini_batches(tmp_path):
    batcher: RowBatcher[str] = RowBatcher(5)
    batches = []
    for name, rows in [("a", 3), ("b", 4), ("c", 0), ("d", 12)]:
        data = b"x\n" + b"".join(b"%d\n" % i for i in range(rows))
        plan = plan_table(write(tmp_path, f"{name}.csv", data), "csv", 5,
                          first_range_rows=batcher.room)
        batches += batcher.add(name, plan.ranges)
    batches.append(batcher.finish())

    shapes = [[(p.file, p.range.first_row, p.range.rows) for p in batch] for batch in batches]
    assert shapes == [
        [("a", 0, 3), ("b", 0, 2)],
        [("b", 2, 2), ("d", 0, 3)],
        [("d", 3, 5)],
        [("d", 8, 4)],
    ]
    assert batcher.finish() is None


def test_row_batcher_starts_a_new_mini_batch_for_a_range_that_does_not_fit():
    batcher: RowBatcher[str] = RowBatcher(5)
    assert batcher.add("a", [RowRange(0, 3)]) == []
    full = batcher.add("b", [RowRange(0, 5)])
    assert [[p.file for p in batch] for batch in full] == [["a"], ["b"]]


@pytest.mark.parametrize(("data", "rows"), [
    (b"", 0),
    (b"a,b\n", 0),
    (b"a,b", 0),
    (b"\n\n  \n", 0),
    (b"a,b\n\n\n", 0),
    (b"a,b\n1,2", 1),
])
def test_empty_and_header_only_csv_files(tmp_path, data, rows):
    plan = plan_table(write(tmp_path, "e.csv", data), "csv", 10)
    assert plan.rows == rows
    assert len(plan.ranges) == (1 if rows else 0)


def test_a_runaway_quote_makes_the_file_unsplittable(tmp_path, monkeypatch):
    monkeypatch.setattr(split_module, "MAX_RECORD_BYTES", 100)
    data = b"id,text\n1,ok\n2,\"open quote\n" + b"more text\n" * 50
    with pytest.raises(UnsplittableInput, match="starts at byte 13 .* is a quote left open"):
        plan_table(write(tmp_path, "open.csv", data), "csv", 10, chunk_bytes=16)


def test_an_unterminated_quote_in_the_header_is_unsplittable(tmp_path):
    with pytest.raises(UnsplittableInput, match="header has an unterminated quote"):
        plan_table(write(tmp_path, "h.csv", b'a,"b\n1,2\n'), "csv", 10)


def test_compressed_files_cannot_be_split():
    check_splittable("data/part-0.csv")
    check_splittable("part-0.snappy.parquet")
    with pytest.raises(UnsplittableInput, match=r"compressed files \(.gz\)"):
        check_splittable("data/part-0.csv.gz")


def test_data_files_skip_markers_and_hidden_files():
    assert is_data_file("folder/part-0001.csv")
    assert not any(is_data_file(n) for n in ("_SUCCESS", "dir/_start", ".part-0.crc", "dir/"))


def test_input_format_setting_is_validated():
    assert check_input_format(" CSV ") == "csv"
    with pytest.raises(InvalidRequest, match="expected one of files, csv, jsonl, parquet"):
        check_input_format("xlsx")


def test_row_range_round_trips_through_its_manifest_form():
    row_range = RowRange(1000, 1000, 4096, 8192, 17)
    assert RowRange.from_list(row_range.to_list()) == row_range
    for bad in ([1, 2, 3], [1, 2, 3, 4, -5], [1, 2, 3, 4, True], "1,2,3,4,5"):
        with pytest.raises(ValueError, match="not a row range"):
            RowRange.from_list(bad)


def test_scan_counts_fields_outside_quotes_only():
    scan = scan_bytes(b'a,"b,c",d\n"x\ny",z\n', quoted=True, count_delimiters=True)
    assert scan.records == 2
    assert list(scan.delimiters[:2]) == [2, 1]
    assert not scan.in_quotes_after


def test_scan_carries_the_quote_state_between_buffers():
    first = scan_bytes(b'1,"open\n', quoted=True)
    second = scan_bytes(b'still open",2\n3,4\n', quoted=True, in_quotes=first.in_quotes_after)
    assert (first.records, first.in_quotes_after) == (0, True)
    assert second.records == 2


def test_read_chunks_returns_every_byte_in_order(tmp_path):
    data = bytes(range(256)) * 40
    source = write(tmp_path, "bytes.bin", data)
    assert b"".join(read_chunks(source, 0, 1000, prefetch=3)) == data
    assert b"".join(read_chunks(source, 10, 333, prefetch=1)) == data[10:]


class CountingSource:
    """A ByteSource wrapper that counts what is read."""

    def __init__(self, inner: LocalFileSource) -> None:
        self.inner = inner
        self.bytes_read = 0
        self.reads = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def identity(self) -> str:
        return self.inner.identity

    def read(self, offset: int, length: int) -> bytes:
        data = self.inner.read(offset, length)
        self.bytes_read += len(data)
        self.reads += 1
        return data
