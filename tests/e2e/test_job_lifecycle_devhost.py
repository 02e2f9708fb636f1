"""Lifecycle events, deadlines, cancel and usage end to end: devhost + Azurite + the real
scoring runtime, through the CLI and the Python SDK.

The deployments run echo.py, which records when each run() starts and ends
(ECHO_RECORD_DIR): the script's own measure of its time, which the usage report's scoring
seconds must cover.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from click.testing import CliRunner

from batchfn.cli import cli
from batchfn.client import BatchfnClient
from batchfn.ml import MLClient
from devhost.azurite import Azurite
from shared.contract.layout import EVENTS_QUEUE, JOBS_CONTAINER
from shared.storage.account import StorageAccount
from tests.conftest import deploy_test_script, wait_until

ENDPOINT = "lifecycle-e2e"


@pytest.fixture(scope="module")
def storage_connection(tmp_path_factory: pytest.TempPathFactory):
    """An Azurite of this module's own. The session's is shared by the modules a test worker
    runs before this one: jobs they left running (their orchestrations still polling, their
    mini-batch messages still queued) would be this devhost's work first, and the timing of
    the cancel and finalize tests here would be theirs."""
    with Azurite(location=tmp_path_factory.mktemp("azurite-lifecycle")).start() as azurite:
        yield azurite.connection_string


@pytest.fixture(scope="module")
def client(host, scratch):
    client = BatchfnClient(url=host.url, key=host.key)
    client.create_endpoint(document={"name": ENDPOINT})
    return client


def _deploy(client, scratch: Path, name: str, settings: dict, sleep: float) -> Path:
    records = scratch / f"records-{name}"
    records.mkdir()
    deploy_test_script(client, scratch, ENDPOINT, name, "echo.py", settings,
                       {"ECHO_SLEEP": str(sleep), "ECHO_RECORD_DIR": str(records)})
    return records


def _folder(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"img{i:02d}.bin").write_bytes(b"x" * (i + 1))
    return folder


def _cli(host, *args: str) -> tuple[int, str]:
    env = {"BATCHFN_URL": host.url, "DEVHOST_STATE_DIR": str(host.state_path.parent)}
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout


def _script_seconds(records: Path) -> float:
    """The time run() took by the script's own clock, over all its calls."""
    starts: dict[str, list[float]] = defaultdict(list)
    total = 0.0
    for line in (records / "runs.log").read_text().splitlines():
        what, pid, at = line.split()
        if what == "start":
            starts[pid].append(float(at))
        else:
            total += float(at) - starts[pid].pop()
    return total


def _queued_events(storage_connection: str, job: str) -> list[dict]:
    """The events of `job` on the local events queue (all of them read and removed)."""
    queue = StorageAccount(connection_string=storage_connection).queue_service(
    ).get_queue_client(EVENTS_QUEUE)
    found = []
    while True:
        try:
            batch = list(queue.receive_messages(max_messages=32, visibility_timeout=30))
        except ResourceNotFoundError:
            return []  # nothing delivered yet: the sink makes the queue with its first event
        if not batch:
            return [event for event in found if event["subject"] == f"jobs/{job}"]
        for message in batch:
            found.append(json.loads(base64.b64decode(message.content)))
            queue.delete_message(message)


def test_a_completed_job_tells_its_events_and_what_it_used(client, host, scratch, tmp_path,
                                                           storage_connection):
    records = _deploy(client, scratch, "timed", {"mini_batch_size": 2}, 0.3)
    code, out = _cli(host, "batch-endpoint", "invoke", "-n", ENDPOINT, "--deployment-name",
                     "timed", "--input", str(_folder(tmp_path, 6)), "--query", "name",
                     "-o", "tsv")
    assert code == 0, out
    job = out.strip()
    code, out = _cli(host, "job", "events", "-n", job, "--watch", "--poll", "0.2")
    assert code == 0, out
    watched = [json.loads(line) for line in out.splitlines()]
    kinds = [event["type"] for event in watched]
    assert kinds[0] == "batchfn.job.created" and kinds[1] == "batchfn.job.running"
    assert kinds[-1] == "batchfn.job.completed"
    assert set(kinds[2:-1]) <= {"batchfn.job.progress"}
    end = watched[-1]["data"]
    assert end["inputs"]["succeeded"] == 6 and end["rows"] == 6
    assert end["output"]["partial"] is False and end["usage"]["final"] is True
    # The same events went to the local events queue, with the same ids (delivery is at least
    # once and retried: a loaded machine may deliver after the log has them).
    queued: list[str] = []

    def delivered() -> bool:
        queued.extend(e["id"] for e in _queued_events(storage_connection, job))
        return list(dict.fromkeys(queued)) == [e["id"] for e in watched]

    wait_until(delivered, 90, "the events on the events queue", interval=0.5)
    code, out = _cli(host, "job", "usage", "-n", job)
    assert code == 0, out
    usage = json.loads(out)
    script = _script_seconds(records)
    assert script >= 3 * 0.3
    assert usage["scoring_seconds"] >= script
    assert usage["host_seconds"] >= usage["scoring_seconds"]
    assert usage["rows_written"] == 6 == len(client.download_job_output(
        job, "score", tmp_path / "dl").read_text().splitlines())
    assert usage["inputs"]["scored"] == 6 and usage["input_bytes"] == sum(range(1, 7))
    assert usage["attempts"] == 3 and usage["retries"] == 0
    assert usage["gpu_seconds"]["total"] == 0 and usage["cost"]["total"] > 0
    shown = client.get_job(job)
    assert shown["started_at"] < shown["ended_at"]
    assert usage["wall_seconds"] >= usage["queue_wait_seconds"] >= 0


def test_a_deadline_ends_a_long_job_expired_with_its_scored_part(client, host, scratch,
                                                                  tmp_path):
    _deploy(client, scratch, "slow", {"mini_batch_size": 2}, 1.0)
    ml = MLClient(url=host.url, key=host.key)
    job = ml.batch_endpoints.invoke(ENDPOINT, deployment_name="slow", deadline="3s",
                                    input=_input(_folder(tmp_path, 24))).name
    final = client.wait_job(job, timeout=120)
    assert final["status"] == "Expired", final
    assert "deadline" in final["reason"]
    counts = final["progress"]["inputs"]
    assert 0 < counts["succeeded"] < 24 and counts["not_started"] == 24 - counts["succeeded"]
    assert final["partial"] is True
    lines = client.download_job_output(job, "score", tmp_path / "dl").read_text().splitlines()
    assert len(lines) == counts["succeeded"]
    errors = client.job_errors(job)
    assert {row["status"] for row in errors} == {"not_started"}
    assert len(errors) == counts["not_started"]
    events = [event.type for event in ml.jobs.list_events(job)]
    assert events[0] == "batchfn.job.created" and events[-1] == "batchfn.job.expired"
    assert ml.jobs.get(job).status == "Expired"
    # The inputs that were not started are scored by rerunning the failed ones. A rerun
    # keeps the 3 s deadline (from its own invoke), so on a busy machine it may expire in
    # turn: rerun what is left until nothing is.
    scored = list(lines)
    previous = job
    for attempt in range(10):
        rerun = client.rerun_job(previous, failed_only=True)["name"]
        ended = client.wait_job(rerun, timeout=120)
        assert ended["status"] in ("Completed", "Expired"), ended
        if ended["progress"]["inputs"]["succeeded"]:
            scored += client.download_job_output(
                rerun, "score", tmp_path / f"rest{attempt}").read_text().splitlines()
        if ended["status"] == "Completed":
            break
        previous = rerun
    assert sorted(scored) == sorted(f"img{i:02d}.bin {i + 1}" for i in range(24))


def _input(folder: Path):
    from batchfn.ml import Input

    return Input(type="uri_folder", path=str(folder))


def test_the_sdk_streams_a_canceled_jobs_events(client, host, scratch, tmp_path):
    _deploy(client, scratch, "slow-cancel", {"mini_batch_size": 3}, 1.0)
    ml = MLClient(url=host.url, key=host.key)
    job = client.invoke(ENDPOINT, _folder(tmp_path, 60), deployment_name="slow-cancel")["name"]
    # A new deployment's first worker starts (imports, init()) before anything is scored;
    # then 20 mini-batches of 1 s leave time to cancel.
    record = wait_until(lambda: (lambda r: r if r["status"] not in ("NotStarted", "Queued")
                                 else None)(client.get_job(job)), 180, "the first mini-batch")
    assert record["status"] == "Running", (record, host.logs()[-6000:])
    client.cancel_job(job)
    streamed = list(ml.jobs.stream_events(job, poll=0.2, timeout=60))
    assert [e.type for e in streamed][:2] == ["batchfn.job.created", "batchfn.job.running"]
    assert streamed[-1].type == "batchfn.job.canceled"
    end = streamed[-1].data
    assert end["status"] == "Canceled" and end["inputs"]["not_started"] > 0
    scored = end["inputs"]["succeeded"]
    assert end["output"]["partial"] is (scored > 0)
    if scored:
        lines = client.download_job_output(job, "score", tmp_path / "dl").read_text()
        assert len(lines.splitlines()) == scored


def test_failed_jobs_end_with_a_failed_event(client, host, scratch, tmp_path):
    deploy_test_script(client, scratch, ENDPOINT, "fails", "always_fails.py",
                       {"mini_batch_size": 2, "retry_settings": {"max_retries": 0},
                        "error_threshold": 0})
    job = client.invoke(ENDPOINT, _folder(tmp_path, 4), deployment_name="fails")["name"]
    assert client.wait_job(job, timeout=60)["status"] == "Failed"
    events = client.job_events(job)
    assert [e["type"] for e in events] == ["batchfn.job.created", "batchfn.job.running",
                                           "batchfn.job.failed"]
    assert events[-1]["data"]["inputs"]["failed"] >= 2
    usage = client.job_usage(job)
    assert usage["final"] is True and usage["inputs"]["failed"] >= 2
    # A job whose input cannot be listed fails before it runs.
    job = client.invoke(ENDPOINT, "azureml://datastores/workspaceblobstore/paths/none.bin",
                        input_type="uri_file", deployment_name="fails")["name"]
    assert client.wait_job(job, timeout=60)["status"] == "Failed"
    assert [e["type"] for e in client.job_events(job)] == ["batchfn.job.created",
                                                           "batchfn.job.failed"]


def test_a_control_host_killed_while_finalizing_leaves_each_event_once(
        client, host, scratch, tmp_path, storage_connection, blobs):
    # Runs last in the module: it restarts the shared devhost.
    _deploy(client, scratch, "many", {"mini_batch_size": 1}, 0.0)
    job = client.invoke(ENDPOINT, _folder(tmp_path, 60), deployment_name="many")["name"]
    seen = wait_until(lambda: (client.get_job(job)["status"]
                               if client.get_job(job)["status"] in
                               ("Finalizing", "Completed") else None), 120, "finalize",
                      interval=0.02)
    host.kill()
    print(f"killed the host when the job was {seen}")
    host.start()
    final = client.wait_job(job, timeout=120)
    assert final["status"] == "Completed", (seen, final)
    wait_until(lambda: any(e["type"] == "batchfn.job.completed"
                           for e in client.job_events(job)), 60, "the completed event")
    listed = [e["id"] for e in client.job_events(job)]
    assert len(listed) == len(set(listed))
    assert listed[0] == f"{job}:created" and listed[-1] == f"{job}:completed"
    by_id: dict[str, list[dict]] = defaultdict(list)

    def delivered() -> bool:  # at least once, retried: possibly after the log has them
        for event in _queued_events(storage_connection, job):
            by_id[event["id"]].append(event)
        return list(by_id) == listed

    wait_until(delivered, 90, "the events on the events queue", interval=0.5)
    assert list(by_id) == listed  # in order; a redelivery has the same id
    for copies in by_id.values():
        assert {json.dumps({**e, "time": None, "data": {**e["data"], "usage": None}},
                           sort_keys=True) for e in copies} == {json.dumps(
            {**copies[0], "time": None, "data": {**copies[0]["data"], "usage": None}},
            sort_keys=True)}
    assert len(client.download_job_output(job, "score", tmp_path / "dl").read_text()
               .splitlines()) == 60
    assert not list(blobs.get_container_client(JOBS_CONTAINER).list_blob_names(
        name_starts_with=f"{job}/predictions.csv.")), "one output only"


@pytest.fixture(scope="module")
def blobs(storage_connection) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(storage_connection)

