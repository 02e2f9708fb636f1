"""HTTP triggers served by a real devhost subprocess over a real Azurite."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from devhost.testing import RunningDevHost, running_devhost

APP = Path(__file__).parent / "apps" / "http_app"


def call(url: str, *, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers, body) for any status."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {"OUT_QUEUE": f"out{suffix}", "OUT_CONTAINER": f"out{suffix}"}


@pytest.fixture(scope="module")
def host(storage_connection: str, names: dict[str, str]) -> Iterator[RunningDevHost]:
    with running_devhost(script_root=APP, connection_string=storage_connection,
                         env=names) as running:
        yield running


def test_anonymous_route_with_query(host: RunningDevHost) -> None:
    status, headers, body = call(f"{host.url}/api/hello?name=ada")
    assert (status, body) == (200, b"hello ada")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_function_key_by_header_or_code(host: RunningDevHost) -> None:
    url = f"{host.url}/api/items/42/a/b/c?x=1"
    status, _, body = call(url, method="POST", body=b"payload",
                           headers={"x-functions-key": host.key, "x-test": "t"})
    assert status == 200
    echoed = json.loads(body)
    assert echoed == {"route": {"id": "42", "rest": "a/b/c"}, "method": "POST",
                      "params": {"x": "1"}, "body": "payload", "header": "t"}
    status, _, body = call(f"{host.url}/api/items/7?code={host.key}")
    assert status == 200
    assert json.loads(body)["route"] == {"id": "7"}


def test_missing_or_wrong_key_is_401(host: RunningDevHost) -> None:
    status, _, body = call(f"{host.url}/api/items/42")
    assert status == 401
    assert json.loads(body)["error"]["code"] == "Unauthorized"
    assert call(f"{host.url}/api/items/42", headers={"x-functions-key": "nope"})[0] == 401


def test_admin_level_needs_the_master_key(host: RunningDevHost) -> None:
    assert call(f"{host.url}/api/admin?code={host.key}")[0] == 401
    state = json.loads((host.state_path).read_text())
    assert call(f"{host.url}/api/admin?code={state['master_key']}")[0] == 200


def test_bodies_devhost_cannot_parse_still_reach_the_function(host: RunningDevHost) -> None:
    # Binding data comes from a JSON body's top level: a body too deep to parse has none.
    deep = b"[" * 5000 + b"]" * 5000
    status, _, body = call(f"{host.url}/api/items/1/x?code={host.key}", method="POST",
                           body=deep)
    assert status == 200 and json.loads(body)["body"] == deep.decode()
    status, headers, body = call(f"{host.url}/api/items/1/x?code={host.key}", method="POST",
                                 body=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert 400 <= status < 500 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"]["code"]


def test_logs_name_the_path_never_the_query_string_or_key(host: RunningDevHost) -> None:
    secret = "do-not-log-" + uuid.uuid4().hex
    assert call(f"{host.url}/api/boom?code={secret}&x={secret}")[0] == 500
    assert call(f"{host.url}/api/items/1/y?code={host.key}")[0] == 200
    logs = host.logs()
    assert "/api/boom" in logs and secret not in logs and host.key not in logs


def test_state_file_is_private(host: RunningDevHost) -> None:
    assert host.state_path.stat().st_mode & 0o777 == 0o600
    assert host.state_path.parent.stat().st_mode & 0o777 == 0o700


def test_unknown_route_is_404_and_wrong_method_405(host: RunningDevHost) -> None:
    status, _, body = call(f"{host.url}/api/missing")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "NotFound"
    status, headers, body = call(f"{host.url}/api/hello", method="DELETE")
    assert status == 405
    assert headers["Allow"] == "GET"
    assert json.loads(body)["error"]["details"] == {"allowed": ["GET"]}


def test_route_constraint_and_precedence(host: RunningDevHost) -> None:
    assert call(f"{host.url}/api/items/abc?code={host.key}")[0] == 404
    status, _, body = call(f"{host.url}/api/items/special")
    assert (status, body) == (200, b"special")
    assert call(f"{host.url}/api/opt")[2] == b"<none>"
    assert call(f"{host.url}/api/opt/zed")[2] == b"zed"


def test_unhandled_exception_is_a_json_500(host: RunningDevHost) -> None:
    status, _, body = call(f"{host.url}/api/boom")
    assert status == 500
    error = json.loads(body)["error"]
    assert error["code"] == "FunctionInvocationFailed"
    assert error["details"]["type"] == "RuntimeError"
    assert f"id={error['details']['invocation_id']} outcome=Failed" in host.logs()


def test_none_is_204_and_async_function_gets_context(host: RunningDevHost) -> None:
    assert call(f"{host.url}/api/nothing")[0] == 204
    status, headers, body = call(f"{host.url}/api/ctx")
    assert (status, headers["x-custom"]) == (202, "yes")
    document = json.loads(body)
    assert document["name"] == "ctx"
    assert f"function=ctx id={document['invocation_id']} outcome=Succeeded" in host.logs()


def test_queue_and_blob_outputs(host: RunningDevHost, storage_connection: str,
                                names: dict[str, str]) -> None:
    status, _, body = call(f"{host.url}/api/out/17", method="POST",
                           body=b'{"kind": "note"}',
                           headers={"Content-Type": "application/json"})
    assert (status, body) == (201, b"written")
    queue = QueueClient.from_connection_string(storage_connection, names["OUT_QUEUE"])
    [message] = list(queue.receive_messages())
    assert base64.b64decode(message.content) == b"queued 17"
    blob = BlobServiceClient.from_connection_string(storage_connection).get_blob_client(
        names["OUT_CONTAINER"], "17-note.txt")
    assert blob.download_blob().readall() == b'{"kind": "note"}'


def test_unresolvable_output_path_fails_without_writing(host: RunningDevHost,
                                                        storage_connection: str,
                                                        names: dict[str, str]) -> None:
    # No JSON body: {kind} has no value, so the invocation fails and nothing is queued.
    queue = QueueClient.from_connection_string(storage_connection, names["OUT_QUEUE"])
    before = queue.get_queue_properties().approximate_message_count
    status, _, body = call(f"{host.url}/api/out/18", method="POST", body=b"raw")
    assert status == 500
    assert queue.get_queue_properties().approximate_message_count == before


def test_state_file_and_key_survive_a_restart(host: RunningDevHost) -> None:
    key = host.key
    host.stop()
    assert not (host.state_path).exists()
    host.start()
    assert host.key == key
    assert call(f"{host.url}/api/items/1?code={key}")[0] == 200


def test_blob_input_by_route_parameter(host: RunningDevHost, storage_connection: str,
                                       names: dict[str, str]) -> None:
    service = BlobServiceClient.from_connection_string(storage_connection)
    container = service.get_container_client(names["OUT_CONTAINER"])
    if not container.exists():
        container.create_container()
    container.upload_blob("input.bin", b"\x00\x01data", overwrite=True)
    status, headers, body = call(f"{host.url}/api/read/input.bin")
    assert (status, body) == (200, b"\x00\x01data")
    assert headers["Content-Type"] == "application/octet-stream"
    assert call(f"{host.url}/api/read/absent.bin")[:3:2] == (404, b"missing")
