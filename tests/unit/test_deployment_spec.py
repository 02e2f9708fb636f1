"""Parsing Azure ML endpoint.yml / deployment.yml documents, and the scoring-script check.

The field lists below are Azure ML's: the batch endpoint and model batch deployment YAML
references, and the fields of azure-ai-ml's schema classes (DeploymentSchema,
BatchDeploymentSchema, ModelBatchDeploymentSchema, ModelBatchDeploymentSettingsSchema,
BatchRetrySettingsSchema, JobResourceConfigurationSchema, CodeConfigurationSchema, the
model schema, EndpointSchema, BatchEndpointSchema, BatchEndpointsDefaultsSchema). Every one
is fed to the parser: it is either honoured or reported in `ignored` with a reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.contract.deployment_spec import (
    AssetReference,
    DeploymentSpec,
    EndpointSpec,
    FolderSource,
    load_document,
    with_uploaded_assets,
)
from shared.contract.errors import InvalidRequest, Unprocessable
from shared.contract.script_check import check_scoring_script
from shared.contract.settings import DeploymentSettings

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "mnist"

MINIMAL = {"name": "blue", "endpoint_name": "mnist",
           "model": {"path": "model"},
           "code_configuration": {"code": "code", "scoring_script": "score.py"}}


def test_sample_deployment_parses_with_ignored_keys():
    spec = DeploymentSpec.from_document(
        load_document(SAMPLES / "deployment-torch" / "deployment.yml"),
        base_dir=SAMPLES / "deployment-torch")
    assert spec.model == FolderSource(path="model", name="mnist-classifier-torch")
    assert spec.code == FolderSource(path="code")
    assert spec.scoring_script == "batch_driver.py"
    assert _fields(spec.ignored) == ["$schema", "environment.image"]
    assert spec.environment.python == "3.11" and "pandas" in spec.environment.requirements
    assert spec.compute == "batch-cluster"
    assert spec.settings.mini_batch_size == 10


def test_defaults_are_azure_mls():
    spec = DeploymentSpec.from_document(MINIMAL)
    assert spec.settings == DeploymentSettings()
    assert spec.settings.output_file_name == "predictions.csv"
    assert spec.settings.retry_settings.timeout == 30
    assert spec.settings.error_threshold == -1


def test_legacy_top_level_settings_and_resources():
    spec = DeploymentSpec.from_document({
        **MINIMAL, "mini_batch_size": 3, "output_action": "summary_only",
        "retry_settings": {"max_retries": 0, "timeout": 5}, "logging_level": "DEBUG",
        "resources": {"instance_count": 4, "instance_type": "x"},
        "settings": {"error_threshold": 7}})
    settings = spec.settings
    assert (settings.mini_batch_size, settings.output_action, settings.logging_level) == (
        3, "summary_only", "debug")
    assert settings.retry_settings.max_retries == 0 and settings.instance_count == 4
    assert settings.error_threshold == 7
    assert _fields(spec.ignored) == ["resources.instance_type"]


@pytest.mark.parametrize(("model", "expected"), [
    ("azureml:mnist-classifier-torch:3", AssetReference("mnist-classifier-torch", "3")),
    ("azureml:mnist-classifier-torch@latest",
     AssetReference("mnist-classifier-torch", "latest")),
    ({"name": "clf", "version": 2}, AssetReference("clf", "2")),
    ({"path": "./model"}, FolderSource(path="./model")),
    ("model", FolderSource(path="model")),
])
def test_model_forms(model, expected):
    assert DeploymentSpec.from_document({**MINIMAL, "model": model}).model == expected


def test_explicit_names_win_and_body_for_api():
    spec = DeploymentSpec.from_document(MINIMAL, endpoint_name="other", name="green")
    assert (spec.endpoint_name, spec.name) == ("other", "green")
    body = with_uploaded_assets(MINIMAL, AssetReference("m", "1"), AssetReference("c", "2"))
    assert body["model"] == "azureml:m:1"
    assert body["code_configuration"] == {"code": "azureml:c:2", "scoring_script": "score.py"}
    assert MINIMAL["model"] == {"path": "model"}  # the original is untouched


@pytest.mark.parametrize(("change", "fragment"), [
    ({"name": "b"}, "invalid deployment name"),
    ({"name": "../etc"}, "invalid deployment name"),
    ({"endpoint_name": "9lives"}, "invalid endpoint name"),
    ({"type": "pipeline"}, "pipeline deployments"),
    ({"type": "serving"}, "expected model"),
    ({"model": {"path": "m", "type": "triton_model"}}, "model.type"),
    ({"model": "azureml://registries/reg/models/m/versions/1"}, "registry"),
    ({"model": {"path": "azureml://datastores/x/paths/m"}}, "not a local folder"),
    ({"environment_variables": {"1BAD": "x"}}, "not a valid environment variable name"),
    ({"environment_variables": {"A": "x"}, "settings": {"environment_variables": {"A": "y"}}},
     "set twice"),
    ({"resources": {"instance_count": 2}, "settings": {"instance_count": 3}}, "disagree"),
    ({"mini_batch_size": 5, "settings": {"mini_batch_size": 6}}, "disagree"),
    ({"model": None}, "model must be a mapping"),
    ({"model": {"name": "x"}}, "model needs 'path'"),
    ({"model": "azureml:x"}, "invalid asset reference"),
    ({"model": "azureml:x:v1"}, "invalid asset version"),
    ({"code_configuration": {"code": "code"}}, "needs 'code'"),
    ({"code_configuration": None, "model": {"path": "m", "type": "custom_model"}},
     "custom_model deployment needs code_configuration"),
    ({"settings": {"input_format": "xlsx"}}, "input_format"),
    ({"settings": {"passthrough_columns": ["id"]}}, "needs a tabular input_format"),
    ({"settings": {"input_format": "csv", "passthrough_columns": ["id", "id"]}},
     "named twice"),
    ({"code_configuration": {"code": "code", "scoring_script": "../s.py"}}, "invalid"),
    ({"mini_batch_size": 0}, "mini_batch_size"),
    ({"settings": {"retry_settings": {"timeout": -1}}}, "timeout"),
    ({"settings": {"output_action": "explode"}}, "output_action"),
    ({"settings": {"unknown_thing": 1}}, "unknown setting"),
    ({"settings": {"environment_variables": ["A=1"]}}, "must be a mapping"),
    ({"tags": ["a"]}, "tags must be a mapping"),
])
def test_invalid_deployments(change, fragment):
    with pytest.raises(InvalidRequest, match=fragment.replace("(", r"\(")):
        DeploymentSpec.from_document({**MINIMAL, **change})


def _fields(ignored) -> list[str]:
    assert all(item.reason for item in ignored)
    return [item.field for item in ignored]


# Every field of Azure ML's model batch deployment, `settings:` form (type: model).
SETTINGS_FORM = {
    "$schema": "https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json",
    "name": "blue", "endpoint_name": "mnist", "description": "d", "tags": {"team": "ml"},
    "type": "model", "id": "/subscriptions/s/deployments/blue", "properties": {"p": "1"},
    "provisioning_state": "Succeeded",
    "model": {"$schema": "https://azuremlschemas.azureedge.net/latest/model.schema.json",
              "name": "clf", "version": 3, "path": "model", "type": "custom_model",
              "description": "m", "tags": {"a": "b"}, "properties": {"c": "d"},
              "flavors": {"python_function": {}}, "stage": "Production"},
    "code_configuration": {"code": "code", "scoring_script": "score.py"},
    "environment": {"name": "env", "image": "mcr.microsoft.com/azureml/openmpi4.1.0",
                    "conda_file": {"dependencies": ["python=3.11", {"pip": ["pandas"]}]}},
    "compute": "azureml:batch-cluster",
    "resources": {"instance_count": 2, "instance_type": "Standard_NC6s_v3",
                  "properties": {"x": 1}, "shm_size": "2g", "docker_args": "--ipc=host"},
    "environment_variables": {"TOP": "1"},
    "settings": {
        "max_concurrency_per_instance": 3, "mini_batch_size": 7, "instance_count": 2,
        "output_action": "append_row", "output_file_name": "out.csv",
        "retry_settings": {"max_retries": 5, "timeout": 60}, "error_threshold": 10,
        "logging_level": "warning", "environment_variables": {"BATCH_SIZE": 64, "EMPTY": None},
    },
}
SETTINGS_FORM_IGNORED = [
    "$schema", "environment.image", "id", "model.$schema", "model.flavors", "model.properties",
    "model.stage", "properties", "provisioning_state", "resources.docker_args",
    "resources.instance_type", "resources.properties", "resources.shm_size",
]


def test_every_field_of_the_settings_form_is_honoured_or_ignored_with_a_reason():
    spec = DeploymentSpec.from_document(SETTINGS_FORM)
    assert _fields(spec.ignored) == SETTINGS_FORM_IGNORED
    assert spec.model == FolderSource(path="model", name="clf", version="3", description="m",
                                      tags={"a": "b"})
    assert spec.compute == "batch-cluster"
    assert spec.model_type == "custom_model"
    assert (spec.description, spec.tags) == ("d", {"team": "ml"})
    assert spec.environment_variables == {"TOP": "1", "BATCH_SIZE": "64", "EMPTY": ""}
    assert spec.settings.to_dict() == {
        "mini_batch_size": 7, "max_concurrency_per_instance": 3, "instance_count": 2,
        "retry_settings": {"max_retries": 5, "timeout": 60.0}, "error_threshold": 10,
        "output_action": "append_row", "output_file_name": "out.csv",
        "output_format": "azureml", "logging_level": "warning", "input_format": "files",
        "passthrough_columns": [], "deadline": None}


def test_every_field_of_the_legacy_top_level_form():
    legacy = {key: value for key, value in SETTINGS_FORM.items()
              if key not in ("type", "settings")}
    legacy.update({"model": "azureml:clf@latest", "max_concurrency_per_instance": 3,
                   "mini_batch_size": 7, "output_action": "summary_only",
                   "output_file_name": "out.csv", "error_threshold": 10,
                   "retry_settings": {"max_retries": 5, "timeout": 60},
                   "logging_level": "debug", "job_definition": {"type": "pipeline"},
                   "component": "azureml:c:1"})
    spec = DeploymentSpec.from_document(legacy)
    assert spec.model == AssetReference("clf", "latest")
    assert (spec.settings.mini_batch_size, spec.settings.output_action,
            spec.settings.logging_level, spec.settings.instance_count) == (
        7, "summary_only", "debug", 2)
    ignored = {item.field: item.reason for item in spec.ignored}
    assert "pipeline deployments" in ignored["component"]
    assert "pipeline deployments" in ignored["job_definition"]
    assert "compute" not in ignored
    assert spec.environment_variables == {"TOP": "1"}


def test_settings_instance_count_and_environment_variables_stand_alone():
    spec = DeploymentSpec.from_document({**MINIMAL, "settings": {
        "instance_count": 4, "environment_variables": {"MODE": "fast"}}})
    assert spec.settings.instance_count == 4
    assert spec.environment_variables == {"MODE": "fast"}
    assert spec.ignored == ()


def test_unknown_fields_are_ignored_as_possible_typos():
    spec = DeploymentSpec.from_document({**MINIMAL, "setings": {"mini_batch_size": 3}})
    assert [(item.field, "typo" in item.reason) for item in spec.ignored] == [("setings", True)]


@pytest.mark.parametrize(("reference", "expected"), [
    ("azureml:/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/"
     "workspaces/ws/codes/score-code/versions/4", AssetReference("score-code", "4")),
    ("azureml:score-code:4", AssetReference("score-code", "4")),
    ("azureml:score-code@latest", AssetReference("score-code", "latest")),
])
def test_registered_code_references(reference, expected):
    spec = DeploymentSpec.from_document(
        {**MINIMAL, "code_configuration": {"code": reference, "scoring_script": "score.py"}})
    assert spec.code == expected


def test_model_type_survives_the_upload():
    document = {**MINIMAL, "model": {"path": "model", "type": "mlflow_model", "tags": {"a": 1}}}
    body = with_uploaded_assets(document, AssetReference("m", "2"), AssetReference("c", "1"))
    assert body["model"] == {"name": "m", "version": "2", "type": "mlflow_model",
                             "tags": {"a": 1}}
    spec = DeploymentSpec.from_document(body)
    assert (spec.model, spec.model_type) == (AssetReference("m", "2"), "mlflow_model")


def test_an_mlflow_model_needs_no_code_configuration():
    document = {key: value for key, value in MINIMAL.items() if key != "code_configuration"}
    document["model"] = {"path": "model", "type": "mlflow_model"}
    spec = DeploymentSpec.from_document(document)
    assert (spec.code, spec.scoring_script) == (None, None)
    body = with_uploaded_assets(document, AssetReference("m", "2"), None)
    assert "code_configuration" not in body
    # Without a type the model folder decides (the client and the registry look for MLmodel).
    untyped = DeploymentSpec.from_document({**document, "model": "azureml:m:2"})
    assert untyped.code is None and untyped.model_type is None


def test_tabular_settings_are_validated_and_kept():
    spec = DeploymentSpec.from_document({**MINIMAL, "settings": {
        "input_format": "CSV", "passthrough_columns": "id, region"}})
    assert (spec.settings.input_format, spec.settings.passthrough_columns) == (
        "csv", ("id", "region"))
    assert spec.settings.tabular
    job = spec.settings.with_overrides({"input_format": "parquet"}, per_job=True)
    assert job.input_format == "parquet" and job.passthrough_columns == ("id", "region")
    with pytest.raises(InvalidRequest, match="needs a tabular input_format"):
        spec.settings.with_overrides({"input_format": "files"}, per_job=True)


# Every field of Azure ML's batch endpoint.
ENDPOINT_FIELDS = {
    "$schema": "https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json",
    "name": "mnist", "description": "d", "tags": {"k": "v"}, "auth_mode": "aad_token",
    "defaults": {"deployment_name": "blue"}, "properties": {"p": 1},
    "identity": {"type": "system_assigned"}, "id": "/subscriptions/s/endpoints/mnist",
    "location": "westus2", "scoring_uri": "https://x/jobs", "openapi_uri": "https://x/swagger",
    "provisioning_state": "Succeeded",
}


def test_every_endpoint_field_is_honoured_or_ignored_with_a_reason():
    spec = EndpointSpec.from_document(ENDPOINT_FIELDS)
    assert (spec.name, spec.description, spec.tags, spec.default_deployment) == (
        "mnist", "d", {"k": "v"}, "blue")
    assert _fields(spec.ignored) == ["$schema", "auth_mode", "id", "identity", "location",
                                     "openapi_uri", "properties", "provisioning_state",
                                     "scoring_uri"]


@pytest.mark.parametrize("mode", ["aad_token", "key", "aml_token", "AADToken", "Key"])
def test_auth_modes(mode):
    EndpointSpec.from_document({"name": "mnist", "auth_mode": mode})


def test_endpoint_document():
    spec = EndpointSpec.from_document(load_document(SAMPLES / "endpoint.yml"), name="other")
    assert spec.name == "other" and spec.tags == {"type": "deep-learning"}
    assert _fields(spec.ignored) == ["$schema"]
    with pytest.raises(InvalidRequest, match="invalid endpoint name"):
        EndpointSpec.from_document({"name": "x" * 33})
    with pytest.raises(InvalidRequest, match="must be a mapping"):
        EndpointSpec.from_document(["not", "a", "mapping"])
    with pytest.raises(InvalidRequest, match="auth_mode"):
        EndpointSpec.from_document({"name": "mnist", "auth_mode": "anonymous"})


def test_load_document_errors(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("name: ok\nmodel: [unclosed\n")
    with pytest.raises(InvalidRequest, match=r"not valid YAML \(line 3"):
        load_document(bad)
    with pytest.raises(InvalidRequest, match="does not exist"):
        load_document(tmp_path / "missing.yml")
    (tmp_path / "list.yml").write_text("- a\n")
    with pytest.raises(InvalidRequest, match="must be a mapping"):
        load_document(tmp_path / "list.yml")


@pytest.mark.parametrize("source", [
    "def init():\n    pass\ndef run(b):\n    return b\n",
    "import torch\nfrom helpers import init, run\n",
    "try:\n    from fast import run\nexcept ImportError:\n    run = None\ninit = lambda: None\n",
    "async def init():\n    pass\nclass run:\n    pass\n",
])
def test_scripts_that_define_entry_points(source):
    check_scoring_script(source, "score.py")


@pytest.mark.parametrize(("source", "code", "fragment"), [
    ("def init(:\n", "script_syntax_error", "line 1"),
    ("x = 1\n\n\nif x\n", "script_syntax_error", "line 4"),
    ("def run(b):\n    return b\n", "script_missing_entry_points", "missing: init"),
    ("def helper():\n    def init():\n        pass\n", "script_missing_entry_points",
     "missing: init, run"),
    (b"\x00", "script_syntax_error", "null bytes"),
])
def test_broken_scripts(source, code, fragment):
    with pytest.raises(Unprocessable) as info:
        check_scoring_script(source, "score.py")
    assert info.value.code == code and fragment in info.value.message


def test_the_client_checks_a_script_less_model_folder_before_uploading(tmp_path):
    from batchfn.deployment_files import deployment_document
    from batchfn.errors import InvalidRequestError, UnprocessableError

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"w")
    document = {"name": "dep", "endpoint_name": "ep1", "model": {"path": "model"}}
    with pytest.raises(InvalidRequestError, match="has no MLmodel file"):
        deployment_document(None, document, tmp_path, None, None)
    (tmp_path / "model" / "MLmodel").write_text("flavors:\n  keras: {}\n")
    with pytest.raises(UnprocessableError, match="no python_function flavor"):
        deployment_document(None, document, tmp_path, None, None)
    (tmp_path / "model" / "MLmodel").write_text("flavors:\n  python_function: {}\n")
    local = deployment_document(None, document, tmp_path, None, None)
    assert local.code_dir is None and local.model_dir == (tmp_path / "model").resolve()


@pytest.mark.parametrize("name", ["CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "AZUREML_MODEL_DIR",
                                  "HOME", "PYTHONPATH", "BATCHFN_ANYTHING"])
def test_reserved_worker_variables_cannot_be_overridden(name):
    with pytest.raises(InvalidRequest, match="cannot be overridden"):
        DeploymentSpec.from_document({**MINIMAL, "environment_variables": {name: "x"}})
