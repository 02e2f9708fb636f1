"""Environments end to end: devhost + Azurite + PyPI, through the CLI and the client.
A deployment folder whose script needs a package the image lacks scores with its conda
file honoured, and an MLflow model whose requirements pin the numpy and pandas the image
has not scores with its own; bad environments are refused at create with clear 4xx and
nothing stored."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy
import pandas
import pytest
from click.testing import CliRunner

from batchfn.cli import cli
from batchfn.client import ApiError, BatchfnClient
from samples.breast_cancer.accuracy import accuracy
from samples.breast_cancer.dataset import SAMPLE_DIR
from samples.breast_cancer.prepare_data import prepare
from tests.conftest import SCORING_SCRIPTS, scoring_devhost

ENDPOINT = "env-e2e"
UV_CACHE = Path(tempfile.gettempdir()) / "batchfn-tests-uv-cache"


@pytest.fixture(scope="module")
def host(storage_connection, scratch, monkeypatch_module):
    monkeypatch_module.setenv("UV_CACHE_DIR", str(UV_CACHE))  # wheels outlive the session
    with scoring_devhost(storage_connection, scratch) as running:
        yield running


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def client(host):
    client = BatchfnClient(url=host.url, key=host.key)
    client.create_endpoint(document={"name": ENDPOINT})
    return client


def batchfn(host, *args: str):
    return CliRunner().invoke(cli, [*args, "--url", host.url, "--key", host.key])


def conda(tmp_path: Path, *lines: str, python: str = "3.11") -> Path:
    path = tmp_path / "conda.yaml"
    pip = "".join(f"      - {line}\n" for line in lines)
    path.write_text(f"name: test-env\nchannels:\n  - conda-forge\ndependencies:\n"
                    f"  - python={python}\n  - pip\n  - pip:\n{pip}")
    return path


def test_environment_create_show_list_by_content(host, tmp_path):
    file = conda(tmp_path, "tabulate==0.9.0")
    created = batchfn(host, "environment", "create", "--name", "tab-env", "--conda-file",
                      str(file), "--image", "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04")
    assert created.exit_code == 0, created.output
    record = json.loads(created.output)
    assert (record["name"], record["version"], record["python"]) == ("tab-env", "1", "3.11")
    assert record["requirements"] == ["tabulate==0.9.0"]
    assert "tabulate==0.9.0" in record["resolved"]
    assert any("image" in note and "not used" in note for note in record["notes"])

    again = json.loads(batchfn(host, "environment", "create", "--name", "tab-env",
                               "--conda-file", str(file)).output)
    assert again["version"] == "1" and again["digest"] == record["digest"]  # same content

    shown = batchfn(host, "environment", "show", "--name", "tab-env", "--label", "latest",
                    "--query", "requirements[0]", "-o", "tsv")
    assert shown.output.strip() == "tabulate==0.9.0"
    listed = json.loads(batchfn(host, "environment", "list").output)
    assert "tab-env" in [item["name"] for item in listed]


@pytest.mark.parametrize(("lines", "python", "status", "words"), [
    (["numpy==0.0.1"], "3.11", 422, "cannot be installed"),  # uv's own explanation
    (["-e ./local"], "3.11", 400, "pip options"),
    ([], "3.8.5", 400, "Python '3.8' is not supported"),
    (["tabulate"], "3.12", 422, "Python 3.12"),
])
def test_bad_environments_are_refused_and_nothing_is_stored(client, tmp_path, lines, python,
                                                            status, words):
    name = f"bad-env-{status}-{python.replace('.', '')}-{len(lines)}"
    with pytest.raises(ApiError) as caught:
        client.create_environment(document={"name": name, "conda_file": str(
            conda(tmp_path, *lines, python=python))})
    assert caught.value.status == status and words in str(caught.value)
    with pytest.raises(ApiError) as missing:
        client.list_environments(name)
    assert missing.value.status == 404


def test_conda_only_packages_are_named(client):
    with pytest.raises(ApiError) as caught:
        client.create_environment(document={"name": "conda-only", "conda_file": {
            "dependencies": ["python=3.11", "cudatoolkit=11.8", "numpy=1.26"]}})
    assert caught.value.status == 400 and "cudatoolkit=11.8" in str(caught.value)


def test_a_script_needing_a_package_the_image_lacks_scores_with_its_conda_file(
        host, client, tmp_path):
    folder = tmp_path / "deployment"
    (folder / "environment").mkdir(parents=True)
    conda(folder / "environment", "tabulate==0.9.0")
    (folder / "model").mkdir()
    (folder / "model" / "weights.txt").write_text("1")
    (folder / "deployment.yml").write_text(
        f"name: tab-dpl\nendpoint_name: {ENDPOINT}\nmodel:\n  path: model\n"
        f"code_configuration:\n  code: {SCORING_SCRIPTS}\n  scoring_script: needs_tabulate.py\n"
        "environment:\n  name: tab-dpl-env\n"
        "  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest\n"
        "  conda_file: environment/conda.yaml\n")
    created = batchfn(host, "batch-deployment", "create", "--file",
                      str(folder / "deployment.yml"), "--set-default")
    assert created.exit_code == 0, created.output
    deployment = json.loads(created.stdout)
    assert deployment["environment"]["name"] == "tab-dpl-env"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(3):
        (inputs / f"f{i}.txt").write_text(str(i))
    uri, _ = client.upload_input(inputs)
    final = client.wait_job(client.invoke(ENDPOINT, uri)["name"], timeout=180)
    assert final["status"] == "Completed", final
    assert final["progress"]["files"]["succeeded"] == 3
    lines = client.download_job_output(final["name"], "score", tmp_path / "out").read_text()
    assert sorted(lines.splitlines()) == ["f0.txt True", "f1.txt True", "f2.txt True"]


# What an Azure ML-exported MLflow model pins, against the image's numpy 2 and pandas 3.
CONFLICTING_PINS = ["mlflow==3.17.2", "cloudpickle==3.1.3", "numpy==1.26.4", "pandas==2.2.3",
                    "scikit-learn==1.9.1", "scipy==1.17.1"]


def test_an_mlflow_model_pinning_older_numpy_and_pandas_scores_with_its_files_unchanged(
        host, client, scratch, tmp_path):
    assert int(numpy.__version__.split(".")[0]) >= 2  # the image's: the pins conflict
    assert int(pandas.__version__.split(".")[0]) >= 3
    model = tmp_path / "model"  # the sample's model, with the pins of an older workspace
    shutil.copytree(SAMPLE_DIR / "deployment-mlflow" / "model", model)
    (model / "requirements.txt").write_text("\n".join(CONFLICTING_PINS) + "\n")
    (model / "conda.yaml").write_text(
        "channels:\n- conda-forge\ndependencies:\n- python=3.11.7\n- pip<=23.2.1\n- pip:\n"
        + "".join(f"  - {pin}\n" for pin in CONFLICTING_PINS) + "name: mlflow-env\n")
    files = {path.name: path.read_bytes() for path in model.iterdir()}
    deployment = client.create_deployment(document={
        "name": "old-mlflow", "endpoint_name": ENDPOINT, "type": "model",
        "model": {"name": "old-pins-mlflow", "type": "mlflow_model", "path": str(model)},
        "settings": {"mini_batch_size": 2, "output_action": "append_row"}})
    environment = deployment["environment"]
    assert {"numpy==1.26.4", "pandas==2.2.3"} <= set(environment["resolved"])

    data = prepare(tmp_path / "cancer-data")
    final = client.wait_job(client.invoke(ENDPOINT, data["folder"],
                                          deployment_name="old-mlflow")["name"], timeout=600)
    assert final["status"] == "Completed", final
    output = client.download_job_output(final["name"], "score", tmp_path / "out")
    value, rows = accuracy(output, data["labels"])
    assert rows == 171 and value >= 0.95
    # Scored inside its environment: numpy 1.26 and pandas 2.2 beside the image's.
    work = scratch / "work" / "envs"
    assert list(work.glob("*/lib/python*/site-packages/numpy-1.26.4.dist-info"))
    assert list(work.glob("*/lib/python*/site-packages/pandas-2.2.3.dist-info"))
    assert {path.name: path.read_bytes() for path in model.iterdir()} == files
