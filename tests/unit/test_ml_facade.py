"""The azure-ai-ml-shaped entities become the Azure ML documents batchfn's parser takes,
and Azure ML's invoke arguments become batchfn job settings."""

from __future__ import annotations

import pytest
from batchfn.contract.deployment_spec import (
    AssetReference,
    DeploymentSpec,
    EndpointSpec,
    FolderSource,
)
from batchfn.contract.errors import InvalidRequest

from batchfn.ml.constants import AssetTypes, BatchDeploymentOutputAction
from batchfn.ml.entities import (
    BatchDeployment,
    BatchEndpoint,
    BatchRetrySettings,
    CodeConfiguration,
    Environment,
    Input,
    Model,
    ModelBatchDeployment,
    ModelBatchDeploymentSettings,
    Output,
    ResourceConfiguration,
)
from batchfn.ml.operations import Poller, _one_input, _output_path, _params_override


def test_the_tutorials_deployment_entity_parses_like_its_yaml():
    deployment = ModelBatchDeployment(
        name="mnist-torch-dpl", endpoint_name="mnist-batch",
        model=Model(name="mnist-classifier-torch", version="3", type=AssetTypes.CUSTOM_MODEL),
        code_configuration=CodeConfiguration(code="deployment-torch/code/",
                                             scoring_script="batch_driver.py"),
        environment=Environment(name="env", image="mcr.microsoft.com/azureml/openmpi"),
        compute="batch-cluster",
        settings=ModelBatchDeploymentSettings(
            max_concurrency_per_instance=2, mini_batch_size=10, instance_count=2,
            output_action=BatchDeploymentOutputAction.APPEND_ROW,
            output_file_name="predictions.csv",
            retry_settings=BatchRetrySettings(max_retries=3, timeout=30),
            environment_variables={"MODE": "fast"}, logging_level="info"))
    spec = DeploymentSpec.from_document(deployment._to_document())
    assert spec.model == AssetReference("mnist-classifier-torch", "3")
    assert spec.model_type == "custom_model"
    assert spec.code == FolderSource(path="deployment-torch/code/")
    assert (spec.settings.instance_count, spec.settings.max_concurrency_per_instance) == (2, 2)
    assert spec.environment_variables == {"MODE": "fast"}
    assert [item.field for item in spec.ignored] == ["environment.image"]
    assert spec.compute == "batch-cluster"


def test_an_mlflow_model_deployment_needs_no_code_configuration():
    deployment = ModelBatchDeployment(
        name="classifier-mlflow", endpoint_name="heart",
        model=Model(name="heart-classifier", version="1", type=AssetTypes.MLFLOW_MODEL),
        settings=ModelBatchDeploymentSettings(mini_batch_size=2))
    document = deployment._to_document()
    assert "code_configuration" not in document
    spec = DeploymentSpec.from_document(document)
    assert (spec.code, spec.scoring_script, spec.model_type) == (None, None, "mlflow_model")
    record = {"name": "classifier-mlflow", "endpoint_name": "heart", "code_configuration": None,
              "model": {"name": "heart-classifier", "version": "1"}, "settings": {}}
    assert ModelBatchDeployment._from_api(record).code_configuration is None


def test_promoted_code_path_and_the_older_flat_deployment():
    deployment = BatchDeployment(name="blue", endpoint_name="mnist", model="azureml:m@latest",
                                 code_path="code", scoring_script="score.py",
                                 mini_batch_size=5, instance_count=3,
                                 resources=ResourceConfiguration(instance_type="big"),
                                 retry_settings=BatchRetrySettings(timeout=9))
    spec = DeploymentSpec.from_document(deployment._to_document())
    assert spec.scoring_script == "score.py" and spec.model == AssetReference("m", "latest")
    assert (spec.settings.mini_batch_size, spec.settings.instance_count) == (5, 3)
    assert spec.settings.retry_settings.timeout == 9
    assert [item.field for item in spec.ignored] == ["resources.instance_type"]


def test_an_inline_model_is_uploaded_under_its_name():
    document = ModelBatchDeployment(
        name="blue", endpoint_name="mnist",
        model=Model(name="clf", path="model/", tags={"a": "b"}),
        code_path="code", scoring_script="score.py")._to_document()
    spec = DeploymentSpec.from_document(document)
    assert spec.model == FolderSource(path="model/", name="clf", tags={"a": "b"})
    assert spec.ignored == ()


def test_endpoint_defaults_are_editable_as_in_azure_ml():
    endpoint = BatchEndpoint(name="mnist-batch", tags={"type": "deep-learning"})
    endpoint.defaults.deployment_name = "blue"
    spec = EndpointSpec.from_document(endpoint._to_document())
    assert (spec.default_deployment, spec.ignored) == ("blue", ())
    from_dict = BatchEndpoint(name="e", defaults={"deployment_name": "x"})
    assert from_dict.defaults.deployment_name == "x"


def test_params_override_as_the_tutorial_writes_it():
    settings, path = _params_override([
        {"output_dataset.datastore_id": "azureml:/datastores/workspaceblobstore"},
        {"output_dataset.path": "/mnist-batch/"}, {"output_file_name": "p.csv"},
        {"mini_batch_size": "20"}, {"compute.instance_count": "5"}])
    assert settings == {"output_file_name": "p.csv", "mini_batch_size": "20",
                        "instance_count": "5"}
    assert path == "azureml://datastores/workspaceblobstore/paths/mnist-batch"
    assert _params_override([{"error_threshold": 3}]) == ({"error_threshold": 3}, None)
    assert _params_override([{"input_format": "csv"}, {"passthrough_columns": "id"}]) == (
        {"input_format": "csv", "passthrough_columns": "id"}, None)
    with pytest.raises(InvalidRequest, match="params_override key 'colour'"):
        _params_override([{"colour": "blue"}])


def test_outputs_and_inputs():
    settings: dict = {}
    file = Output(type=AssetTypes.URI_FILE, path="azureml://datastores/workspaceblobstore/"
                                                 "paths/out/scores.csv")
    assert _output_path({"score": file}, None, settings) == (
        "azureml://datastores/workspaceblobstore/paths/out")
    assert settings == {"output_file_name": "scores.csv"}
    assert _output_path(None, {"score": Input(path="https://x/c/out")}, {}) == "https://x/c/out"
    assert _output_path(None, None, {}) is None
    assert _one_input(None, {"data": Input(path="d")}).path == "d"
    assert _one_input(Input(path="azureml:my-data@latest"), None).path == "azureml:my-data@latest"
    for bad_input, bad_inputs, fragment in [
        (None, None, "exactly one input"),
        (Input(path="a"), {"b": Input(path="b")}, "not both"),
        (Input(path="a", type=AssetTypes.MLTABLE), None, "mltable"),
        (Input(), None, "with a path"),
    ]:
        with pytest.raises(InvalidRequest, match=fragment):
            _one_input(bad_input, bad_inputs)


def test_pollers():
    finished = Poller.finished("done")
    assert (finished.done(), finished.status(), finished.result()) == (True, "Succeeded", "done")
    waits = []
    pending = Poller(lambda timeout: waits.append(timeout) or "stopped")
    assert (pending.done(), pending.status()) == (False, "InProgress")
    assert pending.result(5) == "stopped" and pending.result() == "stopped" and waits == [5]
