"""Azure ML's MNIST tutorial, Python tab, through batchfn's azure-ai-ml-shaped facade
(samples/mnist/sdk_tutorial.py: only the imports and the client construction differ from
the tutorial, compute creation and the public input URL included) against a real devhost."""

from __future__ import annotations

import runpy
from collections.abc import Iterator

import pytest

from batchfn.client import BatchfnClient
from batchfn.errors import InvalidRequestError, JobError, NotFoundError
from batchfn.ml import Input, MLClient
from batchfn.ml.entities import BatchEndpoint, ModelBatchDeployment
from tests.conftest import REPO
from tests.e2e.tutorial_support import (
    SAMPLE_DIR,
    TutorialSite,
    check_scores,
    copy_tutorial,
    tutorial_site,
)

FILES = 100  # of the 1,000-digit sample: four jobs of it keep the test short


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TutorialSite]:
    with tutorial_site(tmp_path_factory.mktemp("tutorial-sdk"), FILES) as running:
        yield running


@pytest.fixture(scope="module")
def host(site):
    return site.host


@pytest.fixture(scope="module")
def tutorial(site, tmp_path_factory) -> dict:
    """Run the tutorial's Python tab as a script; its variables at the end."""
    folder = copy_tutorial(tmp_path_factory.mktemp("mnist") / "mnist-classifier")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BATCHFN_URL", site.host.url)
        patch.setenv("BATCHFN_KEY", site.host.key)
        patch.chdir(folder)
        return runpy.run_path(str(SAMPLE_DIR / "sdk_tutorial.py"))


def test_the_tutorial_scores_every_file_on_both_deployments(tutorial, host, site, tmp_path):
    labels = site.labels
    ml_client: MLClient = tutorial["ml_client"]
    endpoint = tutorial["endpoint_name"]
    client = BatchfnClient(url=host.url, key=host.key)
    jobs = sorted(client.list_jobs(endpoint), key=lambda job: job["created_at"])
    assert [job["deployment_name"] for job in jobs] == [
        "mnist-torch-dpl", "mnist-torch-dpl", "mnist-torch-dpl", "mnist-keras-dpl"]
    for job in jobs:
        ml_client.jobs.stream(job["name"])
    shown = [ml_client.jobs.get(job["name"]) for job in jobs]
    assert [job.status for job in shown] == ["Completed"] * 4
    # The datastore output of params_override, with the random file name.
    assert shown[1].outputs["score"]["container"] == "batchfn-data"
    assert shown[1].outputs["score"]["path"] == f"{endpoint}/{tutorial['filename']}"
    # mini_batch_size 20 and compute.instance_count 5 for the third job only.
    settings = client.get_job(jobs[2]["name"])["settings"]
    assert (settings["mini_batch_size"], settings["instance_count"]) == (20, 5)
    assert client.get_job(jobs[0]["name"])["settings"]["mini_batch_size"] == 10
    for index in (0, 3):
        target = tmp_path / str(index)
        ml_client.jobs.download(name=jobs[index]["name"], download_path=target,
                                output_name="score")
        lines = (target / "named-outputs" / "score" / "predictions.csv").read_text().splitlines()
        check_scores(lines, labels)
    # Every invoke read the public URL's stand-in, the data asset, on the tutorial's compute.
    assert {job.status for job in shown} == {"Completed"}
    for job in jobs:
        record = client.get_job(job["name"])
        assert record["input"]["data_asset"] == "azureml:mnist-sample:1"
        assert record["compute"] == {"name": "batch-cluster", "max_instances": 2,
                                     "queue": "minibatches"}


def test_the_tutorial_created_its_compute_once(tutorial):
    ml_client: MLClient = tutorial["ml_client"]
    cluster = ml_client.compute.get("batch-cluster")
    assert (cluster.min_instances, cluster.max_instances, cluster.description) == (
        0, 2, "CPU cluster compute")
    assert [c.name for c in ml_client.compute.list()] == ["batch-cluster", "default"]
    # Run again, the tutorial's guard finds it and creates nothing.
    assert any(filter(lambda m: m.name == "batch-cluster", ml_client.compute.list()))


def test_the_tutorial_leaves_no_endpoint_and_keeps_the_jobs(tutorial, host):
    ml_client: MLClient = tutorial["ml_client"]
    with pytest.raises(NotFoundError):
        ml_client.batch_endpoints.get(tutorial["endpoint_name"])
    assert ml_client.jobs.get(tutorial["job"].name).name == tutorial["job"].name
    # The deployment entity came back as azure-ai-ml shapes it.
    deployment: ModelBatchDeployment = tutorial["deployment_keras"]
    assert deployment.settings.retry_settings.timeout == 30
    assert tutorial["model"].name == "mnist-classifier-keras" and tutorial["model"].version
    assert tutorial["model"].tags == {"task": "classification", "framework": "keras"}


def test_facade_errors_are_clear(host, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    ml_client = MLClient(url=host.url, key=host.key)
    with pytest.raises(NotFoundError, match="does not exist"):
        ml_client.batch_endpoints.invoke(
            endpoint_name="no-such-endpoint",
            input=Input(path="azureml://datastores/workspaceblobstore/paths/anything"))
    with pytest.raises(InvalidRequestError, match="mltable"):
        ml_client.batch_endpoints.invoke(endpoint_name="any-endpoint",
                                         input=Input(path=str(folder), type="mltable"))
    with pytest.raises(InvalidRequestError, match="params_override key"):
        ml_client.batch_endpoints.invoke(endpoint_name="any-endpoint",
                                         input=Input(path=str(folder)),
                                         params_override=[{"colour": "blue"}])
    with pytest.raises(InvalidRequestError, match="pipeline"):
        ml_client.batch_deployments.begin_create_or_update(_pipeline_deployment())
    with pytest.raises(TypeError):
        ml_client.begin_create_or_update(object())


def _pipeline_deployment() -> ModelBatchDeployment:
    class PipelineDeployment(ModelBatchDeployment):
        def _to_document(self) -> dict:
            return {**super()._to_document(), "type": "pipeline"}

    return PipelineDeployment(name="pipe", endpoint_name="any-endpoint",
                              model="azureml:m:1")


def test_a_failed_job_raises_on_stream(host, tmp_path, unique_name):
    ml_client = MLClient(url=host.url, key=host.key)
    ml_client.begin_create_or_update(BatchEndpoint(name=unique_name)).result()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.txt").write_text("1")
    deployment = ModelBatchDeployment(
        name="fails", endpoint_name=unique_name, model=str(tmp_path / "model"),
        code_path=str(REPO / "tests" / "scoring_scripts"), scoring_script="always_fails.py")
    deployment.settings.error_threshold = 0
    ml_client.begin_create_or_update(deployment).result()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a")
    job = ml_client.batch_endpoints.invoke(
        endpoint_name=unique_name, input=Input(path=str(tmp_path / "in")),
        params_override=[{"retry_settings.max_retries": 0}])
    with pytest.raises(JobError) as failed:
        ml_client.jobs.stream(job.name, poll=0.2)
    assert failed.value.job["status"] == "Failed"
