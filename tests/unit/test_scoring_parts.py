"""Pure parts of the scoring runtime: GPU detection, local names, logs, outcomes."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from shared.contract.manifest import InputFile
from shared.scoring.batch import FAILED, SUCCEEDED, MiniBatch
from shared.scoring.gpus import detect_gpus, gpu_types
from shared.scoring.pool import RunResult, _read_tail, _stack_dump
from shared.scoring.scoring_runtime import _outcome
from shared.scoring.work_folders import local_paths, relative_parts, safe_segment
from shared.worker.encoding import EncodedPart
from shared.worker.protocol import describe


@pytest.mark.parametrize(("visible", "expected"), [
    ("0,1", ("0", "1")),
    (" 2 , 3 ", ("2", "3")),
    ("", ()),
    ("-1", ()),
    ("2,-1,3", ("2",)),
    ("GPU-8f2c", ("GPU-8f2c",)),
])
def test_cuda_visible_devices_decides_when_set(visible, expected):
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": visible}) == expected


def test_gpus_are_counted_with_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\n"
                    "echo 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))

    assert detect_gpus({}) == ("0", "1")


def test_no_nvidia_smi_means_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus({}) == ()


def test_a_broken_nvidia_smi_means_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus({}) == ()


@pytest.mark.parametrize(("name", "parts"), [
    ("a/b/c.png", ("a", "b", "c.png")),
    ("../../etc/passwd", ("etc", "passwd")),
    ("/abs/x.txt", ("abs", "x.txt")),
    ("a\\..\\b.txt", ("a", "b.txt")),
    ("./x/./y", ("x", "y")),
    ("..", ()),
])
def test_relative_parts_never_leave_the_folder(name, parts):
    assert relative_parts(name) == parts


@pytest.mark.parametrize(("name", "segment"), [
    ("job-1", "job-1"), ("../x", "_x"), ("..", "_"), ("a/b c", "a_b_c"), ("", "_"),
])
def test_safe_segment_is_one_harmless_folder_name(name, segment):
    assert safe_segment(name) == segment


def test_local_paths_keep_file_names_and_never_clash(tmp_path: Path):
    files = [InputFile("c", "in/x/img1.png", "x/img1.png"),
             InputFile("c", "in/img2.png", "img2.png"),
             InputFile("c", "in/../x/img1.png", "../x/img1.png"),
             InputFile("c", "in/odd", "")]
    paths = local_paths(files, tmp_path)

    assert paths[0] == tmp_path / "x" / "img1.png"
    assert paths[1] == tmp_path / "img2.png"
    assert paths[2].name == "img1.png" and paths[2] != paths[0]
    assert paths[3] == tmp_path / "in" / "odd"
    assert all(p.is_relative_to(tmp_path) for p in paths)


def test_describe_gives_one_line():
    assert describe(ValueError("bad\nvalue  here")) == "ValueError: bad value here"
    assert describe(SystemExit(42)) == "SystemExit: 42"
    assert describe(KeyError()) == "KeyError"


def test_long_logs_keep_their_end(tmp_path: Path):
    log = tmp_path / "attempt.log"
    log.write_bytes(b"a" * 50 + b"THE END")

    assert _read_tail(log, limit=10) == "[... 47 bytes of earlier output cut ...]\naaaTHE END"
    assert _read_tail(log) == "a" * 50 + "THE END"
    assert _read_tail(tmp_path / "missing.log") == ""


def test_stack_dumps_are_found_in_logs():
    log = "going to sleep\nCurrent thread 0x7f (most recent call first):\n  File \"s.py\"\n"
    assert _stack_dump(log).startswith("Current thread 0x7f")
    assert _stack_dump("just output\n") is None


def _batch(files: int) -> MiniBatch:
    inputs = tuple(InputFile("c", f"f{i}", f"f{i}") for i in range(files))
    return MiniBatch(job_id="j", index=4, files=inputs, attempt=2, timeout=5)


def test_outcome_caps_succeeded_at_the_number_of_files():
    part = EncodedPart(b"0\n1\n2\n3\n4\n")
    result = RunResult(SUCCEEDED, 5, part, (), None, None, "")
    outcome = _outcome(_batch(3), result, time.monotonic(), 0.1)

    assert (outcome.succeeded, outcome.failed, outcome.rows, outcome.part) == (3, 0, 5, part)
    assert (outcome.job_id, outcome.index, outcome.attempt) == ("j", 4, 2)


def test_outcome_names_the_files_a_short_return_left_out():
    batch = _batch(3)
    result = RunResult(SUCCEEDED, 2, EncodedPart(b"a\nb\n"), (1,), None, None, "")
    outcome = _outcome(batch, result, time.monotonic(), 0.0)

    assert (outcome.succeeded, outcome.failed, outcome.missing) == (2, 1, (batch.files[1],))


def test_a_failed_outcome_fails_every_file():
    result = RunResult(FAILED, 0, None, (), "ValueError: x", "Traceback...", "log")
    outcome = _outcome(_batch(3), result, time.monotonic() - 1, 0.2)

    assert (outcome.status, outcome.succeeded, outcome.failed) == ("failed", 0, 3)
    assert outcome.part is None and outcome.duration >= 1


def test_gpu_device_types_come_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\n[ "$1" = "--query-gpu=index,name" ] || exit 1\n'
                    "echo '0, NVIDIA H100 80GB HBM3'\necho '1, Tesla T4'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_types(("0", "1", "GPU-uuid")) == {"0": "NVIDIA H100 80GB HBM3", "1": "Tesla T4",
                                                 "GPU-uuid": "GPU"}
    assert gpu_types(()) == {}
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert gpu_types(("0",)) == {"0": "GPU"}


def _parquet(frame) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


def test_parts_are_checked_on_the_scoring_host(monkeypatch):
    import pandas as pd

    from shared.scoring import part_check
    from shared.scoring.part_check import InvalidPart, check_part

    good = _parquet(pd.DataFrame({"a": [1, 2, 3]}))
    check_part(EncodedPart(good), "parquet", 3)
    check_part(EncodedPart(b"a\nb\n"), "azureml", 2)
    check_part(None, None, 5)
    for part, fmt, rows, message in [
            (EncodedPart(good), "parquet", 4, r"holds 3 rows where run\(\) returned 4"),
            (EncodedPart(b"PAR1 not really"), "parquet", 1, "cannot be read"),
            (EncodedPart(good[:-20]), "parquet", 3, "cannot be read"),
            (EncodedPart(b"x"), None, 1, "none were asked for"),
            (None, "csv", 1, "no output rows")]:
        with pytest.raises(InvalidPart, match=message):
            check_part(part, fmt, rows)
    # A part that compresses to almost nothing but decodes to more than the cap.
    monkeypatch.setattr(part_check, "MAX_PART_DECODED_BYTES", 1024 * 1024)
    bomb = _parquet(pd.DataFrame({"zeros": ["0" * 1024] * 4096}))
    assert len(bomb) < 64 * 1024
    with pytest.raises(InvalidPart, match="decodes to .* bytes or more"):
        check_part(EncodedPart(bomb), "parquet", 4096)
    monkeypatch.setattr(part_check, "MAX_PART_BYTES", 1024)
    with pytest.raises(InvalidPart, match="more than the 1,024 one mini-batch may produce"):
        check_part(EncodedPart(b"x" * 1000, b"h" * 100), "csv", 1)


def test_a_part_that_cannot_be_stored_fails_the_attempt():
    from shared.scoring.scoring_runtime import _checked

    files = (InputFile("c", "a.txt", "a.txt"),)
    batch = MiniBatch("j", 0, files, 1, 30.0, output_format="parquet")
    result = RunResult(SUCCEEDED, 1, EncodedPart(b"not parquet"), (), None, None, "log\n")
    checked = _checked(result, batch)
    assert checked.status == FAILED and checked.part is None
    assert checked.error.startswith("run()'s return cannot be stored as output: ")
    assert checked.log.startswith("log\n") and "cannot be read" in checked.log
    assert _outcome(batch, checked, time.monotonic(), 0.0).failed == 1
