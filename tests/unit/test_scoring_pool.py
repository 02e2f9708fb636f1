"""Worker pools on local files (no storage): GPU assignment, crashes, broken scripts."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from shared.scoring.batch import STOPPED
from shared.scoring.pool import WorkerPool, worker_cpu_threads
from shared.worker.protocol import (
    CPU_THREAD_VARIABLES,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    WorkerSpec,
)

SCRIPTS = Path(__file__).resolve().parents[1] / "scoring_scripts"


def spec(script: Path, tmp_path: Path, **env: str) -> WorkerSpec:
    return WorkerSpec(script_path=str(script), code_dir=str(script.parent),
                      model_dir=str(tmp_path), environment=env)


@pytest.fixture
def inputs(tmp_path: Path) -> list[str]:
    path = tmp_path / "input.txt"
    path.write_text("data")
    return [str(path)]


def test_each_worker_sees_its_own_gpu(tmp_path, inputs, part_rows):
    pool = WorkerPool(spec(SCRIPTS / "echo.py", tmp_path, ECHO_SLEEP="0.5",
                           ECHO_ENV_COLUMNS="CUDA_VISIBLE_DEVICES"),
                      2, scratch_dir=tmp_path / "logs", gpus=["0", "1"])
    try:
        with ThreadPoolExecutor(2) as threads:
            results = list(threads.map(
                lambda _: pool.run(inputs, 30, str(tmp_path), output_format="jsonl"), range(2)))
    finally:
        pool.close()

    assert [r.status for r in results] == ["succeeded"] * 2
    assert sorted(part_rows(r.part.data)[0]["CUDA_VISIBLE_DEVICES"] for r in results) == [
        "0", "1"]
    assert [pool.gpu_for(slot) for slot in range(3)] == ["0", "1", "0"]
    # Each result says which GPU its worker had, how long run() took by the worker's clock
    # (the script slept 0.5 s), and what it read: what usage reports add up.
    for result in results:
        assert result.gpu == part_rows(result.part.data)[0]["CUDA_VISIBLE_DEVICES"]
        assert result.run_seconds >= 0.5 and result.input_bytes == 4


def test_without_gpus_cuda_visible_devices_is_left_alone(tmp_path):
    pool = WorkerPool(spec(SCRIPTS / "echo.py", tmp_path), 1, scratch_dir=tmp_path)
    assert pool.gpu_for(0) is None


def test_an_exit_code_of_a_worker_that_ends_itself_is_reported(tmp_path, inputs):
    pool = WorkerPool(spec(SCRIPTS / "kills_itself.py", tmp_path, KILL_EXIT_CODE="3"), 1,
                      scratch_dir=tmp_path / "logs")
    try:
        result = pool.run(inputs, 30, str(tmp_path))
    finally:
        pool.close()

    assert (result.status, result.error) == ("failed", "worker process exited with code 3")
    assert "ending my own process" in result.log


@pytest.mark.parametrize(("source", "error"), [
    ("def init():\n    pass\n", "could not load scoring script: AttributeError: scoring "
                                 "script broken.py has no run() function"),
    ("def init(:\n", "could not load scoring script: SyntaxError: "),
    ("import sys\nsys.exit(42)\n", "could not load scoring script: SystemExit: 42"),
])
def test_a_script_that_cannot_load_fails_with_a_clear_error(tmp_path, inputs, source, error):
    script = tmp_path / "code" / "broken.py"
    script.parent.mkdir()
    script.write_text(source)
    pool = WorkerPool(spec(script, tmp_path), 1, scratch_dir=tmp_path / "logs")
    try:
        result = pool.run(inputs, 30, str(tmp_path))
    finally:
        pool.close()

    assert result.status == "failed" and result.error.startswith(error)
    assert "Traceback" in result.traceback


def test_init_that_hangs_is_ended_after_the_init_timeout(tmp_path, inputs):
    script = tmp_path / "code" / "slow_init.py"
    script.parent.mkdir()
    script.write_text("import time\n\ndef init():\n    time.sleep(60)\n\n"
                      "def run(mini_batch):\n    return mini_batch\n")
    pool = WorkerPool(spec(script, tmp_path), 1, scratch_dir=tmp_path / "logs",
                      init_timeout=1)
    try:
        result = pool.run(inputs, 30, str(tmp_path))
    finally:
        pool.close()

    assert (result.status, result.error) == ("failed", "init() timed out after 1s")
    assert 'slow_init.py", line 4' in result.traceback


def test_a_list_of_any_objects_becomes_their_str_lines(tmp_path, inputs):
    script = tmp_path / "code" / "objects.py"
    script.parent.mkdir()
    script.write_text("class Thing:\n    def __str__(self):\n        return 'a thing'\n\n"
                      "def init():\n    pass\n\n"
                      "def run(mini_batch):\n    return [Thing(), lambda: 1, ('t', 1)]\n")
    pool = WorkerPool(spec(script, tmp_path), 1, scratch_dir=tmp_path / "logs")
    try:
        result = pool.run(inputs, 30, str(tmp_path), output_format="azureml")
    finally:
        pool.close()

    # Nothing is pickled back to the host: the worker writes str(element), as Azure ML does.
    lines = result.part.data.decode().splitlines()
    assert (result.status, result.rows) == ("succeeded", 3)
    assert lines[0] == "a thing" and "<lambda>" in lines[1] and lines[2] == "('t', 1)"


def test_a_return_the_output_format_cannot_hold_fails_the_batch_but_keeps_the_worker(
        tmp_path, inputs):
    script = tmp_path / "code" / "unprintable.py"
    script.parent.mkdir()
    script.write_text("import os\n\nclass Thing:\n    def __str__(self):\n"
                      "        raise ValueError('no text for this')\n\n"
                      "def init():\n    pass\n\n"
                      "def run(mini_batch):\n"
                      "    if os.path.exists(mini_batch[0] + '.ok'):\n"
                      "        return ['fine']\n"
                      "    return [Thing()]\n")
    bad, good = _run_bad_then_good(script, tmp_path, inputs)

    assert bad.status == "failed"
    assert bad.error == ("run()'s return cannot be written as azureml output: "
                         "ValueError: no text for this")
    assert "Traceback" in bad.traceback
    assert (good.status, good.part.data) == ("succeeded", b"fine\n")


def test_a_short_return_names_the_inputs_it_left_out(tmp_path):
    files = []
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(name)
        files.append(str(tmp_path / name))
    pool = WorkerPool(spec(SCRIPTS / "fewer_rows.py", tmp_path), 1,
                      scratch_dir=tmp_path / "logs")
    try:
        result = pool.run(files, 30, str(tmp_path), output_format=None,
                          names=["in/a.txt", "in/b.txt", "in/c.txt"])
    finally:
        pool.close()

    assert (result.status, result.rows, result.part, result.missing) == (
        "succeeded", 2, None, (2,))


def test_workers_get_the_cpu_thread_count_even_where_a_deployment_sets_one(
        tmp_path, inputs, monkeypatch, part_rows):
    # Thread counts are reserved: the contract refuses a deployment that sets one, and a
    # record that has one anyway does not override batchfn's.
    for name in CPU_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    columns = ",".join(CPU_THREAD_VARIABLES)
    sized = WorkerPool(replace(spec(SCRIPTS / "echo.py", tmp_path, ECHO_ENV_COLUMNS=columns),
                               cpu_threads=3), 1, scratch_dir=tmp_path / "logs")
    chosen = WorkerPool(replace(spec(SCRIPTS / "echo.py", tmp_path, ECHO_ENV_COLUMNS=columns,
                                     OMP_NUM_THREADS="7"), cpu_threads=3),
                        1, scratch_dir=tmp_path / "logs")
    try:
        sized_row = part_rows(sized.run(inputs, 30, str(tmp_path), output_format="jsonl")
                              .part.data)[0]
        chosen_row = part_rows(chosen.run(inputs, 30, str(tmp_path), output_format="jsonl")
                               .part.data)[0]
    finally:
        sized.close()
        chosen.close()
    assert [str(sized_row[name]) for name in CPU_THREAD_VARIABLES] == ["3", "3", "3"]
    assert [str(chosen_row[name]) for name in CPU_THREAD_VARIABLES] == ["3", "3", "3"]


@pytest.mark.parametrize(("concurrency", "cpus", "threads"), [
    (1, 2, 1), (1, 1, 1), (2, 2, 1), (1, 16, 15), (4, 16, 3), (0, 4, 3)])
def test_worker_cpu_threads_leave_a_core_to_the_host(concurrency, cpus, threads):
    assert worker_cpu_threads(concurrency, cpus) == threads


def _run_bad_then_good(script: Path, tmp_path: Path, inputs: list[str]) -> tuple:
    """Run one batch, mark its first input `.ok`, run again in the same worker."""
    pool = WorkerPool(spec(script, tmp_path), 1, scratch_dir=tmp_path / "logs")
    try:
        bad = pool.run(inputs, 30, str(tmp_path), output_format="azureml")
        Path(inputs[0] + ".ok").write_text("")
        return bad, pool.run(inputs, 30, str(tmp_path), output_format="azureml")
    finally:
        pool.close()


def test_a_stopped_mini_batch_ends_its_run_and_one_waiting_never_runs(tmp_path, inputs):
    pool = WorkerPool(spec(SCRIPTS / "echo.py", tmp_path, ECHO_SLEEP="30"), 1,
                      scratch_dir=tmp_path / "logs", prefetch=False)
    running, waiting = threading.Event(), threading.Event()
    started = []
    try:
        with ThreadPoolExecutor(2) as threads:
            first = threads.submit(pool.run, inputs, 60, str(tmp_path), stop=running,
                                   on_start=lambda: started.append("first"))
            time.sleep(0.5)
            second = threads.submit(pool.run, inputs, 60, str(tmp_path), stop=waiting,
                                    on_start=lambda: started.append("second"))
            time.sleep(1.5)
            waiting.set()  # still waiting for the one slot
            assert second.result(timeout=5).status == STOPPED
            running.set()  # its run() sleeps 30 s: the worker is ended at once
            assert first.result(timeout=5).status == STOPPED
        assert started == ["first"]
        assert pool._slots[0].worker is None  # ended: the next mini-batch starts a fresh one
    finally:
        pool.close()


@pytest.mark.parametrize(("what", "size", "error"), [
    ("message", 20 * 1024 * 1024, "ValueError: xxx"),
    ("rows", 66 * 1024 * 1024, "bytes of azureml output, more than the 67,108,864"),
    ("pipe", 0, "could not read the worker's answer: WorkerMessageTooLarge: a worker sent a "
              "message of more than"),
])
def test_what_a_worker_hands_back_is_bounded(tmp_path, inputs, what, size, error):
    pool = WorkerPool(spec(SCRIPTS / "oversized.py", tmp_path, OVERSIZED_WHAT=what,
                           OVERSIZED_BYTES=str(size)), 1, scratch_dir=tmp_path / "logs")
    try:
        result = pool.run(inputs, 60, str(tmp_path), output_format="azureml")
        after = pool.run(inputs, 60, str(tmp_path), output_format="azureml")
    finally:
        pool.close()

    assert result.status == "failed" and error in result.error
    assert len(result.error) <= MAX_ERROR_MESSAGE_CHARS
    assert len(result.traceback or "") <= MAX_TRACEBACK_CHARS
    if what == "message":
        assert result.error.endswith("the end of the message")
        assert "the end of the message" in result.traceback
    assert (after.status, after.error) == (result.status, result.error)  # a fresh worker
