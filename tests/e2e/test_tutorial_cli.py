"""Azure ML's MNIST tutorial, Azure CLI tab, as published: samples/mnist/tutorial_cli.sh is
every `az ml` line of it with `az ml` replaced by `batchfn` (compute create, model create,
endpoint, two deployments, invokes of the public sample URL, job show --web, stream,
download, list-jobs, the default switch, deletes), run by bash against a real devhost."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.tutorial_support import (
    SAMPLE_DIR,
    TutorialSite,
    check_scores,
    copy_tutorial,
    tutorial_site,
)

FILES = 100  # of the 1,000-digit sample: four jobs of it keep the test short
SCRIPT_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TutorialSite]:
    with tutorial_site(tmp_path_factory.mktemp("tutorial-cli"), FILES) as running:
        yield running


@pytest.fixture(scope="module")
def ran(site: TutorialSite, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the script in a copy of the tutorial's folder; what it printed and left there."""
    folder = copy_tutorial(tmp_path_factory.mktemp("mnist") / "mnist-classifier")
    # The "browser" `job show --web` opens: it notes the URL it was given.
    browser = folder.parent / "browser"
    browser.write_text('#!/bin/sh\necho "$1" >> "$(dirname "$0")/opened.txt"\n')
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "BATCHFN_URL": site.host.url, "BATCHFN_KEY": site.host.key,
           "BROWSER": str(browser),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    completed = subprocess.run(["bash", str(SAMPLE_DIR / "tutorial_cli.sh")], cwd=folder,
                               env=env, capture_output=True, text=True,
                               timeout=SCRIPT_TIMEOUT_S)
    assert completed.returncode == 0, (completed.stderr[-4000:], site.host.logs()[-4000:])
    opened = (folder.parent / "opened.txt")
    return {"stdout": completed.stdout, "stderr": completed.stderr, "folder": folder,
            "opened": opened.read_text().split() if opened.exists() else []}


def test_the_script_is_the_tutorials_cli_tab_with_only_az_ml_replaced():
    lines = [line for line in (SAMPLE_DIR / "tutorial_cli.sh").read_text().splitlines()
             if line.strip() and not line.startswith(("#", "set -"))]
    commands = [line for line in lines if "batchfn " in line]
    assert not any("az ml" in line for line in lines)
    # The tutorial's own lines, each present as published (with `batchfn` for `az ml`).
    for published in [
        "batchfn compute create -n batch-cluster --type amlcompute --min-instances 0 "
        "--max-instances 5",
        'batchfn model create --name $MODEL_NAME --type "custom_model" --path '
        '"deployment-torch/model"',
        "batchfn batch-endpoint create --file endpoint.yml  --name $ENDPOINT_NAME",
        "batchfn batch-deployment create --file deployment-torch/deployment.yml "
        "--endpoint-name $ENDPOINT_NAME --set-default",
        "batchfn batch-deployment show --name $DEPLOYMENT_NAME --endpoint-name $ENDPOINT_NAME",
        "JOB_NAME=$(batchfn batch-endpoint invoke --name $ENDPOINT_NAME --input "
        "https://azuremlexampledata.blob.core.windows.net/data/mnist/sample --input-type "
        "uri_folder --query name -o tsv)",
        "batchfn job show -n $JOB_NAME --web",
        "JOB_NAME=$(batchfn batch-endpoint invoke --name $ENDPOINT_NAME --input "
        "https://azuremlexampledata.blob.core.windows.net/data/mnist/sample --output-path "
        "$OUTPUT_PATH --set output_file_name=$OUTPUT_FILE_NAME --query name -o tsv)",
        "JOB_NAME=$(batchfn batch-endpoint invoke --name $ENDPOINT_NAME --input "
        "https://azuremlexampledata.blob.core.windows.net/data/mnist/sample --mini-batch-size "
        "20 --instance-count 5 --query name -o tsv)",
        "batchfn batch-deployment create --file deployment-keras/deployment.yml "
        "--endpoint-name $ENDPOINT_NAME",
        "batchfn batch-endpoint update --name $ENDPOINT_NAME --set "
        "defaults.deployment_name=$DEPLOYMENT_NAME",
        "batchfn batch-deployment delete --name mnist-torch-dpl --endpoint-name "
        "$ENDPOINT_NAME --yes",
        "batchfn batch-endpoint delete --name $ENDPOINT_NAME --yes",
    ]:
        assert published in commands, published
    # The sample's YAML files are the tutorial's: they name the compute it creates.
    for deployment in ("deployment-torch", "deployment-keras"):
        assert "compute: azureml:batch-cluster" in (
            SAMPLE_DIR / deployment / "deployment.yml").read_text()


def test_every_job_completes_and_scores_the_digits(ran, site):
    client = site.client
    jobs = sorted(client.list_jobs("mnist-batch"), key=lambda job: job["created_at"])
    assert [job["deployment_name"] for job in jobs] == [
        "mnist-torch-dpl", "mnist-torch-dpl", "mnist-torch-dpl", "mnist-keras-dpl"]
    shown = [client.get_job(job["name"]) for job in jobs]
    assert [job["status"] for job in shown] == ["Completed"] * 4
    # Each read the public URL's stand-in, the data asset, and says so.
    for job in shown:
        assert job["input"]["uri"] == ("https://azuremlexampledata.blob.core.windows.net/data/"
                                       "mnist/sample")
        assert job["input"]["data_asset"] == "azureml:mnist-sample:1"
        assert job["compute"]["name"] == "batch-cluster"
        assert job["compute"]["max_instances"] == 5
    # --output-path and output_file_name of the second invoke; the overrides of the third.
    assert shown[1]["output"]["score"]["container"] == "batchfn-data"
    assert shown[1]["output"]["score"]["path"].startswith("mnist-batch/predictions_")
    assert (shown[2]["settings"]["mini_batch_size"], shown[2]["settings"]["instance_count"]) \
        == (20, 5)
    # The first job's scores, downloaded by the script as az ml lays them out.
    downloaded = ran["folder"] / "named-outputs" / "score" / "predictions.csv"
    check_scores(downloaded.read_text().splitlines(), site.labels)
    # list-jobs printed the keras job's name, the only job of that deployment.
    assert f'"{jobs[3]["name"]}"' in ran["stdout"]


def test_the_registered_model_is_what_the_deployment_uploads(ran, site):
    # `model create` registered version 1; the deployment's inline model (same folder,
    # same name) is that very version: no second upload, no second version.
    versions = site.client.list_asset_versions("model", "mnist-classifier-torch")
    assert [(v["version"], v["type"]) for v in versions] == [("1", "custom_model")]
    assert [v["version"] for v in site.client.list_asset_versions(
        "model", "mnist-classifier-keras")] == ["1"]
    computes = {c["name"]: c for c in site.client.list_computes()}
    assert (computes["batch-cluster"]["min_instances"],
            computes["batch-cluster"]["max_instances"]) == (0, 5)


def test_job_show_web_opened_the_jobs_page_and_the_endpoint_is_gone(ran, site):
    first_job = sorted(site.client.list_jobs("mnist-batch"),
                       key=lambda job: job["created_at"])[0]["name"]
    assert len(ran["opened"]) == 1
    assert ran["opened"][0].startswith(f"{site.host.url}/api/studio/#")
    assert f"view=%2Fjobs%2F{first_job}" in ran["opened"][0]
    assert "opened " in ran["stderr"] and site.host.key not in ran["stderr"]
    assert "mnist-batch" not in [e["name"] for e in site.client.list_endpoints()]
    # The update switched the default to keras before the endpoint went.
    shown = json.dumps({"Name": "mnist-batch", "Defaults": {"deployment_name":
                                                            "mnist-keras-dpl"}}, indent=2)
    assert shown in ran["stdout"]
