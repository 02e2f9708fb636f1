"""Models, data assets and computes as `az ml` has them, through a real devhost: the CLI,
the SDK facade, raw HTTP and blob drop; and the refusals (bad names, unknown versions,
archived @latest, unknown pools) that change nothing."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from azure.storage.blob import BlobServiceClient
from click.testing import CliRunner

from batchfn.cli import cli
from batchfn.client import BatchfnClient
from batchfn.errors import InvalidRequestError, NotFoundError
from batchfn.ml import Input, MLClient
from batchfn.ml.constants import AssetTypes
from batchfn.ml.entities import AmlCompute, Data, Model
from shared.contract.layout import DATA_CONTAINER, DROP_CONTAINER
from tests.conftest import SCORING_SCRIPTS

MLFLOW_MODEL = Path(__file__).resolve().parents[2] / "samples" / "breast_cancer" / \
    "deployment-mlflow" / "model"


@pytest.fixture(scope="module")
def client(host) -> BatchfnClient:
    return BatchfnClient(url=host.url, key=host.key)


@pytest.fixture
def env(host) -> dict[str, str]:
    return {"BATCHFN_URL": host.url, "BATCHFN_KEY": host.key}


def run(env: dict[str, str], *args: str, ok: bool = True):
    result = CliRunner().invoke(cli, list(args), env=env)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def folder(base: Path, name: str, files: dict[str, bytes]) -> Path:
    path = base / name
    for relative, body in files.items():
        (path / relative).parent.mkdir(parents=True, exist_ok=True)
        (path / relative).write_bytes(body)
    return path


def call(host, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{host.url}/api/{path}", data=data, method=method,
                                     headers={"x-functions-key": host.key,
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def endpoint(client, scratch) -> str:
    """An endpoint with an echo deployment on the default pool (files: one row each)."""
    name = "assets-e2e"
    model = folder(scratch / "echo", "model", {"w.txt": b"1"})
    client.create_endpoint(document={"name": name})
    client.create_deployment(document={
        "name": "echo", "endpoint_name": name, "model": {"path": str(model)},
        "code_configuration": {"code": str(SCORING_SCRIPTS), "scoring_script": "echo.py"},
        "settings": {"mini_batch_size": 2}}, set_default=True)
    return name


# ----- models --------------------------------------------------------------------------------

def test_model_versions_archive_and_restore_as_in_azure_ml(env, client, tmp_path, unique_name,
                                                            endpoint):
    model = folder(tmp_path, "model", {"w.bin": b"one", "sub/labels.txt": b"a\nb\n"})
    created = json.loads(run(env, "model", "create", "--name", unique_name, "--type",
                             "custom_model", "--path", str(model), "--description", "first",
                             "--tags", "task=classification", "framework=torch").stdout)
    assert (created["version"], created["type"], created["description"]) == (
        "1", "custom_model", "first")
    assert created["tags"] == {"task": "classification", "framework": "torch"}
    # The same content again is the same version: nothing uploaded, nothing new.
    again = json.loads(run(env, "model", "create", "-n", unique_name, "-p", str(model)).stdout)
    assert again["version"] == "1" and again["digest"] == created["digest"]
    (model / "w.bin").write_bytes(b"two")
    assert json.loads(run(env, "model", "create", "-n", unique_name, "-p",
                          str(model)).stdout)["version"] == "2"
    # model.yml, its path relative to the file, an explicit version.
    (model / "w.bin").write_bytes(b"five")
    spec = tmp_path / "model.yml"
    spec.write_text(yaml.safe_dump({
        "$schema": "https://azuremlschemas.azureedge.net/latest/model.schema.json",
        "name": unique_name, "version": 5, "path": "model", "type": "custom_model",
        "properties": {"p": "1"}}))
    from_file = run(env, "model", "create", "-f", str(spec))
    assert json.loads(from_file.stdout)["version"] == "5"
    assert "properties: batchfn keeps no free-form properties" in from_file.stderr
    listed = run(env, "model", "list", "--name", unique_name, "--query", "[].version",
                 "-o", "tsv")
    assert listed.stdout.split() == ["1", "2", "5"]
    assert unique_name in run(env, "model", "list", "--query", "[].name", "-o", "tsv").stdout

    # update --set: description, one tag added to the others.
    updated = json.loads(run(env, "model", "update", "-n", unique_name, "-v", "1", "--set",
                             "description=the first", "--set", "tags.stage=old").stdout)
    assert updated["description"] == "the first"
    assert updated["tags"] == {"task": "classification", "framework": "torch", "stage": "old"}

    # Archive 5: @latest skips it, the list hides it, its number still works.
    run(env, "model", "archive", "-n", unique_name, "-v", "5")
    assert run(env, "model", "show", "-n", unique_name, "--query", "version",
               "-o", "tsv").stdout.strip() == "2"
    assert run(env, "model", "list", "-n", unique_name, "--include-archived", "--query",
               "[?archived].version", "-o", "tsv").stdout.split() == ["5"]
    latest = client.create_deployment(document=_by_reference(endpoint, "latest",
                                                             f"azureml:{unique_name}@latest"))
    assert (latest["model"]["version"], latest["model_reference"]) == (
        "2", f"azureml:{unique_name}@latest")
    pinned = client.create_deployment(document=_by_reference(endpoint, "pinned",
                                                             f"azureml:{unique_name}:5"))
    assert pinned["model"]["version"] == "5"

    # Archive them all: @latest is a clear 404, and the deployment is not created.
    run(env, "model", "archive", "-n", unique_name)
    refused = run(env, "model", "show", "-n", unique_name, ok=False)
    assert refused.exit_code == 1 and "all 3 are archived" in refused.stderr
    with pytest.raises(NotFoundError, match="no active version") as archived:
        client.create_deployment(document=_by_reference(endpoint, "gone",
                                                        f"azureml:{unique_name}@latest"))
    assert archived.value.code == "asset_archived"
    assert "gone" not in [d["name"] for d in client.list_deployments(endpoint)]
    run(env, "model", "restore", "-n", unique_name)
    assert client.get_asset("model", unique_name)["version"] == "5"


def _by_reference(endpoint: str, name: str, model: str) -> dict:
    return {"name": name, "endpoint_name": endpoint, "model": model,
            "code_configuration": {"code": "azureml:placeholder:1", "scoring_script": "x.py"}}


@pytest.fixture(autouse=True, scope="module")
def _registered_code(client, scratch) -> None:
    """The code asset the by-reference deployments above name."""
    code = folder(scratch / "code", "code", {"x.py": b"def init():\n    pass\n\n"
                                             b"def run(b):\n    return b\n"})
    assert client.upload_asset("code", "placeholder", code)["version"] == "1"


def test_an_mlflow_model_is_checked_before_anything_is_uploaded(env, client, host, tmp_path,
                                                                unique_name):
    plain = folder(tmp_path, "model", {"model.pkl": b"not mlflow"})
    refused = run(env, "model", "create", "-n", unique_name, "--type", "mlflow_model",
                  "--path", str(plain), ok=False)
    assert refused.exit_code == 1 and "is not an MLflow model" in refused.stderr
    with pytest.raises(NotFoundError):
        client.get_asset("model", unique_name)
    # The API checks it too, after the upload and before any version is recorded.
    from batchfn.contract.asset_manifest import scan_folder

    from batchfn.uploads import upload_files

    manifest = scan_folder(plain)
    grant = client.request("POST", f"assets/models/{unique_name}/uploads", manifest.to_dict())
    upload_files(plain, manifest, grant)
    status, body = call(host, "POST", f"assets/models/{unique_name}/versions",
                        {**manifest.to_dict(), "upload_id": grant["upload_id"],
                         "type": "mlflow_model"})
    assert (status, body["error"]["code"]) == (422, "not_an_mlflow_model")
    assert call(host, "GET", f"assets/models/{unique_name}/versions")[1] == {"value": []}
    mlflow = json.loads(run(env, "model", "create", "-n", unique_name, "--type",
                            "mlflow_model", "--path", str(MLFLOW_MODEL)).stdout)
    assert (mlflow["version"], mlflow["type"]) == ("1", "mlflow_model")


def test_the_sdk_registers_archives_and_restores_models(host, tmp_path, unique_name):
    ml_client = MLClient(url=host.url, key=host.key)
    path = folder(tmp_path, "model", {"w.bin": b"w"})
    model = ml_client.models.create_or_update(Model(
        name=unique_name, path=path, type=AssetTypes.CUSTOM_MODEL, tags={"k": "v"},
        description="d"))
    assert (model.version, model.tags, model.description) == ("1", {"k": "v"}, "d")
    ml_client.models.archive(name=unique_name, version="1")
    assert ml_client.models.list(name=unique_name) == []
    assert [m.stage for m in ml_client.models.list(name=unique_name, archived_only=True)] == [
        "Archived"]
    with pytest.raises(NotFoundError, match="archived"):
        ml_client.models.get(unique_name, label="latest")
    ml_client.models.restore(name=unique_name, version="1")
    assert ml_client.models.get(unique_name, label="latest").version == "1"


# ----- data assets ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_folder(scratch) -> Path:
    return folder(scratch, "digits", {f"d{i}.bin": b"x" * (i + 1) for i in range(5)})


def test_a_local_folder_registered_once_is_invoked_by_cli_sdk_http_and_blob_drop(
        env, client, host, storage_connection, digits_folder, endpoint, unique_name):
    data = unique_name
    created = json.loads(run(env, "data", "create", "--name", data, "--type", "uri_folder",
                             "--path", str(digits_folder)).stdout)
    assert created["version"] == "1"
    assert created["path"].startswith(
        f"azureml://datastores/workspaceblobstore/paths/assets/{data}/")
    blobs = BlobServiceClient.from_connection_string(storage_connection)
    stored = lambda: sorted(blobs.get_container_client(DATA_CONTAINER).list_blob_names(  # noqa: E731
        name_starts_with=f"assets/{data}/"))
    copy = stored()
    assert len(copy) == 5
    # Re-creating the same content makes no copy and no version.
    again = json.loads(run(env, "data", "create", "-n", data, "-p", str(digits_folder)).stdout)
    assert again["version"] == "1" and stored() == copy

    jobs = {
        "cli": run(env, "batch-endpoint", "invoke", "-n", endpoint, "--input",
                   f"azureml:{data}@latest", "--query", "name", "-o", "tsv").stdout.strip(),
        "sdk": MLClient(url=host.url, key=host.key).batch_endpoints.invoke(
            endpoint_name=endpoint,
            input=Input(type=AssetTypes.URI_FOLDER, path=f"azureml:{data}@latest")).name,
        "native": call(host, "POST", f"endpoints/{endpoint}/jobs",
                       {"input": f"azureml:{data}:1"})[1]["name"],
        "azureml": call(host, "POST", f"endpoints/{endpoint}/jobs", {"properties": {
            "InputData": {"in": {"JobInputType": "UriFolder",
                                 "Uri": f"azureml:{data}@latest"}}}})[1]["name"],
    }
    drop = blobs.get_container_client(DROP_CONTAINER)
    if not drop.exists():
        drop.create_container()
    marker = f"{endpoint}/{unique_name}/_start"
    drop.upload_blob(marker, json.dumps({"input": f"azureml:{data}@latest"}), overwrite=True)
    jobs["drop"] = _drop_job(drop, marker)
    for via, job in jobs.items():
        final = client.wait_job(job, timeout=180)
        assert final["status"] == "Completed", (via, final)
        assert final["progress"]["files"]["succeeded"] == 5, via
        assert final["input"]["data_asset"] == f"azureml:{data}:1", via
        assert final["input"]["location"]["container"] == DATA_CONTAINER
        assert final["input"]["location"]["path"].startswith(f"assets/{data}/"), via
    assert client.get_job(jobs["cli"])["input"]["uri"] == f"azureml:{data}@latest"
    # The drop's output went beside the drop, as for a folder of files.
    assert client.get_job(jobs["drop"])["output"]["score"]["container"] == DROP_CONTAINER


def _drop_job(drop, marker: str) -> str:
    deadline = time.monotonic() + 60
    answer = marker.rsplit("/", 1)[0] + "/_job.json"
    while time.monotonic() < deadline:
        if drop.get_blob_client(answer).exists():
            return json.loads(drop.download_blob(answer).readall())["name"]
        time.sleep(0.5)
    raise AssertionError(f"no {answer} after 60 s")


def test_data_assets_from_a_datastore_path_a_file_and_the_sdk(env, client, host, scratch,
                                                             storage_connection, endpoint,
                                                             unique_name):
    blobs = BlobServiceClient.from_connection_string(storage_connection)
    container = blobs.get_container_client(DATA_CONTAINER)
    for i in range(3):
        container.upload_blob(f"{unique_name}/in/f{i}.txt", b"abc", overwrite=True)
    located = f"azureml://datastores/workspaceblobstore/paths/{unique_name}/in"
    recorded = json.loads(run(env, "data", "create", "-n", unique_name, "--path",
                              located).stdout)
    assert (recorded["path"], recorded["digest"] != "") == (located, True)
    job = client.invoke(endpoint, f"azureml:{unique_name}@latest")
    assert client.wait_job(job["name"], timeout=120)["progress"]["files"]["succeeded"] == 3
    # One file, uploaded: a uri_file asset; a uri_folder invoke of it is a clear 400.
    one = scratch / "one.csv"
    one.write_text("a,b\n1,2\n")
    ml_client = MLClient(url=host.url, key=host.key)
    single = ml_client.data.create_or_update(Data(name=f"{unique_name}-file", path=one,
                                                  type=AssetTypes.URI_FILE))
    assert single.version == "1" and single.path.endswith("/file/one.csv")
    assert [d.name for d in ml_client.data.list() if d.name.startswith(unique_name)] == [
        unique_name, f"{unique_name}-file"]
    with pytest.raises(InvalidRequestError, match="does not match data asset"):
        client.invoke(endpoint, f"azureml:{unique_name}-file@latest", input_type="uri_folder")
    file_job = client.invoke(endpoint, f"azureml:{unique_name}-file@latest")
    assert file_job["input"]["type"] == "uri_file"
    ml_client.data.archive(name=f"{unique_name}-file")
    with pytest.raises(NotFoundError, match="archived"):
        client.invoke(endpoint, f"azureml:{unique_name}-file@latest")
    # Jobs never write into registered data assets.
    with pytest.raises(InvalidRequestError, match="registered data assets"):
        client.invoke(endpoint, located, output_path="azureml://datastores/workspaceblobstore"
                                                     f"/paths/assets/{unique_name}")


# ----- computes ------------------------------------------------------------------------------

def test_compute_lifecycle_as_az_ml_compute(env, client, tmp_path, unique_name, endpoint):
    spec = tmp_path / "compute.yml"
    spec.write_text(yaml.safe_dump({
        "$schema": "https://azuremlschemas.azureedge.net/latest/amlCompute.schema.json",
        "name": unique_name, "type": "amlcompute", "size": "Standard_NC4as_T4_v3",
        "min_instances": 1, "max_instances": 3, "idle_time_before_scale_down": 300,
        "ssh_settings": {"admin_username": "x"}}))
    created = run(env, "compute", "create", "-f", str(spec))
    body = json.loads(created.stdout)
    assert (body["profile"], body["min_instances"], body["max_instances"]) == ("gpu-t4", 1, 3)
    assert "ssh_settings: batchfn's scoring hosts are Functions replicas" in created.stderr
    assert "note: min_instances 1: hosts are kept warm" in created.stderr
    table = run(env, "compute", "list", "-o", "table").stdout.splitlines()
    assert table[0].split()[:2] == ["name", "size"]
    assert run(env, "compute", "show", "-n", unique_name, "--query", "max_instances",
               "-o", "tsv").stdout == "3\n"
    updated = json.loads(run(env, "compute", "update", "-n", unique_name, "--set",
                             "max_instances=4", "--set", "tags.team=ml").stdout)
    assert (updated["max_instances"], updated["tags"]) == (4, {"team": "ml"})
    updated = json.loads(run(env, "compute", "update", "-n", unique_name,
                             "--min-instances", "0", "--tags", "owner=me").stdout)
    assert (updated["min_instances"], updated["tags"]) == (0, {"team": "ml", "owner": "me"})
    # A deployment on it; the pool cannot go while it is used.
    client.create_deployment(document={**_by_reference(endpoint, "pooled",
                                                       "azureml:placeholder-model:1"),
                                       "compute": f"azureml:{unique_name}"})
    in_use = run(env, "compute", "delete", "-n", unique_name, "--yes", ok=False)
    assert in_use.exit_code == 1 and "[compute_in_use]" in in_use.stderr
    client.delete_deployment(endpoint, "pooled")
    run(env, "compute", "delete", "-n", unique_name, "--yes")
    assert unique_name not in [c["name"] for c in client.list_computes()]


@pytest.fixture(autouse=True, scope="module")
def _registered_model(client, scratch) -> None:
    model = folder(scratch / "placeholder-model", "model", {"w": b"w"})
    client.upload_asset("model", "placeholder-model", model)


def test_the_sdk_creates_lists_and_deletes_computes(host, unique_name):
    ml_client = MLClient(url=host.url, key=host.key)
    if not any(filter(lambda m: m.name == unique_name, ml_client.compute.list())):
        ml_client.compute.begin_create_or_update(AmlCompute(
            name=unique_name, description="CPU cluster compute", min_instances=0,
            max_instances=2)).result()
    got = ml_client.compute.get(unique_name)
    assert (got.max_instances, got.size, got.description) == (2, None, "CPU cluster compute")
    got.max_instances = 6
    assert ml_client.compute.begin_update(got).result().max_instances == 6
    ml_client.compute.begin_delete(unique_name).result()
    with pytest.raises(NotFoundError):
        ml_client.compute.get(unique_name)


# ----- refusals ------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "fragment"), [
    (["model", "create", "-n", "bad/name", "-p", "."], "invalid asset name"),
    (["model", "show", "-n", "nothing-here", "-v", "3"], "does not exist"),
    (["model", "show", "-n", "nothing-here", "-v", "abc"], "invalid asset version"),
    (["data", "create", "-n", "d", "-p", "/no/such/folder"], "does not exist"),
    (["data", "create", "-n", "d", "-p", "https://elsewhere.example.com/c/x"],
     "outside the configured storage account"),
    (["compute", "create", "-n", "k80", "--type", "amlcompute", "--size", "Standard_NC6"],
     "no scoring profile serves size"),
    (["compute", "create", "-n", "x", "--type", "amlcompute", "--min-instances", "3",
      "--max-instances", "2"], "min_instances (3) is more than max_instances (2)"),
    (["compute", "delete", "-n", "default", "--yes"], "cannot be deleted"),
    (["compute", "update", "-n", "default", "--set", "colour=red"], "cannot update colour"),
])
def test_refusals_are_one_clear_error(env, args, fragment):
    result = run(env, *args, ok=False)
    assert result.exit_code != 0
    assert fragment in result.stderr, result.stderr


def test_unknown_references_change_nothing(client, host, endpoint, unique_name):
    before = sorted(d["name"] for d in client.list_deployments(endpoint))
    jobs_before = len(client.list_jobs(endpoint))
    for model, status, code in [(f"azureml:{unique_name}:1", 404, "asset_not_found"),
                                ("azureml:placeholder-model:99", 404, "asset_not_found"),
                                ("azureml:bad/name:1", 400, "invalid_name")]:
        answer = call(host, "PUT", f"endpoints/{endpoint}/deployments/refused",
                      _by_reference(endpoint, "refused", model))
        assert (answer[0], answer[1]["error"]["code"]) == (status, code), model
    pool = call(host, "PUT", f"endpoints/{endpoint}/deployments/refused", {
        **_by_reference(endpoint, "refused", "azureml:placeholder-model:1"),
        "compute": "azureml:no-such-pool"})
    assert (pool[0], pool[1]["error"]["code"]) == (400, "unknown_compute")
    assert "default" in pool[1]["error"]["message"]  # it lists the pools
    for data, status, code in [(f"azureml:{unique_name}@latest", 404, "asset_not_found"),
                               ("azureml:placeholder-model", 400, "invalid_reference"),
                               ("azureml:x:0", 400, "invalid_version")]:
        answer = call(host, "POST", f"endpoints/{endpoint}/jobs", {"input": data})
        assert (answer[0], answer[1]["error"]["code"]) == (status, code), data
    assert sorted(d["name"] for d in client.list_deployments(endpoint)) == before
    assert len(client.list_jobs(endpoint)) == jobs_before
    assert call(host, "PATCH", "assets/models/placeholder-model/versions/1",
                {"stage": "Production"})[0] == 400
    assert call(host, "GET", "computes/no-such-pool")[0] == 404


# ----- outputs -------------------------------------------------------------------------------

def test_a_summary_only_jobs_output_folder_downloads_whole(env, client, host, scratch, tmp_path,
                                                          endpoint, digits_folder):
    model = folder(scratch / "files-model", "model", {"w": b"w"})
    client.create_deployment(document={
        "name": "files", "endpoint_name": endpoint, "model": {"path": str(model)},
        "code_configuration": {"code": str(SCORING_SCRIPTS),
                               "scoring_script": "writes_files.py"},
        "settings": {"mini_batch_size": 2, "output_action": "summary_only"}})
    shared = "azureml://datastores/workspaceblobstore/paths/shared-out"
    jobs = [client.invoke(endpoint, digits_folder, deployment_name="files",
                          output_path=shared if index else None)["name"] for index in (0, 1)]
    for job in jobs:
        assert client.wait_job(job, timeout=180)["status"] == "Completed"
    downloaded = run(env, "job", "download", "-n", jobs[0], "--output-name", "score",
                     "--download-path", str(tmp_path / "cli"))
    folder_path = Path(json.loads(downloaded.stdout)["folder"])
    assert sorted(p.name for p in folder_path.iterdir()) == [
        "part-d0.parquet", "part-d2.parquet", "part-d4.parquet"]
    MLClient(url=host.url, key=host.key).jobs.download(name=jobs[1], download_path=tmp_path
                                                        / "sdk", output_name="score")
    assert sorted(p.name for p in (tmp_path / "sdk" / "named-outputs" / "score").iterdir()) \
        == ["part-d0.parquet", "part-d2.parquet", "part-d4.parquet"]
    # A folder other jobs write to lists this job's files only.
    other = client.invoke(endpoint, digits_folder, output_path=shared,
                          settings={"output_file_name": "other.csv"})["name"]
    client.wait_job(other, timeout=120)
    assert [f["path"] for f in client.list_job_output(other)] == ["other.csv"]
    assert client.list_job_output(other)[0]["main"] is True


def test_job_show_web_prints_the_page_where_no_browser_opens(env, host, endpoint,
                                                             digits_folder, monkeypatch):
    job = run(env, "batch-endpoint", "invoke", "-n", endpoint, "--input", str(digits_folder),
              "--query", "name", "-o", "tsv").stdout.strip()
    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    shown = run(env, "job", "show", "-n", job, "--web")
    assert json.loads(shown.stdout)["name"] == job
    url = shown.stderr.split("open ", 1)[1].split()[0]
    assert parse_qs(urlsplit(url).fragment) == {"view": [f"/jobs/{job}"]}
    assert host.key not in shown.output
