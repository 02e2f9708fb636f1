"""The registry engine against a real Azurite: assets, endpoints, deployments."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from batchfn.uploads import upload_files
from shared.contract.asset_manifest import scan_folder
from shared.contract.deployment_spec import DeploymentSpec, EndpointSpec
from shared.contract.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from shared.control.asset_store import AssetStore
from shared.control.registry import Registry
from shared.storage.account import StorageAccount

SCORE = "def init():\n    pass\n\ndef run(mini_batch):\n    return mini_batch\n"


@pytest.fixture(scope="module")
def account(storage_connection: str) -> StorageAccount:
    return StorageAccount(connection_string=storage_connection)


@pytest.fixture
def registry(account: StorageAccount) -> Registry:
    return Registry(account)


def make_folder(base: Path, name: str, files: dict[str, str]) -> Path:
    folder = base / name
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def register(store: AssetStore, kind: str, name: str, folder: Path):
    manifest = scan_folder(folder)
    grant = store.grant_upload(kind, name, manifest)
    if grant["exists"]:
        return store.register(kind, name, manifest)
    upload_files(folder, manifest, grant)
    return store.register(kind, name, manifest, grant["upload_id"])


def test_identical_content_reuses_the_version(registry, tmp_path, unique_name):
    folder = make_folder(tmp_path, "model", {"weights.bin": "abc", "sub/meta.json": "{}"})
    first, created = register(registry.assets, "model", unique_name, folder)
    assert created and first.version == "1"
    assert (first.content.files, first.content.root) == (2, "model")
    again, created_again = register(registry.assets, "model", unique_name, folder)
    assert (again, created_again) == (first, False)
    assert registry.assets.grant_upload("model", unique_name, scan_folder(folder))["exists"]
    (folder / "weights.bin").write_text("changed")
    second, created = register(registry.assets, "model", unique_name, folder)
    assert created and second.version == "2"
    assert second.content.digest != first.content.digest
    assert registry.assets.versions.get("model", unique_name, "latest") == second
    versions = registry.assets.versions.list_versions("model", unique_name)
    assert [a.version for a in versions] == ["1", "2"]


def test_register_refuses_missing_uploads(registry, tmp_path, unique_name):
    folder = make_folder(tmp_path, "model", {"weights.bin": "abc"})
    manifest = scan_folder(folder)
    with pytest.raises(InvalidRequest, match="upload_id is required"):
        registry.assets.register("model", unique_name, manifest)
    grant = registry.assets.grant_upload("model", unique_name, manifest)
    with pytest.raises(Unprocessable) as info:
        registry.assets.register("model", unique_name, manifest, grant["upload_id"])
    assert info.value.details["missing"] == ["weights.bin"]
    with pytest.raises(NotFound):
        registry.assets.versions.get("model", unique_name, "latest")


def test_concurrent_registration_makes_one_version(account, tmp_path, unique_name):
    folder = make_folder(tmp_path, "model", {"w.bin": "x" * 1000})
    manifest = scan_folder(folder)
    store = AssetStore(account)
    grant = store.grant_upload("model", unique_name, manifest)
    upload_files(folder, manifest, grant)
    results = []
    barrier = threading.Barrier(4)

    def worker():
        own = AssetStore(account)
        barrier.wait()
        results.append(own.register("model", unique_name, manifest, grant["upload_id"]))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {ref.version for ref, _ in results} == {"1"}
    assert sum(created for _, created in results) == 1
    assert [a.version for a in store.versions.list_versions("model", unique_name)] == ["1"]


def _deployment(registry, tmp_path, endpoint, name, script=SCORE):
    model = make_folder(tmp_path / name, "model", {"w.bin": "weights"})
    code = make_folder(tmp_path / name, "code", {"score.py": script})
    model_ref, _ = register(registry.assets, "model", f"{endpoint}-model", model)
    code_ref, _ = register(registry.assets, "code", f"{endpoint}-code", code)
    return DeploymentSpec.from_document({
        "name": name, "endpoint_name": endpoint,
        "model": f"azureml:{model_ref.name}:{model_ref.version}",
        "code_configuration": {"code": f"azureml:{code_ref.name}:{code_ref.version}",
                               "scoring_script": "score.py"},
        "mini_batch_size": 5,
    })


def test_endpoint_and_deployment_lifecycle(registry, tmp_path, unique_name):
    endpoint = registry.create_endpoint(EndpointSpec(name=unique_name, description="d"))
    assert endpoint.default_deployment is None
    with pytest.raises(Conflict):
        registry.create_endpoint(EndpointSpec(name=unique_name))
    with pytest.raises(InvalidRequest, match="no default deployment"):
        registry.resolve_deployment(unique_name, None)

    blue, created = registry.create_deployment(_deployment(registry, tmp_path, unique_name,
                                                           "blue"))
    assert created and blue.settings.mini_batch_size == 5
    # The first deployment becomes the default.
    assert registry.get_endpoint(unique_name).default_deployment == "blue"
    green, _ = registry.create_deployment(_deployment(registry, tmp_path, unique_name, "green"))
    assert registry.resolve_deployment(unique_name, None).name == "blue"
    assert registry.resolve_deployment(unique_name, "green") == green
    with pytest.raises(Conflict):
        registry.create_deployment(_deployment(registry, tmp_path, unique_name, "green"))

    with pytest.raises(InvalidRequest, match="no such deployment"):
        registry.update_endpoint(unique_name, {"defaults": {"deployment_name": "red"}})
    registry.update_endpoint(unique_name, {"defaults": {"deployment_name": "green"}})
    assert registry.resolve_deployment(unique_name, None).name == "green"

    updated = registry.update_deployment(unique_name, "blue",
                                         {"settings": {"mini_batch_size": 7}})
    assert updated.settings.mini_batch_size == 7 and updated.model == blue.model
    with pytest.raises(InvalidRequest):
        registry.update_deployment(unique_name, "blue", {"settings": {"mini_batch_size": 0}})
    assert registry.get_deployment(unique_name, "blue").settings.mini_batch_size == 7

    with pytest.raises(Conflict, match="switch the default first"):
        registry.delete_deployment(unique_name, "green")
    registry.delete_deployment(unique_name, "blue")
    assert [d.name for d in registry.list_deployments(unique_name)] == ["green"]
    registry.delete_deployment(unique_name, "green")
    assert registry.get_endpoint(unique_name).default_deployment is None

    registry.create_deployment(_deployment(registry, tmp_path, unique_name, "blue"))
    assert registry.delete_endpoint(unique_name) == ["blue"]
    with pytest.raises(NotFound):
        registry.get_endpoint(unique_name)
    with pytest.raises(NotFound):
        registry.get_deployment(unique_name, "blue")


def test_broken_scoring_script_is_refused_at_create(registry, tmp_path, unique_name):
    registry.create_endpoint(EndpointSpec(name=unique_name))
    spec = _deployment(registry, tmp_path, unique_name, "blue", script="def init(:\n")
    with pytest.raises(Unprocessable, match="line 1"):
        registry.create_deployment(spec)
    spec = _deployment(registry, tmp_path, unique_name, "green", script="def init(): pass\n")
    with pytest.raises(Unprocessable, match="missing: run"):
        registry.create_deployment(spec)
    assert registry.list_deployments(unique_name) == []
    assert registry.get_endpoint(unique_name).default_deployment is None


def _script_less(registry, tmp_path, endpoint, name, files):
    model = make_folder(tmp_path / name, "model", files)
    model_ref, _ = register(registry.assets, "model", f"{endpoint}-{name}", model)
    return DeploymentSpec.from_document({
        "name": name, "endpoint_name": endpoint,
        "model": {"name": model_ref.name, "version": model_ref.version}})


def test_an_mlflow_model_deploys_without_a_scoring_script(registry, tmp_path, unique_name):
    registry.create_endpoint(EndpointSpec(name=unique_name))
    mlmodel = "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
    record, _ = registry.create_deployment(_script_less(
        registry, tmp_path, unique_name, "mlflow", {"MLmodel": mlmodel, "model.pkl": "x"}))
    assert (record.code, record.scoring_script) == (None, None)
    stored = registry.get_deployment(unique_name, "mlflow")
    assert stored == record and stored.to_dict()["code_configuration"] is None

    with pytest.raises(Unprocessable, match="is not an MLflow model") as plain:
        registry.create_deployment(_script_less(registry, tmp_path, unique_name, "plain",
                                                {"w.bin": "weights"}))
    assert plain.value.code == "scoring_script_required"
    with pytest.raises(Unprocessable, match="has no python_function flavor") as keras:
        registry.create_deployment(_script_less(registry, tmp_path, unique_name, "keras", {
            "MLmodel": "flavors:\n  keras:\n    keras_version: 3\n"}))
    assert keras.value.code == "invalid_mlflow_model"
    assert [d.name for d in registry.list_deployments(unique_name)] == ["mlflow"]


def test_concurrent_endpoint_creates_one_wins(account, unique_name):
    outcomes = []
    barrier = threading.Barrier(3)

    def worker():
        own = Registry(account)
        barrier.wait()
        try:
            own.create_endpoint(EndpointSpec(name=unique_name))
            outcomes.append("created")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "conflict", "created"]
