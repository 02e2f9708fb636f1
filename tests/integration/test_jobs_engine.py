"""The jobs engine end to end against a real Azurite, with a fake scoring runtime."""

from __future__ import annotations

import base64
import io
import json
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from shared.contract import layout
from shared.contract.errors import Conflict, InvalidRequest, NotFound
from shared.contract.job_records import JobCompute
from shared.contract.messages import MiniBatchMessage
from shared.contract.registry_records import AssetRef, AssetVersion, DeploymentRecord
from shared.contract.settings import DeploymentSettings
from shared.control.datastores import DATASTORES_SETTING
from shared.control.finalize import advance_job
from shared.control.job_service import JobService
from shared.control.monitor import Outcome, evaluate
from shared.control.planner import plan_job
from shared.control.poison import record_poisoned
from shared.scoring.batch import FAILED, SUCCEEDED, MiniBatch, ScoringOutcome
from shared.scoring.minibatch_handler import MiniBatchHandler, RetryMiniBatch
from shared.storage.account import StorageAccount
from shared.storage.job_store import JobStore
from shared.storage.queue_clients import minibatch_queue
from shared.worker.encoding import encode_result


class FakeRegistry:
    def __init__(self, settings: DeploymentSettings) -> None:
        asset = AssetRef("model", "m", "1", "d", "models/m/1/", "model")
        self.deployment = DeploymentRecord(
            name="blue", endpoint_name="ep1", model=asset,
            code=AssetRef("code", "c", "1", "d", "code/c/1/", "code"),
            scoring_script="score.py", settings=settings)

    def job_compute(self, name: str) -> JobCompute:
        return JobCompute(name)

    def resolve_data(self, name: str, version: str) -> AssetVersion:
        raise NotFound(f"data asset {name}:{version} does not exist")

    def resolve_deployment(self, endpoint: str, name: str | None) -> DeploymentRecord:
        if endpoint != "ep1":
            raise NotFound(f"endpoint {endpoint!r} not found")
        if name not in (None, "blue"):
            raise NotFound(f"deployment {name!r} not found")
        return self.deployment


class FakeRuntime:
    """Scores each file as one row (file, length); `fail` maps file name → failures left."""

    def __init__(self, fail: dict[str, int] | None = None, short: bool = False,
                 as_list: bool = False) -> None:
        self.fail = dict(fail or {})
        self.short = short
        self.as_list = as_list
        self.calls = 0
        self.lock = threading.Lock()
        self.output_root = Path(tempfile.mkdtemp(prefix="fake-bi-output-"))
        self.script_writes = False  # write <first file>.out to the job's output folder
        self.extra_outputs: dict[str, bytes] = {}  # written there by mini-batch 0
        self.score_failure: str | None = None  # the message of a failure (else names the file)

    def job_output_dir(self, job_id: str) -> Path:
        folder = self.output_root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def score(self, deployment: DeploymentRecord, batch: MiniBatch,
              holding=None) -> ScoringOutcome:
        with self.lock:
            self.calls += 1
            for f in batch.files:
                if self.fail.get(f.display_name, 0):
                    self.fail[f.display_name] -= 1
                    error = self.score_failure or f"boom on {f.display_name}"
                    return ScoringOutcome(batch.job_id, batch.index, batch.attempt, FAILED, None,
                                          0, (), 0, len(batch.files), error,
                                          "Traceback...\nValueError: boom", "log line\n", 0.0, 0.0)
        names = [f.display_name for f in batch.files]
        if self.script_writes:
            (self.job_output_dir(batch.job_id) / f"{names[0]}.out").write_text(str(len(names)))
        for file_name, content in self.extra_outputs.items() if batch.index == 0 else ():
            path = self.job_output_dir(batch.job_id) / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        if self.short:
            names = names[:-1]
        if self.as_list:
            value = [f"{n}:ok" for n in names]
        else:
            value = pd.DataFrame({"file": names, "value": [len(n) for n in names]})
        # What the scoring worker process does with run()'s return.
        encoded = encode_result(value, self.as_list, batch.output_format,
                                [f.display_name for f in batch.files])
        return ScoringOutcome(batch.job_id, batch.index, batch.attempt, SUCCEEDED, encoded.part,
                              encoded.rows, tuple(batch.files[i] for i in encoded.missing),
                              len(names), len(batch.files) - len(names), None, None,
                              "", 0.0, 0.0)


@pytest.fixture
def env(storage_connection, unique_name, monkeypatch):
    # Each test's container is a datastore of its own: jobs read only datastores.
    monkeypatch.setenv(DATASTORES_SETTING, f"testdata={unique_name}")
    account = StorageAccount(connection_string=storage_connection)
    store = JobStore(account)
    queue = minibatch_queue(account, unique_name)
    queue.create_queue()
    data = account.blob_service().get_container_client(unique_name)
    data.create_container()
    return account, store, queue, data, unique_name


def _upload(data, folder: str, count: int) -> list[str]:
    names = [f"{folder}/f{i:03d}.txt" for i in range(count)]
    for name in names:
        data.upload_blob(name, b"x")
    return names


def _drain(worker: MiniBatchHandler, queue, *, duplicate: bool = False) -> list[str]:
    """Deliver every message like the host would (retry on RetryMiniBatch)."""
    actions = []
    while True:
        messages = list(queue.receive_messages(max_messages=32, visibility_timeout=1))
        if not messages:
            if not queue.get_queue_properties().approximate_message_count:
                return actions
            continue
        for message in messages:
            deliveries = 2 if duplicate else 1
            try:
                for _ in range(deliveries):
                    actions.append(worker.process(message.content, message.dequeue_count).action)
            except RetryMiniBatch:
                actions.append("retry")
                queue.update_message(message, visibility_timeout=0)
                continue
            queue.delete_message(message)


def _run(store, queue, job_id, worker, **kw):
    assert plan_job(store, queue, job_id).ok
    _drain(worker, queue, **kw)
    assert evaluate(store, job_id).outcome.ends_job
    step = advance_job(store, job_id)
    assert step.ended
    return step


def _all_jobs(service, **filters):
    rows, token = [], None
    while True:
        page = service.list(**filters, top=1000, continuation=token)
        rows += page.value
        token = page.continuation
        if token is None:
            return rows


def _url(account, container, path):
    return account.blob_service().url.rstrip("/") + f"/{container}/{path}"


def test_happy_path_rows_in_input_order_azureml_format(env):
    account, store, queue, data, name = env
    _upload(data, "in", 23)
    data.upload_blob("in/sub/deep.txt", b"x")  # not included: sub-folders are opt-in
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=5)))
    job, created = service.invoke("ep1", {"input": _url(account, name, "in")})
    assert created and job.status == "NotStarted"
    worker = MiniBatchHandler(store, FakeRuntime(), queue)
    result = _run(store, queue, job.id, worker, duplicate=True)
    assert result.status == "Completed"
    out = account.blob_service().get_blob_client("batchfn-jobs", f"{job.id}/predictions.csv")
    text = out.download_blob().readall().decode()
    assert text == "".join(f"f{i:03d}.txt 8\n" for i in range(23))
    view = service.show(job.id)
    assert view["status"] == "Completed"
    assert view["progress"]["files"] == {"total": 23, "succeeded": 23, "failed": 0, "pending": 0}
    assert view["progress"]["mini_batches"]["total"] == 5
    assert service.errors(job.id).value == []
    assert [row["name"] for row in _all_jobs(service, endpoint="ep1")].count(job.id) == 1


def test_retries_then_success_and_permanent_failure_errors_report(env):
    account, store, queue, data, name = env
    _upload(data, "in", 6)
    settings = DeploymentSettings(mini_batch_size=2)
    service = JobService(store, FakeRegistry(settings))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"),
                                    "max_retries": 2, "output_format": "csv"})
    runtime = FakeRuntime(fail={"f000.txt": 2, "f004.txt": 99})
    result = _run(store, queue, job.id, MiniBatchHandler(store, runtime, queue))
    assert result.status == "Completed"
    view = service.show(job.id)
    assert view["progress"]["files"]["failed"] == 2
    assert view["progress"]["mini_batches"]["failed"] == 1
    errors = service.errors(job.id).value
    assert [e["file"] for e in errors] == ["f004.txt", "f005.txt"]
    assert errors[0]["attempts"] == 3 and errors[0]["traceback"].endswith("\nValueError: boom")
    name_, content = service.output(job.id, "score")
    assert content.decode().splitlines() == ["file,value"] + [
        f"f00{i}.txt,8" for i in range(4)]
    rerun, created = service.rerun(job.id, failed_only=True)
    assert created and rerun.rerun_of == job.id
    runtime.fail.clear()
    assert _run(store, queue, rerun.id, MiniBatchHandler(store, runtime, queue)).status == \
        "Completed"
    assert service.show(rerun.id)["progress"]["files"]["total"] == 2


@pytest.mark.parametrize("threshold,status", [(-1, "Completed"), (0, "Failed"), (2, "Completed"),
                                              (1, "Failed")])
def test_error_threshold(env, threshold, status):
    account, store, queue, data, name = env
    _upload(data, "in", 4)
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=2)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"), "max_retries": 0,
                                    "error_threshold": threshold})
    runtime = FakeRuntime(fail={"f000.txt": 99})
    result = _run(store, queue, job.id, MiniBatchHandler(store, runtime, queue))
    assert result.status == status
    if status == "Failed":
        assert "error_threshold" in result.reason


def test_fewer_rows_than_inputs_counts_the_gap(env):
    account, store, queue, data, name = env
    _upload(data, "in", 4)
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=4)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"), "output_format": "jsonl"})
    _run(store, queue, job.id, MiniBatchHandler(store, FakeRuntime(short=True), queue))
    view = service.show(job.id)
    assert view["progress"]["files"]["succeeded"] == 3
    assert view["progress"]["files"]["failed"] == 1
    assert [e["file"] for e in service.errors(job.id).value] == ["f003.txt"]
    _, content = service.output(job.id, "score")
    assert json.loads(content.splitlines()[0]) == {"file": "f000.txt", "value": 8}


def test_parquet_and_list_returns(env):
    account, store, queue, data, name = env
    _upload(data, "in", 5)
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=2)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"),
                                    "output_format": "parquet", "output_file_name": "p.parquet"})
    _run(store, queue, job.id, MiniBatchHandler(store, FakeRuntime(as_list=True), queue))
    _, content = service.output(job.id, "score")
    table = pq.read_table(io.BytesIO(content))
    assert table.column("result").to_pylist() == [f"f00{i}.txt:ok" for i in range(5)]


def test_output_exists_fails_job_and_keeps_file(env):
    account, store, queue, data, name = env
    _upload(data, "in", 2)
    data.upload_blob("out/predictions.csv", b"keep me")
    service = JobService(store, FakeRegistry(DeploymentSettings()))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"),
                                    "output_path": _url(account, name, "out")})
    result = _run(store, queue, job.id, MiniBatchHandler(store, FakeRuntime(), queue))
    assert result.status == "Failed" and "already exists" in result.reason
    assert data.download_blob("out/predictions.csv").readall() == b"keep me"


def test_empty_folder_completes_with_zero_rows(env):
    account, store, queue, data, name = env
    service = JobService(store, FakeRegistry(DeploymentSettings()))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "nothing-here")})
    result = _run(store, queue, job.id, MiniBatchHandler(store, FakeRuntime(), queue))
    assert result.status == "Completed"
    view = service.show(job.id)
    assert view["warnings"] and view["progress"]["files"]["total"] == 0
    assert service.output(job.id, "score")[1] == b""


def test_missing_input_file_fails_job_with_reason(env):
    account, store, queue, data, name = env
    service = JobService(store, FakeRegistry(DeploymentSettings()))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "nope.txt"),
                                    "input_type": "uri_file"})
    assert plan_job(store, queue, job.id).ok is False
    assert "does not exist" in store.get(job.id).reason


def test_cancel_skips_remaining_and_ends_canceled(env):
    account, store, queue, data, name = env
    _upload(data, "in", 4)
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=1)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    plan_job(store, queue, job.id)
    assert service.cancel(job.id).status == "CancelRequested"
    runtime = FakeRuntime()
    actions = _drain(MiniBatchHandler(store, runtime, queue), queue)
    assert set(actions) == {"skipped"} and runtime.calls == 0
    assert evaluate(store, job.id).outcome is Outcome.CANCELED
    assert advance_job(store, job.id).status == "Canceled"
    assert service.cancel(job.id).status == "Canceled"


def test_idempotent_invoke_by_name(env):
    account, store, queue, data, name = env
    service = JobService(store, FakeRegistry(DeploymentSettings()))
    body = {"input": _url(account, name, "in"), "name": f"job-{name}"}
    first, created = service.invoke("ep1", body)
    again, created_again = service.invoke("ep1", dict(body))
    assert created and not created_again and again.id == first.id == f"job-{name}"
    with pytest.raises(Conflict):
        service.invoke("ep1", {**body, "mini_batch_size": 3})


def test_bad_invokes_create_nothing(env):
    account, store, queue, data, name = env
    service = JobService(store, FakeRegistry(DeploymentSettings()))
    before = len(_all_jobs(service))
    good = _url(account, name, "in")
    bad = [
        ("ep1", {"input": "https://evil.example.com/c/in"}, InvalidRequest),
        ("ep1", {"input": "http://169.254.169.254/latest"}, InvalidRequest),
        ("ep1", {"input": _url(account, "batchfn-registry", "x")}, InvalidRequest),
        ("ep1", {"input": "azureml://datastores/other/paths/x"}, InvalidRequest),
        ("ep1", {"input": "/tmp/local"}, InvalidRequest),
        ("ep1", {"input": good + "/../secret"}, InvalidRequest),
        ("ep1", {"input": good, "settings": {"logging_level": "debug"}}, InvalidRequest),
        ("ep1", {"input": good, "mini_batch_size": 0}, InvalidRequest),
        ("ep1", {"input": good, "bogus": 1}, InvalidRequest),
        ("ep1", {"input": good, "deployment_name": "green"}, NotFound),
        ("nope", {"input": good}, NotFound),
        ("ep1", {"input": good, "name": "../x"}, InvalidRequest),
    ]
    for endpoint, body, error in bad:
        with pytest.raises(error):
            service.invoke(endpoint, body)
    assert len(_all_jobs(service)) == before


def test_azureml_rest_body_and_datastore_paths(env):
    account, store, queue, data, name = env
    service = JobService(store, FakeRegistry(DeploymentSettings()))
    body = {"properties": {
        "InputData": {"in": {"JobInputType": "UriFolder",
                             "Uri": "azureml://datastores/workspaceblobstore/paths/x/y"}},
        "OutputData": {"score": {"JobOutputType": "UriFile",
                                 "Uri": _url(account, name, "out/result.txt")}}}}
    job, _ = service.invoke("ep1", body, header_deployment="blue")
    assert job.input.location.container == "batchfn-data" and job.input.location.path == "x/y"
    assert job.output_blob.container == name and job.output_blob.path == "out/result.txt"


def test_worker_requeues_when_retries_outnumber_dequeue_limit(env):
    account, store, queue, data, name = env
    _upload(data, "in", 1)
    service = JobService(store, FakeRegistry(DeploymentSettings()))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"), "max_retries": 3})
    plan_job(store, queue, job.id)
    (message,) = queue.receive_messages(max_messages=1)
    worker = MiniBatchHandler(store, FakeRuntime(fail={"f000.txt": 2}), queue, max_dequeue_count=1)
    assert worker.process(message.content, 1).action == "requeued"
    queue.delete_message(message)
    follow = list(queue.receive_messages(max_messages=1, visibility_timeout=1))
    assert not follow  # the retry waits out its delay
    assert MiniBatchMessage.decode(
        MiniBatchMessage(job.id, 0, 0, 1).encode()).prior_attempts == 1


def test_poison_handler_records_failure_once(env):
    account, store, queue, data, name = env
    _upload(data, "in", 2)
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=2)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    plan_job(store, queue, job.id)
    body = MiniBatchMessage(job.id, 0, 0).encode()
    assert record_poisoned(store, body, 5) == "failed: poisoned"
    assert record_poisoned(store, body, 5) == "skipped: already recorded"
    assert evaluate(store, job.id).outcome is Outcome.COMPLETED
    advance_job(store, job.id)
    view = service.show(job.id)
    assert view["progress"]["mini_batches"]["failed"] == 1
    assert view["progress"]["files"]["failed"] == 2
    assert store.read_json(layout.progress(job.id))["batches_failed"] == 1


def test_blob_drop_marker_starts_one_job_per_marker_version_and_answers(env):
    from azure.core.exceptions import ResourceExistsError

    from shared.contract.layout import DROP_CONTAINER
    from shared.control.blob_drop import process_marker

    account, store, queue, data, name = env
    drop = account.blob_service().get_container_client(DROP_CONTAINER)
    try:
        drop.create_container()
    except ResourceExistsError:
        pass
    folder = f"ep1/{name}"
    drop.upload_blob(f"{folder}/a.txt", b"x")
    drop.upload_blob(f"{folder}/_start", b'{"mini_batch_size": 1}')
    service = JobService(store, FakeRegistry(DeploymentSettings()))
    first = process_marker(service, drop.get_blob_client(f"{folder}/_start"))
    again = process_marker(service, drop.get_blob_client(f"{folder}/_start"))
    assert first.created and not again.created and again.job.id == first.job.id
    answer = json.loads(drop.download_blob(f"{folder}/_job.json").readall())
    assert (answer["name"], answer["output"]["path"]) == (
        first.job.id, f"{folder}/_output/predictions.csv")
    assert process_marker(service, drop.get_blob_client(f"{folder}/a.txt")) is None
    result = _run(store, queue, first.job.id, MiniBatchHandler(store, FakeRuntime(), queue))
    assert result.status == "Completed"
    # Neither the marker nor the answer beside it is an input.
    assert service.show(first.job.id)["progress"]["files"]["total"] == 1
    assert drop.get_blob_client(f"{folder}/_output/predictions.csv").exists()
    # Uploaded again, malformed: refused, answered, nothing starts.
    drop.upload_blob(f"{folder}/_start", b"not json", overwrite=True)
    refused = process_marker(service, drop.get_blob_client(f"{folder}/_start"))
    assert refused.job is None and refused.error.code == "invalid_marker"
    error = json.loads(drop.download_blob(f"{folder}/_error.json").readall())
    assert error["error"]["code"] == "invalid_marker" and error["error"]["message"]
    assert not drop.get_blob_client(f"{folder}/_job.json").exists()


def test_upload_grant_writes_only_under_uploads(env):
    from azure.storage.blob import BlobClient

    from shared.control.input_uploads import grant_input_upload

    account, store, queue, data, name = env
    grant = grant_input_upload(store.service, {"name": "digits", "files": ["a.png", "s/b.png"]})
    assert grant["uri"].startswith("azureml://datastores/workspaceblobstore/paths/uploads/")
    for entry in grant["files"]:
        BlobClient.from_blob_url(entry["url"]).upload_blob(b"png")
    for body in ({"name": "../x", "files": ["a"]}, {"name": "d", "files": ["../a"]},
                 {"name": "d", "files": []}):
        with pytest.raises(InvalidRequest):
            grant_input_upload(store.service, body)


def test_files_the_script_writes_land_in_the_output_folder(env):
    account, store, queue, data, name = env
    _upload(data, "in", 5)
    service = JobService(store, FakeRegistry(DeploymentSettings(
        mini_batch_size=2, output_action="summary_only")))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    runtime = FakeRuntime()
    runtime.script_writes = True
    assert _run(store, queue, job.id, MiniBatchHandler(store, runtime, queue)).status == \
        "Completed"
    jobs = account.blob_service().get_container_client("batchfn-jobs")
    assert sorted(jobs.list_blob_names(name_starts_with=f"{job.id}/")) == [
        f"{job.id}/f000.txt.out", f"{job.id}/f002.txt.out", f"{job.id}/f004.txt.out"]
    assert jobs.download_blob(f"{job.id}/f004.txt.out").readall() == b"1"


def test_script_outputs_are_create_only(env):
    account, store, queue, data, name = env
    _upload(data, "in", 6)
    # The output folder is a datastore folder that already holds a file of that name.
    data.upload_blob("out/f002.txt.out", b"someone else's")
    service = JobService(store, FakeRegistry(DeploymentSettings(
        mini_batch_size=2, output_action="summary_only")))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"),
                                    "output_path": _url(account, name, "out")})
    runtime = FakeRuntime()
    runtime.script_writes = True
    worker = MiniBatchHandler(store, runtime, queue)
    assert plan_job(store, queue, job.id).ok
    _drain(worker, queue, duplicate=True)  # every message twice: same bytes are no clash
    assert advance_job(store, job.id).status == "Completed"
    assert data.download_blob("out/f002.txt.out").readall() == b"someone else's"
    assert data.download_blob("out/f000.txt.out").readall() == b"2"
    rows = service.errors(job.id).value
    assert sorted(row["file"] for row in rows) == ["f002.txt", "f003.txt"]
    assert {row["status"] for row in rows} == {"output_exists"}
    assert "never replaces a file it did not write" in rows[0]["error"]


@pytest.mark.parametrize("written", [
    "..\\victim\\x",  # storage reads "\\" as "/" and resolves "..": another job's folder
    "..\\..\\batchfn-drop\\ep1\\f\\_start",  # a drop marker that would start a job
    "dots.\\..\\..\\victim\\y", "line\nbreak", "trailing."])
def test_script_output_names_stay_in_the_job_folder(env, written):
    account, store, queue, data, name = env
    _upload(data, "in", 4)
    jobs = account.blob_service().get_container_client("batchfn-jobs")
    store.ensure_containers()
    service = JobService(store, FakeRegistry(DeploymentSettings(
        mini_batch_size=2, output_action="summary_only")))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    runtime = FakeRuntime()
    runtime.extra_outputs = {written: b"planted", "good/file.txt": b"fine"}
    assert _run(store, queue, job.id, MiniBatchHandler(store, runtime, queue)).status == \
        "Completed"
    # Azurite turns "\\" into "/" and keeps "..": before names were checked, the job's
    # folder held "<job>/../victim/x", which Azure resolves to "victim/x", outside it.
    for container in account.blob_service().list_containers(name_starts_with="batchfn-"):
        client = account.blob_service().get_container_client(container.name)
        for blob_name in client.list_blob_names():
            segments = blob_name.split("/")
            assert ".." not in segments and not any(s.endswith(".") for s in segments), \
                f"{container.name}/{blob_name}"
            assert "\n" not in blob_name
    assert sorted(jobs.list_blob_names(name_starts_with=f"{job.id}/")) == [
        f"{job.id}/good/file.txt"]
    # The mini-batch that wrote it failed, naming the file; later ones were not blamed.
    rows = service.errors(job.id).value
    assert sorted(row["file"] for row in rows) == ["f000.txt", "f001.txt"]
    assert {row["status"] for row in rows} == {"output_refused"}
    assert repr(written)[1:-1] in rows[0]["error"] and "plain relative" in rows[0]["error"]


def test_script_output_file_count_is_bounded(env, monkeypatch):
    from shared.scoring import minibatch_handler

    account, store, queue, data, name = env
    _upload(data, "in", 2)
    monkeypatch.setattr(minibatch_handler, "MAX_SCRIPT_OUTPUT_FILES", 3)
    service = JobService(store, FakeRegistry(DeploymentSettings(
        mini_batch_size=2, output_action="summary_only")))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    runtime = FakeRuntime()
    runtime.extra_outputs = {f"many/{i}.txt": b"x" for i in range(4)}
    _run(store, queue, job.id, MiniBatchHandler(store, runtime, queue))
    jobs = account.blob_service().get_container_client("batchfn-jobs")
    assert list(jobs.list_blob_names(name_starts_with=f"{job.id}/")) == []
    rows = service.errors(job.id).value
    assert {row["status"] for row in rows} == {"output_refused"}
    assert "more than 3 files" in rows[0]["error"]


def test_console_reads_live_errors_throughput_and_attempt_logs(env):
    account, store, queue, data, name = env
    _upload(data, "in", 6)
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=2)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"), "max_retries": 0})
    assert plan_job(store, queue, job.id).ok
    assert service.throughput(job.id)["samples"] == []
    _drain(MiniBatchHandler(store, FakeRuntime(fail={"f004.txt": 99}), queue), queue)
    # Before the job ends, errors come from the failure records written so far.
    errors = service.errors(job.id).value
    assert [e["file"] for e in errors] == ["f004.txt", "f005.txt"]
    assert errors[0]["traceback"].endswith("ValueError: boom")
    assert evaluate(store, job.id).outcome is Outcome.COMPLETED
    throughput = service.throughput(job.id)
    assert throughput["inputs"] == 6 and throughput["unit"] == "files"
    assert throughput["planned_at"]
    last = throughput["samples"][-1]
    assert (last["succeeded"], last["failed"]) == (4, 2)

    logs = service.logs(job.id)
    assert logs["truncated"] is False
    assert [(e["name"], e["kind"], e["mini_batch"], e["attempt"]) for e in logs["value"]] == [
        ("00000002/attempt-1.log", "failed_attempt", 2, 1)]
    file_name, content, size = service.log(job.id, "00000002/attempt-1.log")
    assert file_name == f"{job.id}-00000002-attempt-1.log"
    assert content.startswith(b"log line") and size == len(content)
    assert service.log(job.id, "00000002/attempt-1.log", tail=6)[1] == content[-6:]
    for bad in ("../job.json", "00000002/attempt-1.log/..", "00000009/attempt-1.log", ""):
        with pytest.raises(NotFound):
            service.log(job.id, bad)
    for tail in (0, -1, 4 * 1024 * 1024 + 1):
        with pytest.raises(InvalidRequest):
            service.log(job.id, "00000002/attempt-1.log", tail=tail)
    with pytest.raises(NotFound):
        service.logs("no-such-job")
    with pytest.raises(NotFound):
        service.throughput("no-such-job")

    assert [e["file"] for e in service.errors(job.id, top=1).value] == ["f004.txt"]
    assert advance_job(store, job.id).status == "Completed"
    assert [e["file"] for e in service.errors(job.id).value] == ["f004.txt", "f005.txt"]
    assert [e["file"] for e in service.errors(job.id, top=1).value] == ["f004.txt"]
    with pytest.raises(InvalidRequest):
        service.errors(job.id, top=0)
    assert job.id in [row["name"] for row in _all_jobs(service, endpoint="ep1",
                                                        status="Completed")]
    assert job.id not in [row["name"] for row in _all_jobs(service, status="Running")]
    with pytest.raises(InvalidRequest):
        service.list(status="Done")


def _pages(service, job_id, top):
    rows, token, pages = [], None, 0
    while True:
        page = service.errors(job_id, top, token)
        rows += page.value
        pages += 1
        token = page.continuation
        if token is None:
            return rows, pages


def test_a_repeated_message_is_stored_once_and_the_report_is_paged(env, monkeypatch):
    from shared.control import error_pages
    from shared.control.pages import make_token

    account, store, queue, data, name = env
    _upload(data, "in", 12)
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=4)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"), "max_retries": 0})
    message = "boom " * 400  # 2,000 characters, repeated on each file of two mini-batches
    runtime = FakeRuntime(fail={"f000.txt": 99, "f008.txt": 99})
    runtime.score_failure = message
    assert plan_job(store, queue, job.id).ok
    _drain(MiniBatchHandler(store, runtime, queue), queue)
    live, _ = _pages(service, job.id, 3)  # while it runs: from the failure records
    assert advance_job(store, job.id).status == "Completed"
    stored = store.state.download_blob(layout.errors_report(job.id)).readall()
    assert stored.count(b"boom ") == 400 * 2  # once per mini-batch, not once per file
    assert stored.count(b"ValueError: boom") == 2
    whole, _ = _pages(service, job.id, 1000)
    assert whole == live and len(whole) == 8
    assert [row["file"] for row in whole] == [f"f{i:03d}.txt" for i in (0, 1, 2, 3, 8, 9, 10, 11)]
    assert all(row["error"].startswith("boom boom") and row["traceback"].endswith(
        "ValueError: boom") and "mini_batch_error" not in row for row in whole)
    for top in (1, 2, 3, 5):  # pages that start inside a mini-batch restore its message
        rows, pages = _pages(service, job.id, top)
        assert rows == whole and pages == -(-8 // top)
    # A page stops at about MAX_PAGE_BYTES of rows whatever top says.
    monkeypatch.setattr(error_pages, "MAX_PAGE_BYTES", 5000)
    rows, pages = _pages(service, job.id, 1000)
    assert rows == whole and pages == 4
    first = service.errors(job.id, 1000)
    forged = [make_token("errors", offset=offset, first=first_at)
              for offset, first_at in ((7, 0), (10 ** 9, 0), (3000, 10 ** 9), (3000, 5))]
    for bad in ("not-a-token", first.continuation + "x", "eyJraW5kIjoiam9icyJ9",
                first.continuation[:-4], make_token("jobs", after="x"), *forged):
        with pytest.raises(InvalidRequest, match="continuation"):
            service.errors(job.id, 2, bad)
    rerun, created = service.rerun(job.id, failed_only=True)  # reads the report streamed
    assert created


def test_job_list_pages_newest_first(env, monkeypatch):
    from shared.control.pages import make_token
    from shared.storage import job_store

    account, store, queue, data, name = env
    service = JobService(store, FakeRegistry(DeploymentSettings()))
    body = {"input": _url(account, name, "in")}
    created = []
    for number in range(7):
        job, _ = service.invoke("ep1", {**body, "name": f"{name}-{number}"})
        created.append((job.created_at, job.id))
        if number % 2:
            store.update(job.id, lambda j: j.with_status("Canceled"))
    newest_first = [job_id for _, job_id in sorted(created, key=lambda c: (
        layout.newest_first_key(c[0]), c[1]))]
    assert newest_first[0] == max(created)[1]
    mine = [row["name"] for row in _all_jobs(service) if row["name"].startswith(name)]
    assert mine == newest_first
    monkeypatch.setattr(job_store, "INDEX_PAGE_SIZE", 2)  # storage pages of two index blobs
    for top in (1, 2, 3):
        rows, token, pages = [], None, 0
        while True:
            page = service.list(top=top, continuation=token)
            assert len(page.value) <= top
            rows += page.value
            pages += 1
            token = page.continuation
            if token is None:
                break
        assert [r["name"] for r in rows if r["name"].startswith(name)] == newest_first
        assert len({r["name"] for r in rows}) == len(rows)
    canceled = [r["name"] for r in _all_jobs(service, status="Canceled")
                if r["name"].startswith(name)]
    assert canceled == [job_id for job_id in newest_first if int(job_id.rsplit("-")[-1]) % 2]
    # A rare filter reads a bounded number of index pages per call, then hands on a token.
    monkeypatch.setattr(job_store, "MAX_INDEX_PAGES", 1)
    page = service.list(endpoint="no-such-endpoint", top=5)
    assert page.value == [] and page.continuation is not None
    for bad in ("x", make_token("errors", offset=1, first=0), make_token("jobs", marker=1,
                                                                           after="")):
        with pytest.raises(InvalidRequest, match="continuation"):
            service.list(continuation=bad)
    with pytest.raises(InvalidRequest, match="top"):
        service.list(top=1001)


def test_an_index_blob_of_the_older_layout_moves_to_its_newest_first_name(env):
    account, store, queue, data, name = env
    service = JobService(store, FakeRegistry(DeploymentSettings()))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"), "name": f"{name}-old"})
    new_name = layout.job_index(job.id, job.created_at)
    metadata = store.state.get_blob_client(new_name).get_blob_properties().metadata
    store.state.delete_blob(new_name)
    store.state.upload_blob(f"{layout.JOB_INDEX_PREFIX}{job.id}", b"", metadata=metadata)
    _all_jobs(service)
    assert store.state.get_blob_client(new_name).exists()
    assert not store.state.get_blob_client(f"{layout.JOB_INDEX_PREFIX}{job.id}").exists()
    assert [r["name"] for r in _all_jobs(service)].count(job.id) == 1


def test_ledgers_are_read_in_bounded_chunks_whatever_their_lines(env):
    from shared.contract.ledger import Completion
    from shared.storage.ledger_blobs import create_ledger, ledger_lines, record_completion

    _, store, _, _, name = env
    store.ensure_containers()
    create_ledger(store.state, name, 0)
    lines = [Completion(i, True, 1, 0, 1, at="t", part=b"x" * (40 * i + 1)) for i in range(3)]
    for completion in lines:
        record_completion(store.state, name, completion)
    read = list(ledger_lines(store.state, name, 0, chunk_bytes=16))
    assert [Completion.from_line(line) for _, line in read] == lines
    assert read[-1][0] == sum(len(c.to_line()) for c in lines)  # offset past the last line
    assert list(ledger_lines(store.state, name, 0, offset=read[-1][0])) == []
    assert list(ledger_lines(store.state, "no-such-job", 0)) == []


def test_a_large_part_goes_to_a_blob_and_a_lost_ledger_line_is_restored(env, monkeypatch):
    from shared.storage import parts

    account, store, queue, data, name = env
    _upload(data, "in", 4)
    monkeypatch.setattr(parts, "INLINE_PART_BYTES", 20)  # parts of 2 rows are larger
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=2)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"), "output_format": "csv"})
    plan_job(store, queue, job.id)
    worker = MiniBatchHandler(store, FakeRuntime(), queue)
    assert worker.process(MiniBatchMessage(job.id, 0, 0).encode(), 1).action == "scored"
    assert store.state.get_blob_client(layout.part(job.id, 0)).exists()
    # Mini-batch 1 scored and wrote its part, then its host died before the ledger append.
    runtime = FakeRuntime()
    part = runtime.score(None, MiniBatch(job.id, 1, worker._batch(
        MiniBatchMessage(job.id, 1, 0)).files, 1, 30, "csv")).part
    store.state.upload_blob(layout.part(job.id, 1), part.data, metadata={
        "succeeded": "2", "failed": "0", "rows": "2",
        "header": base64.b64encode(part.header).decode()})
    assert record_poisoned(store, MiniBatchMessage(job.id, 1, 0).encode(), 5) == \
        "scored: restored from part"
    assert advance_job(store, job.id).status == "Completed"
    _, content = service.output(job.id, "score")
    assert content.decode().splitlines() == ["file,value"] + [f"f00{i}.txt,8" for i in range(4)]


def test_a_late_copy_that_fails_for_good_leaves_the_output_and_errors_report_alone(env):
    # Found by the chaos suite: queues deliver at least once, and a copy of a mini-batch
    # that succeeded may fail for good later (its inputs deleted meanwhile); its failure
    # record must not list files whose rows are in the output.
    account, store, queue, data, name = env
    _upload(data, "in", 4)
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=2)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"), "max_retries": 0,
                                    "output_format": "csv"})
    assert plan_job(store, queue, job.id).ok
    runtime = FakeRuntime(fail={"f002.txt": 99})  # mini-batch 1 fails for good
    worker = MiniBatchHandler(store, runtime, queue)
    _drain(worker, queue)
    runtime.fail["f000.txt"] = 99
    assert worker.process(MiniBatchMessage(job.id, 0, 0).encode(), 1).action == "failed"
    assert evaluate(store, job.id).outcome is Outcome.COMPLETED
    assert advance_job(store, job.id).status == "Completed"
    _, content = service.output(job.id, "score")
    assert content.decode().splitlines() == ["file,value", "f000.txt,8", "f001.txt,8"]
    assert [e["file"] for e in service.errors(job.id).value] == ["f002.txt", "f003.txt"]
