"""The control plane through a real devhost over HTTP (Python client and raw requests)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from batchfn.client import ApiError, BatchfnClient
from devhost.testing import running_devhost
from tests.conftest import ensure_compute

REPO = Path(__file__).resolve().parents[2]
SCORE = (
    "import os\n\n"
    "def init():\n    global model\n    model = os.environ['AZUREML_MODEL_DIR']\n\n"
    "def run(mini_batch):\n    return [os.path.basename(p) for p in mini_batch]\n"
)


@pytest.fixture(scope="module")
def host(storage_connection: str) -> Iterator:
    with running_devhost("function_app", script_root=REPO,
                         connection_string=storage_connection) as running:
        yield running


COMPUTE = "cp-pool"  # the compute this module's deployments name


@pytest.fixture
def client(host) -> BatchfnClient:
    client = BatchfnClient(host.url, host.key)
    ensure_compute(client, COMPUTE)
    return client


def call(host, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, key: bool = True) -> tuple[int, dict]:
    request = urllib.request.Request(f"{host.url}/api/{path}", data=body, method=method)
    if key:
        request.add_header("x-functions-key", host.key)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        return exc.code, json.loads(payload) if payload.strip() else {}


def project(base: Path, endpoint: str, name: str = "blue", script: str = SCORE,
            extra: dict | None = None) -> Path:
    """An Azure ML style deployment folder: deployment.yml, model/, code/score.py."""
    (base / "model").mkdir(parents=True, exist_ok=True)
    (base / "model" / "weights.bin").write_bytes(b"\x00weights")
    (base / "code").mkdir(exist_ok=True)
    (base / "code" / "score.py").write_text(script)
    document = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json",
        "name": name, "endpoint_name": endpoint, "type": "model",
        "model": {"name": f"{endpoint}-clf", "path": "model"},
        "code_configuration": {"code": "code", "scoring_script": "score.py"},
        "environment": {"name": "env", "image": "mcr.microsoft.com/azureml/x:latest"},
        "compute": f"azureml:{COMPUTE}",
        "resources": {"instance_count": 2},
        "settings": {"mini_batch_size": 4, "retry_settings": {"max_retries": 1, "timeout": 12}},
        **(extra or {}),
    }
    path = base / "deployment.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_lifecycle(client, tmp_path, unique_name):
    endpoint = client.create_endpoint(document={
        "$schema": "https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json",
        "name": unique_name, "description": "digits", "tags": {"type": "dl"},
        "auth_mode": "aad_token"})
    assert [item["field"] for item in endpoint["ignored"]] == ["$schema", "auth_mode"]
    assert "function keys" in endpoint["ignored"][1]["reason"]
    assert endpoint["defaults"] == {"deployment_name": None}
    assert unique_name in [e["name"] for e in client.list_endpoints()]

    blue = client.create_deployment(project(tmp_path / "blue", unique_name, "blue"),
                                    set_default=True)
    assert [item["field"] for item in blue["ignored"]] == ["$schema", "environment.image"]
    assert blue["compute"] == COMPUTE
    assert blue["settings"]["mini_batch_size"] == 4
    assert blue["settings"]["instance_count"] == 2
    assert blue["settings"]["retry_settings"] == {"max_retries": 1, "timeout": 12.0}
    assert blue["settings"]["output_file_name"] == "predictions.csv"  # default kept
    assert blue["model"]["name"] == f"{unique_name}-clf" and blue["model"]["version"] == "1"
    assert blue["model"]["root"] == "model"

    green = client.create_deployment(project(tmp_path / "green", unique_name, "green"))
    # Same model folder content: the version is reused, not uploaded again.
    assert green["model"]["version"] == "1"
    assert client.get_endpoint(unique_name)["defaults"]["deployment_name"] == "blue"
    assert [d["name"] for d in client.list_deployments(unique_name)] == ["blue", "green"]

    updated = client.update_endpoint(unique_name, {"defaults": {"deployment_name": "green"}})
    assert updated["defaults"]["deployment_name"] == "green"
    changed = client.update_deployment(unique_name, "blue",
                                       {"settings": {"mini_batch_size": 20}})
    assert changed["settings"]["mini_batch_size"] == 20
    assert changed["model"] == blue["model"]  # pinned at create

    with pytest.raises(ApiError) as refused:
        client.delete_deployment(unique_name, "green")
    assert refused.value.status == 409 and "switch the default first" in refused.value.message
    client.delete_deployment(unique_name, "green", force=True)
    assert client.get_endpoint(unique_name)["defaults"]["deployment_name"] is None

    deleted = client.delete_endpoint(unique_name)
    assert deleted == {"deleted": {"endpoint": unique_name, "deployments": ["blue"]}}
    with pytest.raises(ApiError) as gone:
        client.get_endpoint(unique_name)
    assert gone.value.status == 404 and gone.value.code == "endpoint_not_found"
    # The pinned model version outlives its deployments.
    assert client.get_asset("model", f"{unique_name}-clf", "1")["version"] == "1"


def test_model_by_reference_and_changed_content(client, tmp_path, unique_name):
    client.create_endpoint(name=unique_name)
    client.create_deployment(project(tmp_path / "a", unique_name, "blue"))
    changed = project(tmp_path / "b", unique_name, "green")
    (changed.parent / "model" / "weights.bin").write_bytes(b"new weights")
    assert client.create_deployment(changed)["model"]["version"] == "2"
    by_ref = project(tmp_path / "c", unique_name, "red",
                     extra={"model": f"azureml:{unique_name}-clf:1"})
    assert client.create_deployment(by_ref)["model"]["version"] == "1"
    latest = project(tmp_path / "d", unique_name, "gold",
                     extra={"model": f"azureml:{unique_name}-clf@latest"})
    assert client.create_deployment(latest)["model"]["version"] == "2"
    versions = client.list_asset_versions("model", f"{unique_name}-clf")
    assert [v["version"] for v in versions] == ["1", "2"]


def _deployment_body(client, tmp_path, endpoint, **overrides) -> dict:
    model = client.upload_asset("model", f"{endpoint}-m", _folder(tmp_path, "model", "w"))
    code = client.upload_asset("code", f"{endpoint}-c", _folder(tmp_path, "code", SCORE,
                                                                  "score.py"))
    body = {"model": f"azureml:{model['name']}:{model['version']}",
            "code_configuration": {"code": f"azureml:{code['name']}:{code['version']}",
                                   "scoring_script": "score.py"}}
    body.update(overrides)
    return body


def _folder(base: Path, name: str, text: str, file: str = "w.bin") -> Path:
    folder = base / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file).write_text(text)
    return folder


@pytest.mark.parametrize(("overrides", "status", "code"), [
    ({"settings": {"mini_batch_size": 0}}, 400, "invalid_setting"),
    ({"settings": {"retry_settings": {"timeout": -5}}}, 400, "invalid_setting"),
    ({"settings": {"output_action": "overwrite"}}, 400, "invalid_setting"),
    ({"mini_batch_size": "many"}, 400, "invalid_setting"),
    ({"model": "azureml:no-such-model:3"}, 404, "asset_not_found"),
    ({"model": {"path": "./model"}}, 400, "local_path_not_allowed"),
    ({"code_configuration": {"code": "azureml:x:1"}}, 400, "invalid_deployment"),
    ({"type": "pipeline"}, 400, "unsupported_deployment_type"),
])
def test_bad_deployment_changes_nothing(host, client, tmp_path, unique_name, overrides,
                                        status, code):
    client.create_endpoint(name=unique_name)
    body = _deployment_body(client, tmp_path, unique_name, **overrides)
    got, answer = call(host, "PUT", f"endpoints/{unique_name}/deployments/blue",
                       json.dumps(body).encode())
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert answer["error"]["message"]
    assert client.list_deployments(unique_name) == []
    assert client.get_endpoint(unique_name)["defaults"]["deployment_name"] is None


@pytest.mark.parametrize(("script", "code", "fragment"), [
    ("def init():\n    pass\n\ndef run(batch)\n    return batch\n", "script_syntax_error",
     "line 4"),
    ("def init():\n    pass\n", "script_missing_entry_points", "missing: run"),
    ("import torch\n\ndef run(batch):\n    return batch\n", "script_missing_entry_points",
     "missing: init"),
])
def test_broken_scoring_script_is_refused_at_create(client, tmp_path, unique_name, script,
                                                    code, fragment):
    client.create_endpoint(name=unique_name)
    with pytest.raises(ApiError) as refused:
        client.create_deployment(project(tmp_path, unique_name, script=script))
    assert (refused.value.status, refused.value.code) == (422, code)
    assert fragment in refused.value.message
    # Checked before any upload: no asset was registered either.
    with pytest.raises(ApiError) as no_asset:
        client.get_asset("model", f"{unique_name}-clf")
    assert no_asset.value.status == 404
    # The API checks too, for clients that skip the local check.
    code_asset = client.upload_asset("code", f"{unique_name}-c",
                                     _folder(tmp_path, "c2", script, "score.py"))
    model = client.upload_asset("model", f"{unique_name}-m", _folder(tmp_path, "m2", "w"))
    body = {"model": f"azureml:{model['name']}:1",
            "code_configuration": {"code": f"azureml:{code_asset['name']}:1",
                                   "scoring_script": "score.py"}}
    with pytest.raises(ApiError) as server_side:
        client.request("PUT", f"endpoints/{unique_name}/deployments/blue", body)
    assert (server_side.value.status, server_side.value.code) == (422, code)
    assert client.list_deployments(unique_name) == []


def test_missing_folders_are_refused_before_upload(client, tmp_path, unique_name):
    client.create_endpoint(name=unique_name)
    path = project(tmp_path, unique_name, extra={"model": {"path": "no-such-dir"}})
    with pytest.raises(ApiError) as refused:
        client.create_deployment(path)
    assert (refused.value.status, refused.value.code) == (400, "folder_not_found")
    assert client.list_deployments(unique_name) == []


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), [
    ("PUT", "endpoints/{e}", b"{not json", 400, "invalid_json"),
    ("PUT", "endpoints/{e}", b"[1, 2]", 400, "invalid_json"),
    ("PUT", "endpoints/ab", b"{}", 400, "invalid_name"),
    ("PUT", "endpoints/1abc", b"{}", 400, "invalid_name"),
    ("PUT", "endpoints/{e}", b'{"tags": "x"}', 400, "invalid_document"),
    ("PUT", "endpoints/{e}", b'{"defaults": {"deployment_name": "blue"}}', 400,
     "unknown_deployment"),
    ("PUT", "endpoints/{e}", b"{" + b'"description": "' + b"x" * 2_000_000 + b'"}', 413,
     "payload_too_large"),
    ("GET", "endpoints/a..b", None, 400, "invalid_name"),
    ("GET", "endpoints/nope-endpoint", None, 404, "endpoint_not_found"),
    ("GET", "endpoints/nope-endpoint/deployments/blue", None, 404, "endpoint_not_found"),
    ("PATCH", "endpoints/nope-endpoint", b'{"description": "x"}', 404, "endpoint_not_found"),
    ("DELETE", "endpoints/nope-endpoint", None, 404, "endpoint_not_found"),
    ("POST", "assets/weights/x/uploads", b'{"root": "m", "files": []}', 400,
     "invalid_manifest"),
    ("POST", "assets/models/x/uploads", b'{"root": "m", "files": [{"path": "../etc", '
     b'"size": 1, "sha256": "' + b"a" * 64 + b'", "md5": "' + b"a" * 32 + b'"}]}', 400,
     "invalid_path"),
    ("POST", "assets/models/x/versions", b'{"root": "m", "files": [{"path": "w", '
     b'"size": 1, "sha256": "' + b"a" * 64 + b'", "md5": "' + b"a" * 32 + b'"}]}', 400,
     "invalid_upload_id"),
    ("POST", "assets/models/x/versions", b'{"root": "m", "upload_id": "' + b"0" * 32 + b'", '
     b'"files": [{"path": "w", "size": 1, "sha256": "' + b"a" * 64 + b'", "md5": "'
     + b"a" * 32 + b'"}]}', 422, "upload_incomplete"),
    ("GET", "assets/models/x/versions/7", None, 404, "asset_not_found"),
])
def test_bad_requests_get_json_errors(host, unique_name, method, path, body, status, code):
    got, answer = call(host, method, path.format(e=unique_name), body)
    assert got == status, answer
    assert answer["error"]["code"] == code
    got, _ = call(host, "GET", f"endpoints/{unique_name}")
    assert got == 404  # nothing was created


def test_setting_a_missing_default_is_refused(host, client, unique_name):
    client.create_endpoint(name=unique_name)
    got, answer = call(host, "PATCH", f"endpoints/{unique_name}",
                       b'{"defaults": {"deployment_name": "nope"}}')
    assert (got, answer["error"]["code"]) == (400, "unknown_deployment")
    assert client.get_endpoint(unique_name)["defaults"]["deployment_name"] is None


def test_key_is_required(host):
    got, _ = call(host, "GET", "endpoints", key=False)
    assert got == 401
    assert call(host, "GET", "openapi.json", key=False)[0] == 200


def test_concurrent_creates_one_wins(host, unique_name):
    statuses = []
    barrier = threading.Barrier(4)

    def create():
        barrier.wait()
        statuses.append(call(host, "PUT", f"endpoints/{unique_name}", b"{}",
                             headers={"If-None-Match": "*"})[0])

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 409, 409, 409]


def test_openapi_documents_exactly_the_registered_routes(host):
    registered = json.loads(subprocess.run(
        [sys.executable, "-c",
         "import json, function_app\n"
         "routes = {}\n"
         "for f in function_app.app.get_functions():\n"
         "    t = f.get_trigger()\n"
         "    if getattr(t, 'route', None) is not None:\n"
         "        routes.setdefault('/' + t.route, set()).update(\n"
         "            m.value.lower() for m in t.methods)\n"
         "print(json.dumps({k: sorted(v) for k, v in routes.items()}))"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=120).stdout)
    status, document = call(host, "GET", "openapi.json", key=False)
    assert status == 200 and document["openapi"].startswith("3.")
    documented = {path: sorted(m for m in item if m in ("get", "put", "post", "patch", "delete"))
                  for path, item in document["paths"].items()}
    # OpenAPI has no catch-all: `a/{*rest}` is documented as `a/{rest}`, and `a` may be too.
    forms = {}
    for route, methods in registered.items():
        prefix, catch_all, name = route.partition("/{*")
        for form in ([f"{prefix}/{{{name}", prefix] if catch_all else [route]):
            forms[form] = (route, methods)
    assert all(forms.get(path, (None, None))[1] == methods for path, methods in documented.items())
    assert {forms[path][0] for path in documented} == set(registered)
    for item in document["paths"].values():
        for op in item.values():
            for response in op["responses"].values():
                ref = response.get("content", {}).get("application/json", {}).get(
                    "schema", {}).get("$ref")
                if ref:
                    assert ref.rsplit("/", 1)[1] in document["components"]["schemas"]


def test_docs_list_every_documented_route(host):
    _, document = call(host, "GET", "openapi.json", key=False)
    text = (REPO / "docs" / "http-api.md").read_text()
    for path, item in document["paths"].items():
        for method in item:
            assert f"| {method.upper()} | `/api{path}` |" in text, (
                f"{method.upper()} /api{path} is missing from docs/http-api.md: regenerate the "
                "reference with `python -m functions.openapi --markdown`")
