"""Unit tests of the jobs engine's pure parts: invoke parsing, progress, parts (locations:
test_storage_boundaries.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from shared.contract.errors import InvalidRequest
from shared.contract.ledger import Completion
from shared.contract.messages import InvalidMessage, MiniBatchMessage
from shared.control.blob_drop import drop_job_name, is_drop_control_file, is_marker
from shared.control.invoke_request import parse_invoke
from shared.control.orchestrator import poll_delay
from shared.control.progress import Progress
from shared.worker.encoding import encode_part, encode_result


def test_parse_native_and_azureml_bodies():
    request = parse_invoke("ep1", {"input": {"uri": "u", "type": "uri_file"}, "timeout": 5,
                                   "settings": {"error_threshold": 2}})
    assert request.input_type == "uri_file"
    assert request.overrides == {"error_threshold": 2, "retry_settings.timeout": 5}
    azureml = parse_invoke("ep1", {"properties": {"InputData": {"x": {
        "JobInputType": "UriFile", "Uri": "u"}}}}, header_deployment="blue")
    assert azureml.input_type == "uri_file" and azureml.deployment == "blue"
    with pytest.raises(InvalidRequest):
        parse_invoke("ep1", {"input": "u", "deployment_name": "green"}, header_deployment="blue")
    with pytest.raises(InvalidRequest):
        parse_invoke("ep1", {"properties": {"InputData": {}}})
    with pytest.raises(InvalidRequest):
        parse_invoke("ep1", ["not", "an", "object"])


def test_progress_counts_each_index_once_and_round_trips():
    progress = Progress.start(files=5, batches=3)
    assert progress.apply(Completion(0, True, 2, 0, 2, at="t"))
    assert not progress.apply(Completion(0, False, 0, 2, 0, at="t"))  # duplicate
    assert progress.apply(Completion(2, False, 0, 1, 0, "boom", at="t"))
    again = Progress.from_dict(progress.to_dict())
    assert (again.batches_done, again.files_failed, again.files_succeeded) == (2, 1, 2)
    assert list(again.succeeded_indices()) == [0]
    assert not again.finished
    view = again.view()
    assert view["files"]["pending"] == 2 and view["errors_sample"][0]["error"] == "boom"
    assert poll_delay(0) < poll_delay(100) == 2.0


def test_messages_stay_tiny_and_reject_garbage():
    text = MiniBatchMessage("batchjob-" + "a" * 90, 99_999, 999, 3).encode()
    assert len(text) < 200 and MiniBatchMessage.decode(text).prior_attempts == 3
    for bad in ("", "{}", '{"job": 1, "index": 0, "chunk": 0}', "[1]"):
        with pytest.raises(InvalidMessage):
            MiniBatchMessage.decode(bad)


def test_part_formats():
    table = pd.DataFrame({"file": ["a b.png", "c.png"], "label": [1, 2]})
    assert encode_part(table, False, "azureml").data == b'"a b.png" 1\nc.png 2\n'
    csv = encode_part(table, False, "csv")
    assert csv.header == b"file,label\n" and csv.data == b"a b.png,1\nc.png,2\n"
    assert encode_part(table, False, "jsonl").data.count(b"\n") == 2
    listed = encode_part([[1, 2], "x"], True, "azureml")
    assert listed.data == b"[1, 2]\nx\n"
    assert encode_part([[1, 2], "x"], True, "jsonl").data == b'{"result":[1,2]}\n{"result":"x"}\n'
    assert encode_part(None, False, "parquet").data == b""
    with pytest.raises(ValueError, match="unknown output format"):
        encode_part(table, False, "xml")


def test_a_short_return_names_what_it_left_out_through_a_column_of_file_names():
    names = ["in/a.png", "in/b.png", "in/c.png"]
    by_base_name = pd.DataFrame({"label": [1, 2], "file": ["a.png", "c.png"]})
    assert encode_result(by_base_name, False, "csv", names).missing == (1,)
    assert encode_result(["in/b.png"], True, None, names).missing == (0, 2)
    unnamed = encode_result(pd.DataFrame({"label": [1]}), False, "azureml", names)
    assert (unnamed.rows, unnamed.missing) == (1, (0, 1, 2))  # no column names the files
    whole = encode_result(pd.DataFrame({"label": [1, 2, 3]}), False, None, names)
    assert (whole.rows, whole.part, whole.missing) == (3, None, ())


def test_drop_marker_rule():
    assert is_marker("ep1/batch-7/_start") and is_marker("ep1/_start")  # the latter: refused
    assert not is_marker("ep1/batch/file.png") and not is_marker("ep1/batch/_job.json")
    assert is_drop_control_file("batchfn-drop", "_job.json")
    assert is_drop_control_file("batchfn-drop", "_output/predictions.csv")
    assert is_drop_control_file("batchfn-data", "sub/_start")
    assert not is_drop_control_file("batchfn-data", "_job.json")
    assert not is_drop_control_file("batchfn-drop", "images/_output.png")
    assert drop_job_name("ep1/b/_start", "e1") != drop_job_name("ep1/b/_start", "e2")


@pytest.mark.parametrize("part", [b"a.png 1\nb \xc3\xa4 \"q\" 2\n", b"PAR1\x00\xff\x80binary", b""])
def test_a_ledger_line_carries_its_part_byte_for_byte(part):
    completion = Completion(7, True, 2, 0, 2, at="t", part=part, header=b"file,label\n")
    line = completion.to_line()
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert Completion.from_line(line) == completion


def test_a_ledger_line_without_a_part_stays_small():
    line = Completion(3, False, 0, 4, 0, "x" * 500, at="t").to_line()
    assert Completion.from_line(line).part is None and len(line) < 400
