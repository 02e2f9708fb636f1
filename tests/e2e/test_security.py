"""The attacks of an API caller with one function key, against the app on a real devhost:
each is refused with a JSON 4xx and changes nothing (or finds nothing).

One devhost serves the module, with an operator datastore configured
(BATCHFN_DATASTORES), and one echo deployment to invoke.
"""

from __future__ import annotations

import http.client
import json
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from batchfn.client import ApiError, BatchfnClient
from devhost.keys import SECRETS_BLOB, SECRETS_CONTAINER
from devhost.testing import running_devhost
from shared.control.datastores import DATASTORES_SETTING
from tests.conftest import REPO, deploy_test_script

ENDPOINT = "security-e2e"
EXTRA_CONTAINER = "operator-images"


@pytest.fixture(scope="module")
def host(storage_connection, scratch):
    env = {"BATCHFN_WORK_DIR": str(scratch / "work"),
           DATASTORES_SETTING: f"images={EXTRA_CONTAINER}"}
    with running_devhost("function_app", script_root=REPO, connection_string=storage_connection,
                         env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(host, scratch) -> BatchfnClient:
    client = BatchfnClient(url=host.url, key=host.key)
    client.create_endpoint(document={"name": ENDPOINT})
    deploy_test_script(client, scratch, ENDPOINT, "echo", "echo.py", {"mini_batch_size": 2},
                       set_default=True)
    return client


@pytest.fixture(scope="module")
def blobs(storage_connection) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(storage_connection)


def call(host, method: str, path: str, *, body: bytes | None = None, key: str | None = "",
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One request with the function key (or `key`); (status, JSON body or {})."""
    sent = {"x-functions-key": host.key if key == "" else key} if key is not None else {}
    reply = requests.request(method, f"{host.url}{path}", data=body,
                             headers={**sent, **(headers or {})}, timeout=60)
    try:
        return reply.status_code, reply.json()
    except ValueError:
        return reply.status_code, {}


def raw_get(host, path: str) -> tuple[int, dict]:
    """A GET whose path goes out exactly as written (no client-side `..` clean-up)."""
    parts = urlsplit(host.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("GET", path, headers={"x-functions-key": host.key})
    reply = connection.getresponse()
    body = reply.read()
    connection.close()
    return reply.status, json.loads(body) if body.startswith(b"{") else {}


def assert_json_error(status: int, body: dict, expected: int | tuple[int, ...]) -> None:
    allowed = expected if isinstance(expected, tuple) else (expected,)
    assert status in allowed, (status, body)
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]


def job_names(client: BatchfnClient) -> set[str]:
    return {row["name"] for row in client.list_jobs()}


def test_jobs_reach_neither_the_hosts_secrets_nor_anything_else_of_batchfn(host, client,
                                                                          blobs):
    account = blobs.url.rstrip("/")
    assert blobs.get_blob_client(SECRETS_CONTAINER, SECRETS_BLOB).exists()
    before = job_names(client)
    forbidden = ["azure-webjobs-secrets", "azure-webjobs-secrets/devhost",
                 "%61zure-webjobs-secrets", "AZURE-WEBJOBS-SECRETS", "azure-webjobs-secrets.",
                 "batchfn-data/../azure-webjobs-secrets", "batchfn-data/%2e%2e/azure-webjobs-"
                 "secrets", "azure-webjobs-hosts", "batchfn-leases", "batchfn-largemessages",
                 "batchfn-registry", "batchfn-assets", "batchfn-state", "batchfn-jobs",
                 "batchfn-drop/security-e2e/x"]
    for target in forbidden:
        for body in ({"input": f"{account}/{target}", "include_subfolders": True},
                     {"input": "azureml://datastores/workspaceblobstore/paths/in",
                      "output_path": f"{account}/{target}"}):
            status, answer = call(host, "POST", f"/api/endpoints/{ENDPOINT}/jobs",
                                  body=json.dumps(body).encode())
            assert_json_error(status, answer, 400)
            assert answer["error"]["code"] in ("location_not_allowed", "invalid_location"), answer
    assert job_names(client) == before


def test_an_operator_datastore_is_listed_and_usable(host, client, blobs):
    status, listing = call(host, "GET", "/api/datastores")
    assert status == 200
    assert [(d["name"], d["container"]) for d in listing["value"]] == [
        ("workspaceblobstore", "batchfn-data"), ("images", EXTRA_CONTAINER)]
    container = blobs.get_container_client(EXTRA_CONTAINER)
    if not container.exists():
        container.create_container()
    for name in ("a.bin", "b.bin", "c.bin"):
        container.upload_blob(f"in/{name}", b"xy", overwrite=True)
    job = client.invoke(ENDPOINT, "azureml://datastores/images/paths/in",
                        output_path="azureml://datastores/images/paths/scored-by-batchfn",
                        job_name=f"operator-store-{uuid.uuid4().hex[:8]}")
    final = client.wait_job(job["name"], timeout=120)
    assert final["status"] == "Completed", final
    lines = container.download_blob("scored-by-batchfn/predictions.csv").readall().splitlines()
    assert len(lines) == 3


def test_the_durable_http_api_needs_the_master_or_system_key(host, client):
    state = json.loads(host.state_path.read_text())
    for method, path in [("GET", "/runtime/webhooks/durabletask/instances"),
                         ("GET", "/runtime/webhooks/durabletask/instances/x"),
                         ("POST", "/runtime/webhooks/durabletask/instances/x/terminate"),
                         ("DELETE", "/runtime/webhooks/durabletask/instances/x"),
                         ("DELETE", "/runtime/webhooks/durabletask/instances/?createdTimeFrom="
                                    "2000-01-01T00:00:00Z")]:
        for key in (None, host.key):
            status, answer = call(host, method, path, key=key)
            assert_json_error(status, answer, 401)
    status, listing = call(host, "GET", "/runtime/webhooks/durabletask/instances",
                           key=state["master_key"])
    assert status == 200 and isinstance(listing, list)


@pytest.mark.parametrize("body, field", [
    (b'{"input": "azureml://datastores/workspaceblobstore/paths/x", "mini_batch_size": 1e999}',
     "mini_batch_size"),
    (b'{"input": "azureml://datastores/workspaceblobstore/paths/x", "mini_batch_size": NaN}',
     None),
    (b'{"input": "azureml://datastores/workspaceblobstore/paths/x", "timeout": "inf"}',
     "retry_settings.timeout"),
    (b'{"input": "azureml://datastores/workspaceblobstore/paths/x", "timeout": 86401}',
     "retry_settings.timeout"),
    (b'{"input": "azureml://datastores/workspaceblobstore/paths/x", "instance_count": 1e6}',
     "instance_count"),
    (b'{"input": "azureml://datastores/workspaceblobstore/paths/x", "error_threshold": '
     b'100000000000000000000}', "error_threshold"),
    (b'{"input": "azureml://datastores/workspaceblobstore/paths/x", "settings": '
     b'{"retry_settings": {"max_retries": 1000}}}', "retry_settings.max_retries"),
    (b'{"input": "azureml://datastores/workspaceblobstore/paths/x", "output_file_name": '
     b'"../escape.csv"}', "output_file_name"),
    (b'{"input": "azureml://datastores/workspaceblobstore/paths/x", "output_file_name": '
     b'"a\\"; filename=evil.exe"}', "output_file_name"),
    (b'{"input": "azureml://datastores/workspaceblobstore/paths/x", "output_file_name": '
     b'"line\\nbreak.csv"}', "output_file_name"),
    (b"[" * 5000 + b"]" * 5000, None),
    (b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}", None),
    (b'{"input": "x", "name": "' + b"n" * 101 + b'"}', None),
    (b"\xff\xfe not utf-8", None),
])
def test_bad_numbers_names_and_bodies_are_json_400s(host, client, body, field):
    before = job_names(client)
    status, answer = call(host, "POST", f"/api/endpoints/{ENDPOINT}/jobs", body=body)
    assert_json_error(status, answer, 400)
    if field is not None:
        assert answer["error"]["details"]["setting"] == field
    assert job_names(client) == before


def test_oversized_bodies_are_413(host):
    body = json.dumps({"input": "x" * (64 * 1024)}).encode()
    status, answer = call(host, "POST", f"/api/endpoints/{ENDPOINT}/jobs", body=body)
    assert_json_error(status, answer, 413)


@pytest.mark.parametrize("path", [
    "/api/jobs/..", "/api/jobs/%2e%2e", "/api/jobs/..%2f..%2fbatchfn-registry",
    "/api/jobs/a%00b", "/api/jobs/" + "j" * 101, "/api/jobs/x/logs/..%2f..%2fjob.json",
    "/api/jobs/x/outputs/..", "/api/endpoints/..", "/api/endpoints/a%2e%2e",
    "/api/assets/models/..%2fx/versions", "/api/assets/models/m/versions/..",
    "/api/assets/models/m/versions/99999999999999999999",
    "/api/endpoints/" + "e" * 40 + "/deployments",
    "/api/jobs?status=" + "s" * 300, "/api/jobs/x/errors?top=1e999",
    "/api/jobs/x/errors?top=" + "9" * 5000, "/api/jobs/x/logs/00000001/attempt-1.log?tail=-1",
])
def test_names_and_ids_in_routes_are_bounded(host, path):
    status, answer = raw_get(host, path)
    assert_json_error(status, answer, (400, 404))


def test_environment_variables_and_tags_are_bounded(host, client):
    for environment in ({"A=B": "1"}, {"AZUREML_MODEL_DIR": "/elsewhere"},
                        {"BATCHFN_ROLE": "control"}, {f"V{i}": "x" * 32_000 for i in range(3)}):
        status, answer = call(host, "PATCH", f"/api/endpoints/{ENDPOINT}/deployments/echo",
                              body=json.dumps({"environment_variables": environment}).encode())
        assert_json_error(status, answer, 400)
    status, answer = call(host, "PATCH", f"/api/endpoints/{ENDPOINT}",
                          body=json.dumps({"tags": {f"t{i}": "v" for i in range(101)}}).encode())
    assert_json_error(status, answer, 400)
    assert client.get_deployment(ENDPOINT, "echo")["environment_variables"] == {}


def test_logs_carry_the_route_never_the_query_string_or_a_key(host, client):
    state = json.loads(host.state_path.read_text())
    call(host, "GET", f"/api/jobs/no-such-job?code={host.key}", key=None)
    call(host, "GET", f"/api/jobs/no-such-job/errors?code={state['master_key']}&top=x",
         key=None)
    call(host, "GET", "/runtime/webhooks/durabletask/instances?code=" + state["master_key"],
         key=None)
    logs = host.logs()
    assert "/api/jobs/no-such-job" in logs
    assert host.key not in logs and state["master_key"] not in logs and "code=" not in logs


def test_a_refused_request_is_never_answered_by_a_deployment_of_another_endpoint(host):
    # The deployment header is a name like any other: bounded and checked.
    status, answer = call(host, "POST", f"/api/endpoints/{ENDPOINT}/jobs",
                          body=b'{"input": "azureml://datastores/workspaceblobstore/paths/x"}',
                          headers={"azureml-model-deployment": "../../other"})
    assert_json_error(status, answer, 400)


def test_api_errors_are_apierror_for_the_client(client):
    with pytest.raises(ApiError) as refused:
        client.invoke(ENDPOINT, "azureml://datastores/nope/paths/x")
    assert refused.value.status == 400 and refused.value.code == "unknown_datastore"
