"""Blob drop end to end: a `_start` marker dropped into batchfn-drop starts one job."""

from __future__ import annotations

import time

import pytest
from azure.storage.blob import BlobServiceClient

from batchfn.client import BatchfnClient
from devhost.testing import running_devhost
from shared.jobs.drop import DROP_CONTAINER, drop_job_name
from tests.conftest import REPO

ENDPOINT = "drop-e2e"


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
def drop(storage_connection):
    container = BlobServiceClient.from_connection_string(
        storage_connection).get_container_client(DROP_CONTAINER)
    if not container.exists():
        container.create_container()
    return container


def _wait_for_job(client: BatchfnClient, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = {job["name"]: job for job in client.list_jobs(ENDPOINT)}
        job = jobs.get(name)
        if job and job["status"] in ("Completed", "Failed", "Canceled"):
            return client.get_job(name)
        time.sleep(0.3)
    raise AssertionError(f"job {name} did not finish within {timeout}s")


def test_marker_starts_one_job_over_its_folder(client, drop):
    for index in range(3):
        drop.upload_blob(f"{ENDPOINT}/batch1/file{index}.bin", b"x" * (index + 1))
    marker = drop.upload_blob(f"{ENDPOINT}/batch1/_start", b"")
    name = drop_job_name(f"{ENDPOINT}/batch1/_start", marker.get_blob_properties().etag)
    job = _wait_for_job(client, name)
    assert job["status"] == "Completed", job
    assert job["progress"]["files"]["succeeded"] == 3
    # The marker fires once: no second job for the same drop appears later.
    time.sleep(2)
    drops = [j for j in client.list_jobs(ENDPOINT) if j["name"].startswith("drop-")]
    assert [j["name"] for j in drops] == [name]


def _drop_jobs(client: BatchfnClient) -> set[str]:
    return {job["name"] for job in client.list_jobs(ENDPOINT) if job["name"].startswith("drop-")}


def test_files_without_a_marker_start_nothing_and_a_bad_marker_is_refused(client, drop):
    before = _drop_jobs(client)
    drop.upload_blob(f"{ENDPOINT}/loose/file.bin", b"x")
    drop.upload_blob(f"{ENDPOINT}/broken/file.bin", b"x")
    drop.upload_blob(f"{ENDPOINT}/broken/_start", b"{not json")
    time.sleep(3)  # several blob scans
    assert _drop_jobs(client) == before
