"""The scoring runtime end to end against a real Azurite: assets, inputs, worker processes."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from shared.contract.layout import DATA_CONTAINER
from shared.contract.manifest import InputFile
from shared.contract.registry_records import AssetRef, DeploymentRecord
from shared.contract.settings import DeploymentSettings
from shared.scoring import scoring_runtime as runtime_module
from shared.scoring.batch import MiniBatch, ScoringOutcome
from shared.scoring.deployment_folders import HOST_SEGMENT
from shared.scoring.scoring_runtime import ScoringRuntime, default_runtime
from shared.scoring.work_folders import RAM_PREFIX, ram_scratch_folder
from shared.scoring.worker_users import (
    ALLOW_ROOT_SETTING,
    WorkerUsers,
    deployment_user_name,
    reach_problem,
)
from shared.storage.account import StorageAccount
from tests.conftest import jsonl_rows
from tests.integration.conftest import script_assets


@pytest.fixture(scope="module")
def assets(account: StorageAccount) -> tuple[AssetRef, AssetRef]:
    """A tiny model folder and the test scripts folder, uploaded as versioned assets."""
    return script_assets(account, "echo", b"weights-v1\n")


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def runtime(account: StorageAccount, work_dir: Path):
    scoring = ScoringRuntime(account, work_dir, gpus=())
    yield scoring
    scoring.close()


def deployment(assets: tuple[AssetRef, AssetRef], script: str, *, name: str | None = None,
               env: dict[str, str] | None = None, **settings) -> DeploymentRecord:
    model, code = assets
    return DeploymentRecord(
        name=name or script.removesuffix(".py").replace("_", "-"),
        endpoint_name="scoring-tests", model=model, code=code, scoring_script=script,
        settings=DeploymentSettings.from_dict(settings), environment_variables=env or {})


def upload_inputs(account: StorageAccount, files: dict[str, bytes]) -> tuple[InputFile, ...]:
    """Upload `files` (display name → content) under a fresh folder, in the given order."""
    folder = f"inputs/{uuid.uuid4().hex[:8]}"
    container = account.container(DATA_CONTAINER)
    uploaded = []
    for display_name, data in files.items():
        container.upload_blob(f"{folder}/{display_name}", data)
        uploaded.append(InputFile(DATA_CONTAINER, f"{folder}/{display_name}", display_name))
    return tuple(uploaded)


def batch(files: tuple[InputFile, ...], *, job: str = "job-1", index: int = 0,
          attempt: int = 1, timeout: float = 30, output_format: str = "jsonl") -> MiniBatch:
    return MiniBatch(job_id=job, index=index, files=files, attempt=attempt, timeout=timeout,
                     output_format=output_format)


def column(outcome: ScoringOutcome, name: str) -> list:
    """One column of the outcome's rows (encoded as jsonl by the worker)."""
    return [row[name] for row in jsonl_rows(outcome.part.data)]


def three_files(account: StorageAccount) -> tuple[InputFile, ...]:
    return upload_inputs(account, {"sub/b.txt": b"bbb", "a.txt": b"a", "c.png": b"0123456789"})


def test_rows_follow_input_order_with_the_azure_ml_environment(account, assets, runtime,
                                                                work_dir):
    env = {"GREETING": "hello", "ECHO_MODEL_FILE": "model/weights.txt",
           "ECHO_ENV_COLUMNS": "GREETING,AZUREML_MODEL_DIR,AZUREML_BI_OUTPUT_PATH"}
    outcome = runtime.score(deployment(assets, "echo.py", env=env),
                            batch(three_files(account), job="env-job"))

    assert (outcome.status, outcome.succeeded, outcome.failed) == ("succeeded", 3, 0)
    assert outcome.error is None and outcome.rows == 3 and outcome.missing == ()
    assert column(outcome, "file") == ["b.txt", "a.txt", "c.png"]
    assert column(outcome, "size") == [3, 1, 10]
    assert set(column(outcome, "GREETING")) == {"hello"}
    assert set(column(outcome, "model")) == {"weights-v1"}
    model_dir = Path(column(outcome, "AZUREML_MODEL_DIR")[0])
    assert (model_dir / "model" / "weights.txt").read_text() == "weights-v1\n"
    assert column(outcome, "AZUREML_BI_OUTPUT_PATH")[0] == str(runtime.job_output_dir("env-job"))
    assert "echo init done" in outcome.log and "echo scoring 3 files" in outcome.log
    assert "INFO" in outcome.log and "echo info message" in outcome.log
    assert "echo debug message" not in outcome.log
    assert outcome.duration >= outcome.download_seconds >= 0
    assert not any(p.is_file() for p in (work_dir / "inputs").rglob("*"))  # removed after use


def test_init_runs_once_per_worker_process(account, assets, runtime, tmp_path):
    env = {"ECHO_RECORD_DIR": str(tmp_path), "ECHO_WITH_PID": "1"}
    record = deployment(assets, "echo.py", name="echo-once", env=env, logging_level="debug")
    files = upload_inputs(account, {"x.txt": b"x"})

    outcomes = [runtime.score(record, batch(files, index=i)) for i in range(3)]

    assert [o.status for o in outcomes] == ["succeeded"] * 3
    assert len({column(o, "pid")[0] for o in outcomes}) == 1
    assert len((tmp_path / "inits.log").read_text().splitlines()) == 1
    assert "echo init done" in outcomes[0].log and "echo init done" not in outcomes[1].log
    assert "echo debug message" in outcomes[1].log


def test_a_failing_attempt_is_an_outcome_and_the_retry_succeeds(account, assets, runtime,
                                                                 tmp_path):
    record = deployment(assets, "flaky.py", env={"FLAKY_STATE_DIR": str(tmp_path)})
    files = three_files(account)

    first = runtime.score(record, batch(files, attempt=1))
    second = runtime.score(record, batch(files, attempt=2))

    assert (first.status, first.succeeded, first.failed) == ("failed", 0, 3)
    assert first.part is None and first.attempt == 1
    assert first.error == "RuntimeError: flaky failure 1 of 1"
    assert 'flaky.py", line' in first.traceback and first.traceback in first.log
    assert (second.status, second.succeeded, second.failed) == ("succeeded", 3, 0)


def test_always_failing_script_reports_its_output_and_traceback(account, assets, runtime):
    record = deployment(assets, "always_fails.py", env={"ALWAYS_FAILS_MESSAGE": "no luck"})
    outcome = runtime.score(record, batch(three_files(account)))

    assert (outcome.status, outcome.failed, outcome.error) == ("failed", 3, "ValueError: no luck")
    assert "about to fail on 3 files" in outcome.log and "failing now" in outcome.log
    assert "raise ValueError" in outcome.traceback


def test_timeout_kills_the_worker_and_its_children_then_a_fresh_worker_scores(
        account, assets, runtime, tmp_path):
    child_pid_file = tmp_path / "child.pid"
    record = deployment(assets, "sleepy.py", env={
        "SLEEP_WHEN_NAME_CONTAINS": "slow", "SLEEP_CHILD_PID_FILE": str(child_pid_file)})
    quick = upload_inputs(account, {"quick.txt": b"q"})
    slow = upload_inputs(account, {"slow.txt": b"s", "other.txt": b"o"})

    warm = runtime.score(record, batch(quick))
    started = time.monotonic()
    stuck = runtime.score(record, batch(slow, index=1, timeout=1))
    elapsed = time.monotonic() - started
    fresh = runtime.score(record, batch(quick, index=2))

    assert (stuck.status, stuck.succeeded, stuck.failed) == ("timed_out", 0, 2)
    assert stuck.error == "timed out after 1s"
    assert elapsed < 10
    assert 'sleepy.py", line' in stuck.traceback  # where run() was stuck
    assert "going to sleep" in stuck.log
    assert _ended(int(child_pid_file.read_text()))
    assert fresh.status == "succeeded"
    assert column(fresh, "pid") != column(warm, "pid")


def test_fewer_rows_than_inputs_count_the_gap_as_failed(account, assets, runtime):
    files = three_files(account)
    outcome = runtime.score(deployment(assets, "fewer_rows.py"), batch(files))

    assert (outcome.status, outcome.succeeded, outcome.failed) == ("succeeded", 2, 1)
    assert column(outcome, "file") == ["b.txt", "a.txt"]
    assert outcome.missing == (files[2],)


def test_a_worker_killed_mid_batch_fails_the_batch_and_is_replaced(account, assets, runtime):
    record = deployment(assets, "kills_itself.py", env={"KILL_WHEN_NAME_CONTAINS": "die"})
    doomed = runtime.score(record, batch(upload_inputs(account, {"die.txt": b"d"})))
    after = runtime.score(record, batch(upload_inputs(account, {"live.txt": b"l"}), index=1))

    assert (doomed.status, doomed.failed) == ("failed", 1)
    assert doomed.error == "worker process exited with code -9"
    assert "ending my own process" in doomed.log
    assert after.status == "succeeded" and column(after, "file") == ["live.txt"]


def test_a_list_return_becomes_one_column(account, assets, runtime):
    outcome = runtime.score(deployment(assets, "list_return.py"), batch(three_files(account)))

    assert outcome.status == "succeeded" and outcome.rows == 3
    assert jsonl_rows(outcome.part.data) == [
        {"result": "b.txt 3"}, {"result": "a.txt 1"}, {"result": "c.png 10"}]


def test_rows_arrive_encoded_for_the_output_format_or_only_counted(account, assets, runtime):
    files = three_files(account)
    record = deployment(assets, "list_return.py")
    azureml = runtime.score(record, batch(files, output_format="azureml"))
    counted = runtime.score(record, batch(files, output_format=None))

    assert azureml.part.data == b"b.txt 3\na.txt 1\nc.png 10\n"
    assert (counted.status, counted.rows, counted.part) == ("succeeded", 3, None)


def test_a_return_of_another_type_fails_the_batch(account, assets, runtime):
    outcome = runtime.score(deployment(assets, "wrong_type.py"), batch(three_files(account)))

    assert (outcome.status, outcome.failed) == ("failed", 3)
    assert outcome.error == ("TypeError: run() must return a pandas.DataFrame or a list, "
                             "got dict")


def test_init_failure_fails_each_attempt_with_the_real_traceback(account, assets, runtime):
    record = deployment(assets, "init_fails.py", env={"INIT_FAILS_MESSAGE": "no weights"})
    files = three_files(account)
    outcomes = [runtime.score(record, batch(files, attempt=n)) for n in (1, 2)]

    for outcome in outcomes:
        assert (outcome.status, outcome.failed) == ("failed", 3)
        assert outcome.error == "init() failed: RuntimeError: no weights"
        assert 'init_fails.py", line' in outcome.traceback
        assert "loading the model" in outcome.log


def test_a_missing_input_fails_the_batch(account, assets, runtime):
    files = upload_inputs(account, {"here.txt": b"h"}) + (
        InputFile(DATA_CONTAINER, "inputs/nowhere/gone.txt", "gone.txt"),)
    outcome = runtime.score(deployment(assets, "echo.py"), batch(files))

    assert (outcome.status, outcome.succeeded, outcome.failed) == ("failed", 0, 2)
    assert outcome.error == "input file not found: gone.txt"


def test_concurrent_runs_are_bounded_by_max_concurrency_per_instance(account, assets, runtime,
                                                                     tmp_path):
    record = deployment(assets, "echo.py", name="echo-pair", max_concurrency_per_instance=2,
                        env={"ECHO_RECORD_DIR": str(tmp_path), "ECHO_SLEEP": "0.4",
                             "ECHO_WITH_PID": "1"})
    files = upload_inputs(account, {"p.txt": b"p"})

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda i: runtime.score(record, batch(files, index=i)),
                                 range(6)))

    assert [o.status for o in outcomes] == ["succeeded"] * 6
    assert len({column(o, "pid")[0] for o in outcomes}) == 2
    assert len((tmp_path / "inits.log").read_text().splitlines()) == 2
    assert _max_overlap(tmp_path / "runs.log") == 2


def test_two_deployments_score_side_by_side(account, assets, runtime):
    files = three_files(account)
    records = {tag: deployment(assets, "echo.py", name=f"echo-{tag}",
                               env={"TAG": tag, "ECHO_ENV_COLUMNS": "TAG"})
               for tag in ("left", "right")}
    results: dict[str, ScoringOutcome] = {}

    def score(tag: str) -> None:
        results[tag] = runtime.score(records[tag], batch(files, job=f"job-{tag}"))

    threads = [threading.Thread(target=score, args=(tag,)) for tag in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for tag, outcome in results.items():
        assert outcome.status == "succeeded" and set(column(outcome, "TAG")) == {tag}


def test_close_calls_shutdown_and_refuses_further_work(account, assets, tmp_path):
    scoring = ScoringRuntime(account, tmp_path / "work", gpus=())
    record = deployment(assets, "echo.py", name="echo-close",
                        env={"ECHO_RECORD_DIR": str(tmp_path)})
    files = upload_inputs(account, {"z.txt": b"z"})
    assert scoring.score(record, batch(files)).status == "succeeded"

    scoring.close()

    assert len((tmp_path / "shutdowns.log").read_text().splitlines()) == 1
    with pytest.raises(RuntimeError, match="closed"):
        scoring.score(record, batch(files))


def test_an_idle_pool_is_retired_with_shutdown(account, assets, tmp_path):
    scoring = ScoringRuntime(account, tmp_path / "work", gpus=(), pool_idle_seconds=0)
    idle = deployment(assets, "echo.py", name="echo-idle", env={"ECHO_RECORD_DIR": str(tmp_path)})
    other = deployment(assets, "list_return.py", name="list-other")
    files = upload_inputs(account, {"i.txt": b"i"})
    try:
        assert scoring.score(idle, batch(files)).status == "succeeded"
        assert scoring.score(other, batch(files)).status == "succeeded"  # sweeps idle pools
        shutdowns = tmp_path / "shutdowns.log"
        deadline = time.monotonic() + 10
        while not shutdowns.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(shutdowns.read_text().splitlines()) == 1
    finally:
        scoring.close()


def test_default_runtime_is_one_per_process_in_the_configured_folder(
        storage_connection, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_module, "_default", None)
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    monkeypatch.setenv("BATCHFN_WORK_DIR", str(tmp_path / "host-work"))

    first = default_runtime()
    try:
        assert default_runtime() is first
        assert first.job_output_dir("j").parent.parent == tmp_path / "host-work"
    finally:
        first.close()


def test_batchfn_prefetch_0_keeps_one_mini_batch_per_slot(
        storage_connection, account, assets, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_module, "_default", None)
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    monkeypatch.setenv("BATCHFN_WORK_DIR", str(tmp_path / "host-work"))
    monkeypatch.setenv("BATCHFN_PREFETCH", "0")
    scoring = default_runtime()
    try:
        record = deployment(assets, "list_return.py", name="no-prefetch")
        assert scoring.score(record, batch(three_files(account))).status == "succeeded"
        assert [entry.pool.depth for entry in scoring._pools.values()] == [1]
    finally:
        scoring.close()


def _ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped
    except psutil.NoSuchProcess:
        return True


def _max_overlap(runs_log: Path) -> int:
    events = []
    for line in runs_log.read_text().splitlines():
        kind, _pid, at = line.split()
        events.append((float(at), 1 if kind == "start" else -1))
    running = peak = 0
    for _at, change in sorted(events, key=lambda e: (e[0], e[1])):
        running += change
        peak = max(peak, running)
    return peak


def test_inputs_are_downloaded_into_the_scratch_folder_and_removed(account, assets, tmp_path):
    scratch = tmp_path / "scratch"
    scoring = ScoringRuntime(account, tmp_path / "work", gpus=(), scratch_dir=scratch)
    try:
        outcome = scoring.score(deployment(assets, "list_return.py"), batch(three_files(account)))
    finally:
        scoring.close()
    assert outcome.status == "succeeded"
    assert column(outcome, "result") == ["b.txt 3", "a.txt 1", "c.png 10"]
    assert not (tmp_path / "work" / "inputs").exists()  # nothing went to the disk folder
    assert not scratch.exists()  # a scratch folder of its own is removed at close


def test_an_unwritable_scratch_folder_falls_back_to_the_work_folder(account, assets, tmp_path):
    scratch = tmp_path / "scratch"
    (scratch / HOST_SEGMENT).mkdir(parents=True)  # the folder of the host user's workers
    (scratch / HOST_SEGMENT / "inputs").write_text("a file where the inputs folder should be")
    scoring = ScoringRuntime(account, tmp_path / "work", gpus=(), scratch_dir=scratch)
    try:
        record = deployment(assets, "list_return.py")
        first = scoring.score(record, batch(three_files(account)))
        second = scoring.score(record, batch(three_files(account), index=1))
    finally:
        scoring.close()
    assert [first.status, second.status] == ["succeeded", "succeeded"]
    assert column(second, "result") == ["b.txt 3", "a.txt 1", "c.png 10"]
    assert (tmp_path / "work" / "inputs").is_dir()
    assert not any(p.is_file() for p in (tmp_path / "work" / "inputs").rglob("*"))


def test_ram_scratch_folder_needs_room_and_clears_dead_processes_folders(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"{RAM_PREFIX}{dead.pid}" / "inputs").mkdir(parents=True)
    (tmp_path / f"{RAM_PREFIX}{os.getppid()}").mkdir()  # a live process's folder stays
    (tmp_path / f"{RAM_PREFIX}other").mkdir()

    assert ram_scratch_folder(tmp_path, min_free_bytes=0) == tmp_path / f"{RAM_PREFIX}{os.getpid()}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{RAM_PREFIX}{os.getppid()}", f"{RAM_PREFIX}other"]
    assert ram_scratch_folder(tmp_path, min_free_bytes=2**62) is None
    assert ram_scratch_folder(tmp_path / "missing", min_free_bytes=0) is None


def test_downloads_skip_environment_lookups_unless_a_proxy_is_configured(monkeypatch):
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    assert runtime_module.download_client_options() == {"use_env_settings": False}
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert runtime_module.download_client_options() == {}


def test_a_root_host_whose_workers_cannot_drop_privileges_refuses_to_score(account, assets,
                                                                           tmp_path):
    # This interpreter, its packages or the work folder are out of other users' reach here
    # (a pyenv Python in /root, a checkout below a mode-700 folder, pytest's own temporary
    # folders): a deployment's user could not run the worker, and nothing runs as root.
    problem = reach_problem(None, None, [tmp_path / "work"])
    if os.geteuid() != 0 or problem is None:
        pytest.skip("needs root, and a worker that other users cannot run")
    scoring = ScoringRuntime(account, tmp_path / "work", gpus=(),
                             worker_users=WorkerUsers(per_deployment=True))
    try:
        record = deployment(assets, "list_return.py", name="refused")
        outcome = scoring.score(record, batch(three_files(account)))
    finally:
        scoring.close()
    assert (outcome.status, outcome.startup_failed, outcome.failed) == ("failed", True, 3)
    assert problem in outcome.error and "does not run as root" in outcome.error
    assert ALLOW_ROOT_SETTING in outcome.error
    with pytest.raises(KeyError):  # no user was made for it
        pwd.getpwnam(deployment_user_name(record.endpoint_name, record.name))
