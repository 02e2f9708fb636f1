"""Jobs end to end: devhost + Azurite + the real scoring runtime and test scoring scripts.

One devhost serves the whole module (heartbeats every second and a 5 s stall threshold,
so that a killed host's mini-batches come back within seconds); each scenario deploys the
scoring script it needs.
Retries wait host.json's visibilityTimeout (5 s), so the retry scenarios take ~10 s each.
"""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient
from click.testing import CliRunner

from batchfn.cli import cli
from batchfn.client import ApiError, BatchfnClient
from shared.contract import layout
from shared.contract.layout import DATA_CONTAINER, JOBS_CONTAINER, STATE_CONTAINER
from shared.contract.messages import MiniBatchMessage
from shared.storage.account import StorageAccount
from shared.storage.queue_clients import minibatch_queue
from tests.conftest import deploy_test_script, wait_until

ENDPOINT = "jobs-e2e"
DATASTORE = "azureml://datastores/workspaceblobstore/paths"
UPLOAD_THREADS = 32


@pytest.fixture(scope="module")
def blobs(storage_connection) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(storage_connection)


@pytest.fixture(scope="module")
def client(host, scratch):
    client = BatchfnClient(url=host.url, key=host.key)
    client.create_endpoint(document={"name": ENDPOINT})
    _deploy(client, scratch, "echo", "echo.py", {"mini_batch_size": 3}, set_default=True)
    _deploy(client, scratch, "fails", "always_fails.py",
            {"mini_batch_size": 2, "retry_settings": {"max_retries": 1}})
    return client


def _deploy(client: BatchfnClient, scratch: Path, name: str, script: str,
            settings: dict, env: dict[str, str] | None = None, set_default: bool = False) -> None:
    deploy_test_script(client, scratch, ENDPOINT, name, script, settings, env, set_default)


def _folder(tmp_path: Path, names: list[str] | int) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir(parents=True)
    if isinstance(names, int):
        names = [f"img{i:02d}.bin" for i in range(names)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(b"x" * (i + 1))
    return folder


def _echo_lines(names: list[str] | int, keep=lambda name: True) -> list[str]:
    if isinstance(names, int):
        names = [f"img{i:02d}.bin" for i in range(names)]
    return [f"{name} {i + 1}" for i, name in enumerate(names) if keep(name)]


def _data_container(blobs: BlobServiceClient) -> ContainerClient:
    data = blobs.get_container_client(DATA_CONTAINER)
    try:
        data.create_container()
    except ResourceExistsError:
        pass
    return data


def _output_lines(client: BatchfnClient, job: str, tmp_path: Path) -> list[str]:
    return client.download_job_output(job, "score", tmp_path / "dl").read_text().splitlines()


def _state_names(blobs: BlobServiceClient, prefix: str) -> list[str]:
    return list(blobs.get_container_client(STATE_CONTAINER).list_blob_names(
        name_starts_with=prefix))


def _state_jobs(blobs: BlobServiceClient) -> set[str]:
    """The job folders (and the job index entries) in the state container."""
    return {name.split("/", 1)[0] if not name.startswith("_jobs/") else name
            for name in _state_names(blobs, "")}


def test_happy_path_local_folder_rows_in_order(client, tmp_path):
    job = client.invoke(ENDPOINT, _folder(tmp_path, 8))
    assert job["status"] == "NotStarted" and job["status_url"].endswith(job["name"])
    final = client.wait_job(job["name"], timeout=90)
    assert final["status"] == "Completed", final
    assert final["progress"]["files"] == {"total": 8, "succeeded": 8, "failed": 0, "pending": 0}
    path = client.download_job_output(job["name"], "score", tmp_path / "dl")
    assert path.read_text() == "".join(f"img{i:02d}.bin {i + 1}\n" for i in range(8))
    listed = client.list_jobs(ENDPOINT, "echo")
    assert job["name"] in [row["name"] for row in listed]


def test_permanent_failure_threshold_and_errors_report(client, tmp_path):
    job = client.invoke(ENDPOINT, _folder(tmp_path, 4), deployment_name="fails",
                        settings={"error_threshold": 1})
    final = client.wait_job(job["name"], timeout=90)
    assert final["status"] == "Failed" and "error_threshold" in final["reason"]
    errors = client.job_errors(job["name"])
    assert errors and errors[0]["attempts"] == 2 and "ValueError" in errors[0]["traceback"]


@pytest.fixture(scope="module")
def retried_jobs(client, scratch, tmp_path_factory) -> dict[str, dict]:
    """Three jobs whose retries wait out the visibility delay together, not one by one:
    a script failing twice, a run() past its timeout, a worker killed mid-batch."""
    inputs = tmp_path_factory.mktemp("retried")
    flaky_state = scratch / "flaky-state"
    flaky_state.mkdir()
    _deploy(client, scratch, "flaky", "flaky.py",
            {"mini_batch_size": 2, "retry_settings": {"max_retries": 3}},
            {"FLAKY_FAILURES": "2", "FLAKY_STATE_DIR": str(flaky_state)})
    sleepy_pid = scratch / "sleepy-child.pid"
    _deploy(client, scratch, "sleepy", "sleepy.py",
            {"mini_batch_size": 1, "retry_settings": {"max_retries": 1, "timeout": 1.5}},
            {"SLEEP_WHEN_NAME_CONTAINS": "slow", "SLEEP_CHILD_PID_FILE": str(sleepy_pid)})
    victim_pid = scratch / "victim-child.pid"
    _deploy(client, scratch, "victim", "sleepy.py",
            {"mini_batch_size": 1, "retry_settings": {"max_retries": 2}},
            {"SLEEP_WHEN_NAME_CONTAINS": "slow", "SLEEP_SECONDS": "3",
             "SLEEP_CHILD_PID_FILE": str(victim_pid)})
    jobs = {
        "flaky": client.invoke(ENDPOINT, _folder(inputs / "flaky", 4),
                               deployment_name="flaky")["name"],
        "sleepy": client.invoke(ENDPOINT, _folder(inputs / "sleepy", ["fast.bin", "slow.bin"]),
                                deployment_name="sleepy")["name"],
        "victim": client.invoke(ENDPOINT, _folder(inputs / "victim", ["fast.bin", "slow.bin"]),
                                deployment_name="victim")["name"],
    }
    # Kill the worker process in the middle of its first run() of slow.bin.
    child = int(wait_until(lambda: victim_pid.exists() and victim_pid.read_text(), 60,
                          "run() to start"))
    worker = psutil.Process(child).parent()
    victim_pid.unlink()
    os.kill(worker.pid, signal.SIGKILL)
    return {name: {"job": job} for name, job in jobs.items()} | {
        "sleepy": {"job": jobs["sleepy"], "child_pid_file": sleepy_pid},
        "victim": {"job": jobs["victim"], "killed_worker": worker.pid},
    }


def test_failing_twice_then_succeeding(client, retried_jobs, blobs, tmp_path):
    job = retried_jobs["flaky"]["job"]
    final = client.wait_job(job, timeout=90)
    assert final["status"] == "Completed", final
    assert final["progress"]["files"] == {"total": 4, "succeeded": 4, "failed": 0, "pending": 0}
    assert _output_lines(client, job, tmp_path) == _echo_lines(4)
    assert client.job_errors(job) == []
    logs = _state_names(blobs, f"{job}/logs/")
    for index in (0, 1):
        attempts = [name for name in logs if f"/logs/{index:08d}/" in name]
        assert [name.rsplit("/", 1)[1] for name in attempts][:2] == [
            "attempt-1.log", "attempt-2.log"]
    log_text = blobs.get_container_client(STATE_CONTAINER).download_blob(
        layout.attempt_log(job, 0, 1)).readall().decode()
    assert "flaky failure 1 of 2" in log_text
    assert log_text.count("Traceback (most recent call last)") == 1


def test_run_past_timeout_is_killed_retried_then_failed(client, retried_jobs, tmp_path):
    job = retried_jobs["sleepy"]["job"]
    final = client.wait_job(job, timeout=90)
    assert final["status"] == "Completed", final
    assert final["progress"]["files"] == {"total": 2, "succeeded": 1, "failed": 1, "pending": 0}
    errors = client.job_errors(job)
    assert [(e["file"], e["attempts"], e["status"]) for e in errors] == [
        ("slow.bin", 2, "timed_out")]
    # The process run() started was ended with its worker, not left sleeping. A process
    # started after the pid file was written only reuses the pid (busy machines wrap pids).
    pid_file = retried_jobs["sleepy"]["child_pid_file"]
    child, written = int(pid_file.read_text()), pid_file.stat().st_mtime
    try:
        process = psutil.Process(child)
        assert process.create_time() > written or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass
    assert [line.split()[0] for line in _output_lines(client, job, tmp_path)] == ["fast.bin"]


def test_worker_process_killed_mid_batch_is_retried(client, retried_jobs, tmp_path):
    job = retried_jobs["victim"]["job"]
    final = client.wait_job(job, timeout=90)
    assert final["status"] == "Completed", final
    assert final["progress"]["files"] == {"total": 2, "succeeded": 2, "failed": 0, "pending": 0}
    lines = _output_lines(client, job, tmp_path)
    assert [line.split()[0] for line in lines] == ["fast.bin", "slow.bin"]
    # slow.bin was scored by a fresh worker after the killed one's attempt failed.
    assert int(lines[1].split()[2]) != retried_jobs["victim"]["killed_worker"]


def test_permanent_failure_error_threshold_counts(client, scratch, tmp_path):
    _deploy(client, scratch, "partial", "always_fails.py",
            {"mini_batch_size": 2, "retry_settings": {"max_retries": 0}},
            {"ALWAYS_FAILS_WHEN_NAME_CONTAINS": "bad", "ALWAYS_FAILS_MESSAGE": "bad input"})
    names = ["a0.bin", "a1.bin", "b2-bad.bin", "b3.bin", "c4.bin", "c5.bin"]
    uri, _ = client.upload_input(_folder(tmp_path, names))
    jobs = {threshold: client.invoke(ENDPOINT, uri, deployment_name="partial",
                                     settings={"error_threshold": threshold})["name"]
            for threshold in (-1, 0, 1, 2)}
    finals = {threshold: client.wait_job(job, timeout=90) for threshold, job in jobs.items()}
    for threshold in (-1, 2):
        final = finals[threshold]
        assert final["status"] == "Completed", final
        assert final["progress"]["files"] == {"total": 6, "succeeded": 4, "failed": 2,
                                              "pending": 0}
        assert final["progress"]["mini_batches"]["failed"] == 1
        assert _output_lines(client, jobs[threshold], tmp_path / str(threshold)) == \
            _echo_lines(names, keep=lambda name: name[0] != "b")
    for threshold in (0, 1):
        final = finals[threshold]
        assert final["status"] == "Failed", final
        assert final["reason"].startswith(f"error_threshold {threshold} exceeded: 2 files failed")
        assert final["progress"]["files"]["failed"] == 2
        with pytest.raises(ApiError) as caught:
            client.download_job_output(jobs[threshold], "score", tmp_path / "none")
        assert caught.value.status == 404
    errors = client.job_errors(jobs[-1])
    assert [(e["file"], e["attempts"], e["status"]) for e in errors] == [
        ("b2-bad.bin", 1, "failed"), ("b3.bin", 1, "failed")]
    # The script's own frames, not the worker's that called it.
    traceback = errors[0]["traceback"]
    assert traceback.endswith("ValueError: bad input")
    assert 'always_fails.py", line' in traceback and "in run" in traceback
    assert "shared/scoring" not in traceback


def test_fewer_rows_than_inputs(client, scratch, tmp_path):
    _deploy(client, scratch, "fewer", "fewer_rows.py", {"mini_batch_size": 3})
    job = client.invoke(ENDPOINT, _folder(tmp_path, 6), deployment_name="fewer")["name"]
    final = client.wait_job(job, timeout=60)
    assert final["status"] == "Completed", final
    assert final["progress"]["files"] == {"total": 6, "succeeded": 4, "failed": 2, "pending": 0}
    assert final["progress"]["mini_batches"] == {"total": 2, "succeeded": 2, "failed": 0,
                                                 "not_started": 0, "pending": 0}
    assert _output_lines(client, job, tmp_path) == _echo_lines(
        6, keep=lambda name: name not in ("img02.bin", "img05.bin"))
    errors = client.job_errors(job)
    assert [(e["file"], e["status"]) for e in errors] == [
        ("img02.bin", "missing_rows"), ("img05.bin", "missing_rows")]


@pytest.fixture(scope="module")
def slow_echo(client, scratch) -> Path:
    """A deployment whose run() takes 1 s, on one worker: jobs stay running for a while."""
    records = scratch / "slow-echo"
    records.mkdir()
    _deploy(client, scratch, "slow-echo", "echo.py", {"mini_batch_size": 3},
            {"ECHO_SLEEP": "1", "ECHO_RECORD_DIR": str(records)})
    return records


def test_duplicate_queue_messages_add_no_rows(client, slow_echo, storage_connection, tmp_path):
    job = client.invoke(ENDPOINT, _folder(tmp_path, 9), deployment_name="slow-echo")["name"]
    wait_until(lambda: client.get_job(job)["status"] != "NotStarted", 30, "the plan")
    queue = minibatch_queue(StorageAccount(connection_string=storage_connection))
    for index in range(3):
        queue.send_message(MiniBatchMessage(job, index, 0).encode())
    final = client.wait_job(job, timeout=60)
    assert final["status"] == "Completed", final
    assert final["progress"]["files"] == {"total": 9, "succeeded": 9, "failed": 0, "pending": 0}
    assert final["progress"]["rows"] == 9
    assert _output_lines(client, job, tmp_path) == _echo_lines(9)
    runs = (slow_echo / "runs.log").read_text().count("start")
    assert runs > 3  # duplicates were really scored, and still counted once


def test_cancel_stops_the_job(client, slow_echo, blobs, tmp_path):
    job = client.invoke(ENDPOINT, _folder(tmp_path, 30), deployment_name="slow-echo")["name"]
    wait_until(lambda: client.get_job(job)["status"] in ("Queued", "Running"), 30, "the plan")
    assert client.cancel_job(job)["status"] == "CancelRequested"
    final = client.wait_job(job, timeout=60)
    assert final["status"] == "Canceled" and final["reason"] == "canceled by request"
    assert final["progress"]["mini_batches"]["not_started"] > 0
    assert final["progress"]["mini_batches"]["pending"] == 0
    # What was scored before the cancel is merged, marked partial: exactly those rows.
    scored = final["progress"]["inputs"]["succeeded"]
    names = list(blobs.get_container_client(JOBS_CONTAINER).list_blob_names(
        name_starts_with=f"{job}/"))
    assert names == ([f"{job}/predictions.csv"] if scored else [])
    if scored:
        assert final["partial"] is True
        assert len(_output_lines(client, job, tmp_path)) == scored
    with pytest.raises(ApiError) as caught:
        client.cancel_job("no-such-job")
    assert caught.value.status == 404


def _cli(host, *args: str) -> tuple[int, str]:
    """Run `batchfn ARGS` against the devhost; (exit code, stdout)."""
    env = {"BATCHFN_URL": host.url, "DEVHOST_STATE_DIR": str(host.state_path.parent)}
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout


def test_cli_stream_errors_and_rerun_failed_only(client, host, scratch, tmp_path):
    state = scratch / "flaky-once-state"
    state.mkdir()
    _deploy(client, scratch, "flaky-once", "flaky.py", {"mini_batch_size": 2},
            {"FLAKY_FAILURES": "1", "FLAKY_STATE_DIR": str(state)})
    code, out = _cli(host, "batch-endpoint", "invoke", "-n", ENDPOINT,
                     "--input", str(_folder(tmp_path, 4)), "--deployment-name", "flaky-once",
                     "--set", "retry_settings.max_retries=0", "--query", "name", "-o", "tsv")
    assert code == 0, out
    job = out.strip()
    code, out = _cli(host, "job", "stream", "-n", job, "--poll", "0.2")
    assert code == 0 and json.loads(out)["status"] == "Completed", out
    code, out = _cli(host, "job", "errors", "-n", job, "--query", "[].file", "-o", "tsv")
    assert out.split() == [f"img{i:02d}.bin" for i in range(4)]
    code, out = _cli(host, "job", "rerun", "-n", job, "--failed-only",
                     "--query", "name", "-o", "tsv")
    assert code == 0, out
    rerun = out.strip()
    code, out = _cli(host, "job", "stream", "-n", rerun, "--poll", "0.2")
    assert code == 0, out
    code, out = _cli(host, "job", "download", "-n", rerun, "--output-name", "score",
                     "--download-path", str(tmp_path / "dl"))
    assert code == 0, out
    assert Path(json.loads(out)["path"]).read_text().splitlines() == _echo_lines(4)
    assert client.get_job(rerun)["rerun_of"] == job
    # A job that fails makes `job stream` exit non-zero.
    code, out = _cli(host, "batch-endpoint", "invoke", "-n", ENDPOINT,
                     "--input", f"{DATASTORE}/no-such-file.bin", "--input-type", "uri_file",
                     "--query", "name", "-o", "tsv")
    code, out = _cli(host, "job", "stream", "-n", out.strip(), "--poll", "0.2")
    assert code == 1 and json.loads(out)["status"] == "Failed"
    assert "does not exist" in json.loads(out)["reason"]


def test_output_already_exists_fails_and_keeps_the_file(client, blobs, tmp_path):
    data = _data_container(blobs)
    data.upload_blob("existing-out/predictions.csv", b"keep me", overwrite=True)
    job = client.invoke(ENDPOINT, _folder(tmp_path, 2),
                        output_path=f"{DATASTORE}/existing-out")["name"]
    final = client.wait_job(job, timeout=60)
    assert final["status"] == "Failed"
    assert "already exists" in final["reason"] and "never overwrites" in final["reason"]
    assert data.download_blob("existing-out/predictions.csv").readall() == b"keep me"


def test_bad_invokes_are_4xx_and_create_nothing(client, blobs):
    before = len(client.list_jobs())
    # Earlier jobs may still flush their buffered logs: compare job folders, not blob counts.
    state_before = _state_jobs(blobs)
    for endpoint, body, status in [
        ("nope", {"input": f"{DATASTORE}/x"}, 404),
        (ENDPOINT, {"input": f"{DATASTORE}/x", "deployment_name": "nope"}, 404),
        (ENDPOINT, {"input": "https://example.com/container/x"}, 400),
        (ENDPOINT, {"input": "http://127.0.0.1:1/devstoreaccount1/batchfn-data/x"}, 400),
        (ENDPOINT, {"input": f"{DATASTORE}/../batchfn-state/x"}, 400),
        (ENDPOINT, {"input": f"{DATASTORE}/x", "mini_batch_size": -1}, 400),
    ]:
        with pytest.raises(ApiError) as caught:
            client.request("POST", f"endpoints/{endpoint}/jobs", body)
        assert caught.value.status == status, (endpoint, body)
    assert len(client.list_jobs()) == before
    assert _state_jobs(blobs) == state_before


def test_idempotent_invoke_and_empty_folder(client, tmp_path):
    uri = f"{DATASTORE}/none-such-folder"
    first = client.invoke(ENDPOINT, uri, job_name="same-name-job")
    again = client.invoke(ENDPOINT, uri, job_name="same-name-job")
    assert again["name"] == first["name"]
    with pytest.raises(ApiError) as caught:
        client.invoke(ENDPOINT, uri, job_name="same-name-job", settings={"mini_batch_size": 7})
    assert caught.value.status == 409
    final = client.wait_job(first["name"], timeout=60)
    assert final["status"] == "Completed"
    assert final["warnings"] == ["the input folder has no files: the job completes with zero rows"]
    assert final["progress"]["files"]["total"] == 0
    assert _output_lines(client, first["name"], tmp_path) == []
    assert [row["name"] for row in client.list_jobs()].count("same-name-job") == 1


@pytest.mark.slow
def test_ten_thousand_files_in_mini_batches_of_five_thousand(client, blobs, storage_connection,
                                                             tmp_path):
    _data_container(blobs)
    session = requests.Session()  # one pooled connection per upload thread
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=UPLOAD_THREADS))
    data = BlobServiceClient.from_connection_string(
        storage_connection, session=session).get_container_client(DATA_CONTAINER)
    names = [f"tenk/f{i:05d}" for i in range(10_000)]
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda name: data.upload_blob(name, b"1", overwrite=True), names))
    job = client.invoke(ENDPOINT, f"{DATASTORE}/tenk",
                        settings={"mini_batch_size": 5000})["name"]
    final = client.wait_job(job, timeout=150)
    assert final["status"] == "Completed", final
    assert final["progress"]["files"] == {"total": 10_000, "succeeded": 10_000, "failed": 0,
                                          "pending": 0}
    assert final["progress"]["mini_batches"]["total"] == 2
    lines = _output_lines(client, job, tmp_path)
    assert lines == [f"f{i:05d} 1" for i in range(10_000)]
    # Each message names its manifest chunk; the 5,000 file names stay in the manifest blob.
    plan = json.loads(blobs.get_container_client(STATE_CONTAINER).download_blob(
        layout.plan(job)).readall())
    assert plan == {"unit": "files", "inputs": 10_000, "batches": 2, "chunks": 2}
    assert len(MiniBatchMessage(job, 1, 1).encode()) < 200


def test_devhost_killed_mid_job_and_restarted(client, host, slow_echo, tmp_path):
    # Runs last in the module: it restarts the shared devhost.
    job = client.invoke(ENDPOINT, _folder(tmp_path, 24), deployment_name="slow-echo")["name"]
    wait_until(lambda: (client.get_job(job).get("progress") or {}).get(
        "mini_batches", {}).get("succeeded", 0) >= 2, 60, "two mini-batches")
    host.kill()
    host.start()
    final = client.wait_job(job, timeout=120)
    assert final["status"] == "Completed", final
    assert final["progress"]["files"] == {"total": 24, "succeeded": 24, "failed": 0,
                                          "pending": 0}
    assert final["progress"]["rows"] == 24
    assert _output_lines(client, job, tmp_path) == _echo_lines(24)


def test_a_script_that_cannot_start_fails_its_job_fast(client, host, scratch, tmp_path):
    _deploy(client, scratch, "no-start", "init_fails.py",
            {"mini_batch_size": 1, "retry_settings": {"max_retries": 1},
             "max_concurrency_per_instance": 2},
            {"INIT_FAILS_MESSAGE": "weights file is missing"})
    uri, _ = client.upload_input(_folder(tmp_path, 100))
    job = client.invoke(ENDPOINT, uri, deployment_name="no-start")["name"]

    final = client.wait_job(job, timeout=90)

    assert final["status"] == "Failed", final
    reason = final["reason"]
    assert reason.startswith("the scoring script could not start: init() failed: "
                             "RuntimeError: weights file is missing")
    assert 'init_fails.py", line' in reason  # the traceback comes with it
    files = final["progress"]["files"]
    assert files["failed"] <= 50 and files["succeeded"] == 0  # the rest never ran
    shown = CliRunner().invoke(cli, ["job", "show", "-n", job, "--url", host.url,
                                     "--key", host.key, "--query", "reason", "-o", "tsv"])
    assert "weights file is missing" in shown.output


def test_data_failures_after_a_start_do_not_fail_fast(client, scratch, tmp_path):
    # always_fails.py starts (init() succeeds): its failures are data failures.
    uri, _ = client.upload_input(_folder(tmp_path, 6))
    final = client.wait_job(client.invoke(ENDPOINT, uri, deployment_name="fails")["name"],
                            timeout=90)
    assert final["status"] == "Completed" and final["progress"]["files"]["failed"] == 6
