"""Deployment environments on a scoring host, against a real Azurite and PyPI: built with
uv over the image's packages, reused, packed once and unpacked by another host, and two
deployments with conflicting pins scoring at the same time."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy
import pandas
import pytest

from shared.contract.environment_spec import EnvironmentSpec
from shared.contract.layout import (
    ENVIRONMENTS_CONTAINER,
    environment_pack,
)
from shared.contract.registry_records import AssetRef, DeploymentRecord, EnvironmentRecord
from shared.contract.settings import DeploymentSettings
from shared.scoring import environments
from shared.scoring.environments import READY_FILE, EnvironmentCache
from shared.scoring.scoring_runtime import ScoringRuntime
from shared.storage.account import StorageAccount
from tests.integration.conftest import script_assets
from tests.integration.test_scoring_runtime import batch, column, upload_inputs

# uv's wheel cache outlives the test session: environments build from it in seconds.
UV_CACHE = Path(tempfile.gettempdir()) / "batchfn-tests-uv-cache"


@pytest.fixture(autouse=True)
def _uv_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_CACHE_DIR", str(UV_CACHE))


@pytest.fixture(scope="module")
def assets(account: StorageAccount) -> tuple[AssetRef, AssetRef]:
    return script_assets(account, "env")


@pytest.fixture(scope="module")
def runtime(account: StorageAccount, tmp_path_factory: pytest.TempPathFactory):
    scoring = ScoringRuntime(account, tmp_path_factory.mktemp("work"), gpus=())
    yield scoring
    scoring.close()


def environment(name: str, *requirements: str, python: str | None = None
                ) -> EnvironmentRecord:
    spec = EnvironmentSpec(requirements=requirements, python=python,
                           description=uuid.uuid4().hex)  # the digest ignores it
    return EnvironmentRecord(name=name, version="1", digest=spec.digest, spec=spec)


def deployment(assets, name: str, env: EnvironmentRecord | None,
               script: str = "versions.py") -> DeploymentRecord:
    model, code = assets
    return DeploymentRecord(name=name, endpoint_name="env-tests", model=model, code=code,
                            scoring_script=script, settings=DeploymentSettings(),
                            environment=env)


def test_two_deployments_with_conflicting_pins_score_at_the_same_time(account, assets,
                                                                      runtime):
    old = environment("old-stack", "numpy==1.26.4", "pandas==2.2.3", "tabulate")
    image = environment("image-stack", "numpy==2.2.6")
    files = upload_inputs(account, {"a.txt": b"a", "b.txt": b"b"})

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(runtime.score, deployment(assets, "old", old), batch(files))
        second = pool.submit(runtime.score, deployment(assets, "image", image),
                             batch(files, job="job-2"))
        old_outcome, image_outcome = first.result(), second.result()

    assert old_outcome.status == "succeeded", old_outcome.log
    assert image_outcome.status == "succeeded", image_outcome.log
    assert set(column(old_outcome, "numpy")) == {"1.26.4"}
    assert set(column(old_outcome, "pandas")) == {"2.2.3"}
    assert set(column(old_outcome, "tabulate")) != {None}  # a package the image lacks
    assert set(column(image_outcome, "numpy")) == {"2.2.6"}  # a pin wins over the image
    assert set(column(image_outcome, "pandas")) == {pandas.__version__}  # the image's
    assert set(column(image_outcome, "tabulate")) == {None}
    assert column(old_outcome, "prefix")[0] != column(image_outcome, "prefix")[0]
    assert set(column(old_outcome, "isolated")) == {"1"}  # python -I: no user site


def test_no_environment_keeps_the_image_packages(account, assets, runtime):
    files = upload_inputs(account, {"a.txt": b"a"})
    outcome = runtime.score(deployment(assets, "plain", None), batch(files))
    assert outcome.status == "succeeded", outcome.log
    assert column(outcome, "numpy") == [numpy.__version__]


def test_an_environment_is_built_once_and_unpacked_by_another_host(account, tmp_path):
    record = environment("shared-stack", "tabulate==0.9.0")
    container = account.blob_service().get_container_client(ENVIRONMENTS_CONTAINER)
    first = EnvironmentCache(tmp_path / "host-1", container, host_id="host-1")
    started = time.monotonic()
    built = first.get(record)
    cold = time.monotonic() - started
    again = time.monotonic()
    assert first.get(record) == built
    assert time.monotonic() - again < 0.5  # reused, not rebuilt

    second = EnvironmentCache(tmp_path / "host-2", container, host_id="host-2")
    started = time.monotonic()
    unpacked = second.get(record)
    unpack = time.monotonic() - started

    assert unpacked.key == built.key
    ready = json.loads((unpacked.folder / READY_FILE).read_text())
    assert ready["built_by"] == "host-1"  # host 2 unpacked host 1's build
    assert Path(unpacked.python).exists()
    print(f"cold build {cold:.2f}s, unpack {unpack:.2f}s")


def test_an_environment_that_cannot_be_built_fails_at_start(account, assets, runtime):
    files = upload_inputs(account, {"a.txt": b"a"})
    unavailable = environment("other-python", "tabulate", python="3.12")
    outcome = runtime.score(deployment(assets, "py312", unavailable), batch(files))
    assert outcome.status == "failed" and outcome.startup_failed
    assert "3.12" in outcome.error


@pytest.mark.parametrize(("hidden", "version", "compression"), [
    ((), "0.8.10", "zst"),  # zstd where the host has it
    (("zstd",), "0.8.9", "gz"),  # else gzip
    (("zstd", "gzip", "tar"), "0.8.8", "gz"),  # Python's own tar and gzip
])
def test_packs_are_read_by_hosts_with_the_same_tools(account, tmp_path, monkeypatch, hidden,
                                                     version, compression):
    if "zstd" not in hidden and shutil.which("zstd") is None:
        pytest.skip("zstd is not installed here")
    which = shutil.which
    monkeypatch.setattr(environments.shutil, "which",
                        lambda name, *args, **kwargs: None if name in hidden
                        else which(name, *args, **kwargs))
    record = environment(f"packed-{compression}", f"tabulate=={version}")
    container = account.blob_service().get_container_client(ENVIRONMENTS_CONTAINER)
    first = EnvironmentCache(tmp_path / "host-1", container, host_id="host-1")
    built = first.get(record)
    first.wait_packed()
    assert container.get_blob_client(environment_pack(built.key, compression)).exists()
    unpacked = EnvironmentCache(tmp_path / "host-2", container, host_id="host-2").get(record)
    assert json.loads((unpacked.folder / READY_FILE).read_text())["built_by"] == "host-1"
    assert list(unpacked.folder.glob(f"lib/python*/site-packages/tabulate-{version}.dist-info"))
