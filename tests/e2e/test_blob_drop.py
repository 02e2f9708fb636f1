"""Blob drop end to end: a `_start` marker dropped into batchfn-drop starts one job, and
batchfn answers beside it (`_job.json`, `_error.json`, output under `_output/`)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from batchfn.client import BatchfnClient
from devhost.testing import running_devhost
from shared.contract.layout import DATA_CONTAINER, DROP_CONTAINER
from shared.control.blob_drop import MAX_MARKER_BYTES, drop_job_name
from tests.conftest import REPO

ENDPOINT = "drop-e2e"
FEEDBACK_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def host(storage_connection, tmp_path_factory):
    work = tmp_path_factory.mktemp("drop-work")
    with running_devhost("function_app", script_root=REPO,
                         connection_string=storage_connection,
                         env={"BATCHFN_WORK_DIR": str(work)}) as running:
        yield running


@pytest.fixture(scope="module")
def client(host, tmp_path_factory) -> BatchfnClient:
    model = tmp_path_factory.mktemp("drop-model") / "model"
    model.mkdir()
    (model / "weights.txt").write_text("1")
    client = BatchfnClient(url=host.url, key=host.key)
    client.create_endpoint(document={"name": ENDPOINT})
    client.create_deployment(document={
        "name": "echo", "endpoint_name": ENDPOINT, "model": {"path": str(model)},
        "code_configuration": {"code": str(REPO / "tests" / "scoring_scripts"),
                               "scoring_script": "echo.py"},
        "settings": {"mini_batch_size": 2},
    }, set_default=True)
    return client


@pytest.fixture(scope="module")
def drop(storage_connection) -> ContainerClient:
    container = BlobServiceClient.from_connection_string(
        storage_connection).get_container_client(DROP_CONTAINER)
    if not container.exists():
        container.create_container()
    return container


def _read_json(drop: ContainerClient, name: str, timeout: float = FEEDBACK_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(drop.download_blob(name).readall())
        except ResourceNotFoundError:
            time.sleep(0.2)
    raise AssertionError(f"{DROP_CONTAINER}/{name} did not appear within {timeout:.0f}s")


def _wait_for_job(client: BatchfnClient, name: str) -> dict:
    return client.wait_job(name, poll=0.3, timeout=FEEDBACK_TIMEOUT_S)


def _drop_jobs(client: BatchfnClient) -> set[str]:
    return {job["name"] for job in client.list_jobs(ENDPOINT) if job["name"].startswith("drop-")}


def test_marker_starts_one_job_and_answers_beside_the_drop(client, drop):
    before = _drop_jobs(client)
    for index in range(3):
        drop.upload_blob(f"{ENDPOINT}/batch1/file{index}.bin", b"x" * (index + 1))
    marker = drop.upload_blob(f"{ENDPOINT}/batch1/_start", b"")
    name = drop_job_name(f"{ENDPOINT}/batch1/_start", marker.get_blob_properties().etag)
    answer = _read_json(drop, f"{ENDPOINT}/batch1/_job.json")
    assert (answer["name"], answer["endpoint"], answer["deployment"]) == (name, ENDPOINT, "echo")
    assert answer["status_url"] == f"/api/jobs/{name}"
    assert (answer["output"]["container"], answer["output"]["path"]) == (
        DROP_CONTAINER, f"{ENDPOINT}/batch1/_output/predictions.csv")
    job = _wait_for_job(client, name)
    assert job["status"] == "Completed", job
    # The answer itself and the marker are not inputs.
    assert job["progress"]["files"]["succeeded"] == 3
    output = drop.download_blob(f"{ENDPOINT}/batch1/_output/predictions.csv").readall()
    assert len(output.decode().splitlines()) == 3
    # Neither the answer nor the output fires the drop again.
    time.sleep(2)
    assert _drop_jobs(client) == before | {name}
    assert not drop.get_blob_client(f"{ENDPOINT}/batch1/_error.json").exists()


def test_a_marker_may_name_the_output(client, drop, storage_connection):
    drop.upload_blob(f"{ENDPOINT}/named/a.bin", b"a", overwrite=True)
    results = f"results/{uuid.uuid4().hex[:8]}"
    options = {"output_path": f"azureml://datastores/workspaceblobstore/paths/{results}",
               "output_file_name": "scores.txt"}
    drop.upload_blob(f"{ENDPOINT}/named/_start", json.dumps(options).encode(), overwrite=True)
    answer = _read_json(drop, f"{ENDPOINT}/named/_job.json")
    assert (answer["output"]["container"], answer["output"]["path"]) == (
        DATA_CONTAINER, f"{results}/scores.txt")
    assert _wait_for_job(client, answer["name"])["status"] == "Completed"
    data = BlobServiceClient.from_connection_string(storage_connection).get_container_client(
        DATA_CONTAINER)
    assert data.get_blob_client(f"{results}/scores.txt").exists()


def test_a_marker_cannot_send_the_output_elsewhere_in_the_drop_container(client, drop):
    before = _drop_jobs(client)
    drop.upload_blob(f"{ENDPOINT}/elsewhere/a.bin", b"a", overwrite=True)
    account = drop.url.rsplit("/", 1)[0]
    for target in (f"{DROP_CONTAINER}/results/elsewhere", f"{DROP_CONTAINER}/{ENDPOINT}/other",
                   "batchfn-state/x"):
        drop.upload_blob(f"{ENDPOINT}/elsewhere/_start",
                         json.dumps({"output_path": f"{account}/{target}"}).encode(),
                         overwrite=True)
        answer = _read_json(drop, f"{ENDPOINT}/elsewhere/_error.json")
        assert answer["error"]["code"] == "location_not_allowed", answer
        drop.delete_blob(f"{ENDPOINT}/elsewhere/_error.json")
    assert _drop_jobs(client) == before


@pytest.mark.parametrize(("marker", "content", "code"), [
    ("no-such-endpoint/batch/_start", b"", "endpoint_not_found"),
    (f"{ENDPOINT}/broken/_start", b"{not json", "invalid_marker"),
    (f"{ENDPOINT}/unknown-option/_start", b'{"colour": "blue"}', "invalid_marker"),
    (f"{ENDPOINT}/bad-setting/_start", b'{"mini_batch_size": 0}', "invalid_setting"),
    (f"{ENDPOINT}/_start", b"", "invalid_marker_location"),
    (f"{ENDPOINT}/huge/_start", b" " * (MAX_MARKER_BYTES + 1), "marker_too_large"),
])
def test_a_refused_drop_answers_why_and_starts_nothing(client, drop, marker, content, code):
    before = _drop_jobs(client)
    folder = marker.rpartition("/")[0]
    drop.upload_blob(f"{folder}/file.bin", b"x", overwrite=True)
    drop.upload_blob(marker, content, overwrite=True)
    answer = _read_json(drop, f"{folder}/_error.json")
    assert answer["error"]["code"] == code, answer
    assert answer["error"]["message"]
    assert not drop.get_blob_client(f"{folder}/_job.json").exists()
    assert _drop_jobs(client) == before


def test_files_without_a_marker_start_nothing(client, drop):
    before = _drop_jobs(client)
    drop.upload_blob(f"{ENDPOINT}/loose/file.bin", b"x")
    time.sleep(3)  # several blob scans
    assert _drop_jobs(client) == before
    assert not drop.get_blob_client(f"{ENDPOINT}/loose/_error.json").exists()
