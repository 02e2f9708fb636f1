"""Tabular jobs against a real Azurite: planning row ranges into streamed manifest chunks,
the caps on files and rows, and a worker process reading, scoring and counting rows."""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from azure.core.exceptions import ResourceExistsError
from sklearn.datasets import load_breast_cancer

from shared.contract import layout
from shared.contract.errors import NotFound
from shared.contract.job_records import JobCompute
from shared.contract.layout import ASSETS_CONTAINER, DATA_CONTAINER
from shared.contract.manifest import InputFile, RowPiece
from shared.contract.messages import MiniBatchMessage
from shared.contract.registry_records import AssetRef, AssetVersion, DeploymentRecord
from shared.contract.settings import DeploymentSettings
from shared.control import planner
from shared.control.job_service import JobService
from shared.control.orchestrator import PlanResult
from shared.control.planner import plan_job
from shared.control.progress import Progress
from shared.scoring.batch import MiniBatch
from shared.scoring.scoring_runtime import ScoringRuntime
from shared.storage.job_store import JobStore
from shared.storage.queue_clients import minibatch_queue
from shared.worker.input_errors import StorageFailing
from shared.worker.protocol import TablePiece
from shared.worker.tables import TableLoader
from shared.worker.tabular.sources import BlobSource
from shared.worker.tabular.split import plan_table
from tests.conftest import jsonl_rows, parquet_claiming

SCRIPTS = Path(__file__).resolve().parents[1] / "scoring_scripts"
SAMPLE_MODEL = Path(__file__).resolve().parents[2] / "samples" / "breast_cancer" / \
    "deployment-mlflow" / "model"


class Registry:
    def __init__(self, settings: DeploymentSettings) -> None:
        asset = AssetRef("model", "m", "1", "d", "models/m/1/", "model")
        self.deployment = DeploymentRecord(name="rows", endpoint_name="ep1", model=asset,
                                           code=None, scoring_script=None, settings=settings)

    def job_compute(self, name: str) -> JobCompute:
        return JobCompute(name)

    def resolve_data(self, name: str, version: str) -> AssetVersion:
        raise NotFound(f"data asset {name}:{version} does not exist")

    def resolve_deployment(self, endpoint: str, name: str | None) -> DeploymentRecord:
        return self.deployment


@pytest.fixture
def jobs(account, unique_name):
    store = JobStore(account)
    queue = minibatch_queue(account, unique_name)
    queue.create_queue()
    return store, queue, account.container(DATA_CONTAINER), f"tabular/{unique_name}"


def _invoke(account, store, folder: str, **settings) -> str:
    service = JobService(store, Registry(DeploymentSettings.from_dict(
        {"input_format": "csv", **settings})))
    uri = f"{account.blob_service().url.rstrip('/')}/{DATA_CONTAINER}/{folder}"
    return service.invoke("ep1", {"input": uri})[0].id


def _csv(rows: range) -> bytes:
    return pd.DataFrame({"id": [f"r{i}" for i in rows], "value": list(rows)}).to_csv(
        index=False).encode()


def _planned(store, queue, job_id: str) -> tuple[list, list[MiniBatchMessage]]:
    plan = store.read_json(layout.plan(job_id))
    batches = []
    for chunk in range(plan["chunks"]):
        manifest = store.read_manifest(job_id, chunk)
        assert manifest.first_index == len(batches)
        batches += manifest.batches
    messages = [MiniBatchMessage.decode(m.content)
                for m in queue.receive_messages(max_messages=32)]
    return batches, sorted(messages, key=lambda m: m.index)


def test_a_folder_plans_into_row_ranges_in_streamed_chunks(jobs, account, monkeypatch):
    store, queue, data, folder = jobs
    data.upload_blob(f"{folder}/a.csv", _csv(range(1050)))
    data.upload_blob(f"{folder}/b.csv", _csv(range(20)))
    data.upload_blob(f"{folder}/_SUCCESS", b"")
    data.upload_blob(f"{folder}/c.csv.gz", b"\x1f\x8b")
    monkeypatch.setattr(planner, "MANIFEST_ITEMS", 2)  # a chunk per two pieces
    job_id = _invoke(account, store, folder, mini_batch_size=500)

    assert plan_job(store, queue, job_id) == PlanResult(ok=True, inputs=1071, batches=4)

    batches, messages = _planned(store, queue, job_id)
    assert store.read_json(layout.plan(job_id)) == {"unit": "rows", "inputs": 1071,
                                                   "batches": 4, "chunks": 2}
    # Small files fill the mini-batch a file before them began; the .gz file failed at
    # planning: a mini-batch of its own, recorded, never sent.
    assert [[(p.file.display_name, p.first_row, p.rows) for p in b.pieces] for b in batches] == [
        [("a.csv", 0, 500)], [("a.csv", 500, 500)], [], [("a.csv", 1000, 50), ("b.csv", 0, 20)]]
    assert [(m.index, m.chunk) for m in messages] == [(0, 0), (1, 0), (3, 1)]
    progress = Progress.from_dict(store.read_json(layout.progress(job_id)))
    assert (progress.unit, progress.files, progress.batches) == ("rows", 1071, 4)
    failure = json.loads(store.state.download_blob(layout.failure(job_id, 2)).readall())
    assert failure["status"] == "unsplittable"
    assert failure["inputs"][0][:5] == [DATA_CONTAINER, f"{folder}/c.csv.gz", "c.csv.gz", None,
                                        1]


def test_inputs_over_the_operator_caps_fail_the_job(jobs, account, monkeypatch):
    store, queue, data, folder = jobs
    for name in ("a.csv", "b.csv", "c.csv"):
        data.upload_blob(f"{folder}/{name}", _csv(range(10)))
    monkeypatch.setenv(planner.MAX_FILES_SETTING, "2")
    job_id = _invoke(account, store, folder)
    result = plan_job(store, queue, job_id)
    assert result.ok is False and "more than 2 files" in result.reason
    assert "BATCHFN_MAX_FILES_PER_JOB" in store.get(job_id).reason
    assert store.get(job_id).status == "Failed"

    monkeypatch.setenv(planner.MAX_FILES_SETTING, "10")
    monkeypatch.setenv(planner.MAX_ROWS_SETTING, "25")
    job_id = _invoke(account, store, folder)
    assert "more than 25 rows" in plan_job(store, queue, job_id).reason

    monkeypatch.setenv(planner.MAX_FILES_SETTING, "2")
    files_job = JobService(store, Registry(DeploymentSettings())).invoke("ep1", {
        "input": f"{account.blob_service().url}/{DATA_CONTAINER}/{folder}"})[0].id
    assert "more than 2 files" in plan_job(store, queue, files_job).reason


def test_a_parquet_footer_claiming_a_billion_rows_queues_nothing(jobs, account, monkeypatch):
    store, queue, data, folder = jobs
    data.upload_blob(f"{folder}/liar.parquet", parquet_claiming(10 ** 9))
    job_id = _invoke(account, store, folder, input_format="parquet")  # 10 rows a mini-batch
    result = plan_job(store, queue, job_id)
    assert result.ok is False and "more than 1,000,000 mini-batches" in result.reason
    assert "BATCHFN_MAX_MINI_BATCHES_PER_JOB" in result.reason
    # Refused on the footer's claim: no manifest, no ledger, no message; only the record and
    # what every ended job has, its lifecycle events and usage report.
    assert sorted(store.state.list_blob_names(name_starts_with=f"{job_id}/")) == sorted([
        layout.events_log(job_id), layout.job_record(job_id), layout.usage_report(job_id)])
    assert queue.get_queue_properties().approximate_message_count == 0
    monkeypatch.setenv(planner.MAX_ROWS_SETTING, str(10 ** 9 - 1))
    job_id = _invoke(account, store, folder, input_format="parquet", mini_batch_size=10 ** 5)
    assert "more than 999,999,999 rows" in plan_job(store, queue, job_id).reason
    # Within the caps it is planned; each mini-batch's rows are counted as they are read.
    monkeypatch.setenv(planner.MAX_BATCHES_SETTING, "3")
    monkeypatch.setenv(planner.MAX_ROWS_SETTING, str(3 * 10 ** 5))
    data.upload_blob(f"{folder}/liar.parquet", parquet_claiming(3 * 10 ** 5), overwrite=True)
    job_id = _invoke(account, store, folder, input_format="parquet", mini_batch_size=10 ** 5)
    assert plan_job(store, queue, job_id) == PlanResult(ok=True, inputs=3 * 10 ** 5, batches=3)
    monkeypatch.setenv(planner.MAX_BATCHES_SETTING, "2")
    job_id = _invoke(account, store, folder, input_format="parquet", mini_batch_size=10 ** 5)
    assert "more than 2 mini-batches" in plan_job(store, queue, job_id).reason


def test_a_job_canceled_while_it_is_planned_stops_planning(jobs, account, monkeypatch):
    store, queue, data, folder = jobs
    for name in ("a.csv", "b.csv", "c.csv"):
        data.upload_blob(f"{folder}/{name}", _csv(range(2)))
    monkeypatch.setattr(planner, "MANIFEST_ITEMS", 1)
    service = JobService(store, Registry(DeploymentSettings(mini_batch_size=1)))
    job_id = service.invoke("ep1", {
        "input": f"{account.blob_service().url}/{DATA_CONTAINER}/{folder}"})[0].id
    write_json = store.write_json

    def cancel_after_the_first_chunk(name, body):  # noqa: ANN001
        write_json(name, body)
        if name == layout.manifest(job_id, 0):
            service.cancel(job_id)

    monkeypatch.setattr(store, "write_json", cancel_after_the_first_chunk)
    result = plan_job(store, queue, job_id)

    assert result.ok and result.skipped == "CancelRequested"
    assert list(queue.receive_messages(max_messages=32)) == []  # sent once planning ends
    assert store.read_json(layout.plan(job_id)) is None


def test_a_failed_rows_rerun_replans_the_files_that_had_failures(jobs, account):
    store, queue, data, folder = jobs
    data.upload_blob(f"{folder}/a.csv", _csv(range(5)))
    data.upload_blob(f"{folder}/b.csv", _csv(range(7)))
    job_id = _invoke(account, store, folder, mini_batch_size=4)
    plan_job(store, queue, job_id)
    report = [{"file": "b.csv", "container": DATA_CONTAINER, "blob_name": f"{folder}/b.csv",
               "row": 3, "rows": 1}, {"file": "b.csv", "container": DATA_CONTAINER,
                                      "blob_name": f"{folder}/b.csv", "row": 5, "rows": 1}]
    store.state.upload_blob(layout.errors_report(job_id),
                            "".join(json.dumps(row) + "\n" for row in report).encode())
    store.update(job_id, lambda j: j.with_status("Completed"))
    service = JobService(store, Registry(DeploymentSettings.from_dict(
        {"input_format": "csv", "mini_batch_size": 4})))
    rerun, _ = service.rerun(job_id, failed_only=True)
    queue.clear_messages()
    assert plan_job(store, queue, rerun.id) == PlanResult(ok=True, inputs=7, batches=2)


@pytest.fixture(scope="module")
def runtime(account, tmp_path_factory):
    scoring = ScoringRuntime(account, tmp_path_factory.mktemp("work"), gpus=())
    yield scoring
    scoring.close()


def _upload_folder(account, folder: Path, kind: str) -> AssetRef:
    run = uuid.uuid4().hex[:8]
    ref = AssetRef(kind, f"{kind}-{run}", "1", run, f"{kind}s/{run}/", folder.name)
    assets = account.container(ASSETS_CONTAINER)
    try:
        assets.create_container()
    except ResourceExistsError:
        pass
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        assets.upload_blob(
            f"{ref.prefix}{folder.name}/{path.relative_to(folder).as_posix()}",
            path.read_bytes())
    return ref


def _pieces(account, name: str, body: bytes, fmt: str, rows_per_range: int) -> tuple:
    blob = account.container(DATA_CONTAINER).get_blob_client(f"tabular/{uuid.uuid4().hex}/{name}")
    blob.upload_blob(body)
    source = BlobSource.open(blob)
    file = InputFile(DATA_CONTAINER, blob.blob_name, name)
    return tuple(RowPiece(file, source.size, source.etag, tuple(r.to_list()))
                 for r in plan_table(source, fmt, rows_per_range).ranges)


def test_a_worker_reads_scores_and_counts_a_tabular_mini_batch(account, runtime, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.txt").write_text("1")
    deployment = DeploymentRecord(
        name="rows", endpoint_name="tabular", model=_upload_folder(account, model, "model"),
        code=_upload_folder(account, SCRIPTS, "code"), scoring_script="rows.py",
        environment_variables={"ROWS_SUM_COLUMN": "value"})
    body = _csv(range(12)).replace(b"r4,4\n", b"r4,4,oops\n")
    csv_pieces = _pieces(account, "part.csv", body, "csv", 5)
    batch = MiniBatch(job_id="tabular-job", index=0, files=(csv_pieces[0].file,), attempt=1,
                      timeout=60, output_format="jsonl", input_format="csv",
                      pieces=csv_pieces[:2], passthrough_columns=("id",))

    outcome = runtime.score(deployment, batch)

    assert outcome.status == "succeeded", outcome.log
    assert (outcome.succeeded, outcome.failed, outcome.rows) == (9, 1, 9)
    rows = jsonl_rows(outcome.part.data)
    assert [r["row"] for r in rows] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert [r["id"] for r in rows] == [f"r{i}" for i in (0, 1, 2, 3, 5, 6, 7, 8, 9)]
    assert rows[5]["doubled"] == 12
    assert [(f.file.display_name, f.row, f.error) for f in outcome.failures] == [
        ("part.csv", 4, "expected 2 fields as in the header, found 3")]

    short = replace(deployment, name="rows-short", environment_variables={"ROWS_MISSING": "2"})
    outcome = runtime.score(short, replace(batch, passthrough_columns=()))
    assert (outcome.succeeded, outcome.failed) == (7, 3)  # 1 unparseable + 2 not returned
    # Passthrough columns need a row per input row: a short return fails the mini-batch.
    outcome = runtime.score(short, batch)
    assert outcome.status == "failed"
    assert "run() returned 7 rows for 9 input rows" in outcome.error


def test_an_mlflow_deployment_scores_parquet_rows_with_the_built_in_scorer(account, runtime):
    deployment = DeploymentRecord(
        name="cancer", endpoint_name="tabular", code=None, scoring_script=None,
        model=_upload_folder(account, SAMPLE_MODEL, "model"))
    features = load_breast_cancer(as_frame=True).data.iloc[:30]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(features, preserve_index=False), sink,
                   row_group_size=10)
    pieces = _pieces(account, "rows.parquet", sink.getvalue(), "parquet", 20)
    batch = MiniBatch(job_id="mlflow-job", index=1, files=(pieces[0].file,), attempt=1,
                      timeout=120, output_format="azureml", input_format="parquet",
                      pieces=pieces[1:])

    outcome = runtime.score(deployment, batch)

    assert outcome.status == "succeeded", outcome.log
    lines = outcome.part.data.decode().splitlines()
    assert [line.split(",")[0] for line in lines] == [str(i) for i in range(20, 30)]
    assert all(line.endswith(",rows.parquet") for line in lines)
    assert (outcome.succeeded, outcome.failed) == (10, 0)


def test_a_refused_read_is_retried_and_never_shows_the_signed_url(account):
    pieces = _pieces(account, "secret.csv", _csv(range(3)), "csv", 10)
    url = (f"{account.container(DATA_CONTAINER).url}/{pieces[0].file.blob_name}"
           "?sv=2024-08-04&sr=b&sp=r&se=2030-01-01T00:00:00Z&sig=bm90LWEtc2lnbmF0dXJl")
    loader = TableLoader()
    try:
        future = loader.start("csv", [TablePiece("secret.csv", url, pieces[0].size,
                                                 pieces[0].etag, pieces[0].row_range)])
        with pytest.raises(StorageFailing) as refused:
            future.result(timeout=60)
    finally:
        loader.close()
    assert "HTTP 403" in str(refused.value) and "sig=" not in str(refused.value)
