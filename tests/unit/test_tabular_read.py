"""Reading row ranges: failed rows with file and row number, types, mini-batches, caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shared.worker.tabular.column_types import coerce_columns
from shared.worker.tabular.failures import FailedInput
from shared.worker.tabular.read import ROW_ORIGINS_ATTR, BatchPiece, TableReader, origin_columns
from shared.worker.tabular.sources import LocalFileSource
from shared.worker.tabular.split import RowRange, parquet_rows, plan_table
from tests.conftest import parquet_claiming
from tests.unit.test_tabular_split import CountingSource


def source_of(tmp_path: Path, name: str, data: bytes) -> LocalFileSource:
    path = tmp_path / name
    path.write_bytes(data)
    return LocalFileSource(path)


def read_whole(source: LocalFileSource, fmt: str, name: str = "in.csv", **kwargs):
    plan = plan_table(source, fmt, 10_000)
    return TableReader().read(BatchPiece(name, source, fmt, plan.ranges[0]), **kwargs)


def test_csv_rows_that_cannot_be_parsed_fail_alone_with_their_row_numbers(tmp_path):
    data = (b"id,name,score\n"
            b"0,ok,1.0\n"
            b"1,too,many,fields\n"
            b"2,few\n"
            b"3,\xff\xfe bad bytes,3.0\n"
            b"4,fine,4.0\n"
            b'5,"never closed,5.0\n')
    source = source_of(tmp_path, "people.csv", data)

    result = read_whole(source, "csv", "folder/people.csv")

    assert result.frame.to_dict("records") == [{"id": 0, "name": "ok", "score": 1.0},
                                               {"id": 4, "name": "fine", "score": 4.0}]
    assert list(result.row_numbers) == [0, 4]
    assert [(f.file, f.row, f.rows) for f in result.failed] == [
        ("folder/people.csv", 1, 1), ("folder/people.csv", 2, 1),
        ("folder/people.csv", 3, 1), ("folder/people.csv", 5, 1)]
    errors = [f.error for f in result.failed]
    assert errors[0] == "expected 3 fields as in the header, found 4"
    assert errors[1] == "expected 3 fields as in the header, found 2"
    assert errors[2].startswith("not valid UTF-8: invalid start byte at byte 2 of the row")
    assert errors[3] == "a quoted field is not closed before the end of the file"


def test_a_quote_inside_an_unquoted_field_fails_the_lines_it_joins(tmp_path):
    # Not RFC 4180: pandas reads 5" as text, the quote rule joins the two lines into one
    # record (row 1), which fails; the rows around it are scored, numbered by record.
    data = b'id,size\n0,12\n1,5" screen\n2,7" screen\n3,9\n'
    source = source_of(tmp_path, "sizes.csv", data)

    result = read_whole(source, "csv")

    assert list(result.frame["id"]) == [0, 3]
    assert list(result.row_numbers) == [0, 2]
    assert [(f.row, f.error) for f in result.failed] == [
        (1, "the row reads as 2 rows: is there a quote inside an unquoted field, or a bare "
            "carriage return?")]


def test_jsonl_lines_that_are_not_json_objects_fail_alone(tmp_path):
    lines = [b'{"id": 0}', b'{"id": 1', b'[1, 2]', b'"text"', b'{"id": 4, "extra": true}']
    source = source_of(tmp_path, "rows.jsonl", b"\n".join(lines) + b"\n")

    result = read_whole(source, "jsonl", "rows.jsonl")

    assert list(result.frame["id"]) == [0, 4]
    assert result.frame["extra"].tolist()[1] is True
    assert list(result.row_numbers) == [0, 4]
    assert [(f.row, f.error.split(":")[0]) for f in result.failed] == [
        (1, "not valid JSON"), (2, "a JSONL row must be a JSON object, found list"),
        (3, "a JSONL row must be a JSON object, found str")]


def test_column_types_fail_rows_whose_values_do_not_convert(tmp_path):
    data = b"age,height,member,name\n30,1.8,yes,a\nold,1.7,no,b\n41,,true,c\n,1.6,maybe,d\n"
    source = source_of(tmp_path, "typed.csv", data)
    types = {"age": "long", "height": "double", "member": "boolean", "name": "string"}

    result = read_whole(source, "csv", "typed.csv", column_types=types)

    assert result.frame["age"].dtype == np.int64
    assert result.frame["height"].dtype == np.float64
    assert result.frame["member"].tolist() == [True, True]
    assert result.frame["name"].tolist() == ["a", "c"]
    assert list(result.row_numbers) == [0, 2]
    assert [(f.row, f.error) for f in result.failed] == [
        (1, "column 'age': 'old' is not a valid long"),
        (3, "column 'age' has no value (type long needs one)")]


def test_coerce_columns_checks_integer_ranges_and_fractions():
    frame = pd.DataFrame({"n": ["1", "2.5", str(2**40), "7"]})
    converted, bad = coerce_columns(frame, {"n": "integer"})
    assert sorted(bad) == [1, 2]
    assert converted["n"].dtype == np.int32
    assert converted["n"].iloc[3] == 7


def test_a_file_changed_since_planning_fails_the_range_rows(tmp_path):
    source = source_of(tmp_path, "moving.csv", b"a\n1\n2\n3\n")
    plan = plan_table(source, "csv", 10)
    Path(source.name).write_bytes(b"a\n1\n\n3\n")

    result = TableReader().read(BatchPiece("moving.csv", source, "csv", plan.ranges[0]))

    assert len(result.frame) == 0
    assert [(f.row, f.rows) for f in result.failed] == [(0, 3)]
    assert "hold 2 rows where 3 were planned" in result.failed[0].error


def test_a_corrupt_parquet_range_fails_its_rows(tmp_path):
    path = tmp_path / "broken.parquet"
    pq.write_table(pa.table({"x": list(range(100))}), path, row_group_size=50,
                   compression="none")
    data = bytearray(path.read_bytes())
    data[4:200] = b"\x00" * 196  # the first row group's pages
    path.write_bytes(bytes(data))
    source = LocalFileSource(path)
    plan = plan_table(source, "parquet", 50)

    reader = TableReader()
    first, second = (reader.read(BatchPiece("broken.parquet", source, "parquet", r))
                     for r in plan.ranges)

    assert [(f.row, f.rows) for f in first.failed] == [(0, 50)]
    assert first.failed[0].error.startswith("cannot read rows 0..49")
    assert list(second.frame["x"]) == list(range(50, 100))


def test_parquet_rows_are_counted_as_they_are_read_not_taken_from_the_footer(tmp_path):
    source = source_of(tmp_path, "liar.parquet", parquet_claiming(10 ** 9))
    assert parquet_rows(source) == 10 ** 9  # what the footer claims, planned against caps
    reader = TableReader()
    for first_row in (0, 10, 10 ** 9 - 10):
        read = reader.read(BatchPiece("liar.parquet", source, "parquet",
                                      RowRange(first_row, 10)))
        assert len(read.frame) == 0 and [(f.row, f.rows) for f in read.failed] == [
            (first_row, 10)]
        assert "were planned from the file's footer, but it holds" in read.failed[0].error


def test_a_mini_batch_of_several_files_keeps_where_each_row_comes_from(tmp_path):
    one = source_of(tmp_path, "one.csv", b"id,v\n0,a\n1,b\n2,c\n3,d\n")
    two = source_of(tmp_path, "two.jsonl",
                    b'{"id": 10, "v": "x"}\nnot json\n{"id": 12, "v": "z"}\n')
    plan_one = plan_table(one, "csv", 2)
    plan_two = plan_table(two, "jsonl", 5)
    pieces = [BatchPiece("one.csv", one, "csv", plan_one.ranges[1]),
              BatchPiece("two.jsonl", two, "jsonl", plan_two.ranges[0])]

    batch = TableReader().read_batch(pieces)

    assert batch.rows == 5
    assert batch.frame.to_dict("records") == [{"id": 2, "v": "c"}, {"id": 3, "v": "d"},
                                              {"id": 10, "v": "x"}, {"id": 12, "v": "z"}]
    assert batch.origins == (("one.csv", 2, 2), ("two.jsonl", 0, 1), ("two.jsonl", 2, 1))
    assert batch.frame.attrs[ROW_ORIGINS_ATTR] == batch.origins
    files, rows = batch.origin_columns()
    assert files.tolist() == ["one.csv", "one.csv", "two.jsonl", "two.jsonl"]
    assert rows.tolist() == [2, 3, 0, 2]
    assert [(f.file, f.row) for f in batch.failed] == [("two.jsonl", 1)]


def test_origins_survive_what_scoring_scripts_do_with_the_frame(tmp_path):
    source = source_of(tmp_path, "a.csv", b"x\n1\n2\n")
    batch = TableReader().read_batch([BatchPiece("a.csv", source, "csv",
                                                 plan_table(source, "csv", 5).ranges[0])])
    predictions = pd.DataFrame({"p": [0.1, 0.2]})

    joined = pd.concat([batch.frame, predictions], axis=1)

    assert batch.frame[["x"]].attrs[ROW_ORIGINS_ATTR] == (("a.csv", 0, 2),)
    assert list(joined.columns) == ["x", "p"]


def test_the_csv_header_is_read_once_per_file_version(tmp_path):
    inner = source_of(tmp_path, "h.csv", b"a,b\n" + b"".join(b"%d,%d\n" % (i, i)
                                                           for i in range(30)))
    source = CountingSource(inner)
    plan = plan_table(inner, "csv", 10)
    reader = TableReader()

    for row_range in plan.ranges:
        reader.read(BatchPiece("h.csv", source, "csv", row_range))

    # The first range is read with its header in one request, the others alone.
    assert source.reads == 3


def test_a_parquet_footer_is_read_once_per_file_version(tmp_path):
    path = tmp_path / "f.parquet"
    payload = [f"{i:05d}" * 100 for i in range(3000)]  # 1.5 MB: the footer is read alone
    pq.write_table(pa.table({"x": payload}), path, row_group_size=1000, compression="none",
                   use_dictionary=False)
    inner = LocalFileSource(path)
    plan = plan_table(inner, "parquet", 1000)
    reader = TableReader()
    source = CountingSource(inner)
    reader.read(BatchPiece("f.parquet", source, "parquet", plan.ranges[0]))
    after_first = source.reads

    reader.read(BatchPiece("f.parquet", source, "parquet", plan.ranges[1]))

    assert source.reads - after_first < after_first


def test_origin_columns_of_no_rows_are_empty():
    files, rows = origin_columns(())
    assert files.size == rows.size == 0


def test_failed_input_messages_are_one_bounded_line():
    failure = FailedInput.make("f.csv", "line one\nline two " + "x" * 2000, row=3)
    assert "\n" not in failure.error and len(failure.error) == 1000
    assert failure.to_dict() == {"file": "f.csv", "error": failure.error, "row": 3, "rows": 1}


def test_range_reading_uses_only_the_range_bytes(tmp_path):
    body = b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(100))
    inner = source_of(tmp_path, "r.jsonl", body)
    plan = plan_table(inner, "jsonl", 10)
    source = CountingSource(inner)

    result = TableReader().read(BatchPiece("r.jsonl", source, "jsonl", plan.ranges[5]))

    assert list(result.frame["i"]) == list(range(50, 60))
    assert source.bytes_read == plan.ranges[5].end - plan.ranges[5].start < len(body) // 5
    assert RowRange.from_list(plan.ranges[5].to_list()) == plan.ranges[5]
