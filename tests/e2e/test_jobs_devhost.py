"""Jobs end to end: devhost + Azurite + the real scoring runtime and test scoring scripts."""

from __future__ import annotations

import pytest

from batchfn.client import ApiError, BatchfnClient
from devhost.testing import running_devhost
from tests.conftest import REPO

SCRIPTS = REPO / "tests" / "scoring_scripts"


@pytest.fixture(scope="module")
def host(storage_connection, tmp_path_factory):
    work = tmp_path_factory.mktemp("jobs-e2e")
    with running_devhost("function_app", script_root=REPO,
                         connection_string=storage_connection,
                         env={"BATCHFN_WORK_DIR": str(work / "work")}) as running:
        yield running


@pytest.fixture(scope="module")
def client(host, tmp_path_factory):
    client = BatchfnClient(url=host.url, key=host.key)
    model = tmp_path_factory.mktemp("model") / "model"
    model.mkdir()
    (model / "weights.txt").write_text("1")
    client.create_endpoint(document={"name": "jobs-e2e"})
    client.create_deployment(document={
        "name": "echo", "endpoint_name": "jobs-e2e", "model": {"path": str(model)},
        "code_configuration": {"code": str(SCRIPTS), "scoring_script": "echo.py"},
        "settings": {"mini_batch_size": 3},
    }, set_default=True)
    client.create_deployment(document={
        "name": "fails", "endpoint_name": "jobs-e2e", "model": {"path": str(model)},
        "code_configuration": {"code": str(SCRIPTS), "scoring_script": "always_fails.py"},
        "settings": {"mini_batch_size": 2, "retry_settings": {"max_retries": 1}},
    })
    return client


def _folder(tmp_path, count: int):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(count):
        (folder / f"img{i:02d}.bin").write_bytes(b"x" * (i + 1))
    return folder


def test_happy_path_local_folder_rows_in_order(client, tmp_path):
    job = client.invoke("jobs-e2e", _folder(tmp_path, 8))
    assert job["status"] == "NotStarted" and job["status_url"].endswith(job["name"])
    final = client.wait_job(job["name"], timeout=90)
    assert final["status"] == "Completed", final
    assert final["progress"]["files"] == {"total": 8, "succeeded": 8, "failed": 0, "pending": 0}
    path = client.download_job_output(job["name"], "score", tmp_path / "dl")
    assert path.read_text() == "".join(f"img{i:02d}.bin {i + 1}\n" for i in range(8))
    listed = client.list_jobs("jobs-e2e", "echo")
    assert job["name"] in [row["name"] for row in listed]


def test_permanent_failure_threshold_and_errors_report(client, tmp_path):
    job = client.invoke("jobs-e2e", _folder(tmp_path, 4), deployment_name="fails",
                        settings={"error_threshold": 1})
    final = client.wait_job(job["name"], timeout=90)
    assert final["status"] == "Failed" and "error_threshold" in final["reason"]
    errors = client.job_errors(job["name"])
    assert errors and errors[0]["attempts"] == 2 and "ValueError" in errors[0]["traceback"]


def test_bad_invokes_are_4xx_and_create_nothing(client, host):
    before = len(client.list_jobs())
    for endpoint, body, status in [
        ("nope", {"input": "azureml://datastores/workspaceblobstore/paths/x"}, 404),
        ("jobs-e2e", {"input": "azureml://datastores/workspaceblobstore/paths/x",
                      "deployment_name": "nope"}, 404),
        ("jobs-e2e", {"input": "https://example.com/container/x"}, 400),
        ("jobs-e2e", {"input": "azureml://datastores/workspaceblobstore/paths/x",
                      "mini_batch_size": -1}, 400),
    ]:
        with pytest.raises(ApiError) as caught:
            client.request("POST", f"endpoints/{endpoint}/jobs", body)
        assert caught.value.status == status
    assert len(client.list_jobs()) == before


def test_idempotent_invoke_and_cancel(client, tmp_path):
    uri = "azureml://datastores/workspaceblobstore/paths/none-such-folder"
    first = client.invoke("jobs-e2e", uri, job_name="same-name-job")
    again = client.invoke("jobs-e2e", uri, job_name="same-name-job")
    assert again["name"] == first["name"]
    with pytest.raises(ApiError) as caught:
        client.invoke("jobs-e2e", uri, job_name="same-name-job", settings={"mini_batch_size": 7})
    assert caught.value.status == 409
    assert client.wait_job(first["name"], timeout=60)["status"] == "Completed"
