"""Parsing Azure ML endpoint.yml / deployment.yml documents, and the scoring-script check."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.deployment_spec import (
    AssetReference,
    DeploymentSpec,
    EndpointSpec,
    FolderSource,
    load_document,
    with_uploaded_assets,
)
from shared.errors import InvalidRequest, Unprocessable
from shared.script_check import check_scoring_script
from shared.settings import DeploymentSettings

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "mnist"

MINIMAL = {"name": "blue", "endpoint_name": "mnist",
           "model": {"path": "model"},
           "code_configuration": {"code": "code", "scoring_script": "score.py"}}


def test_sample_deployment_parses_with_ignored_keys():
    spec = DeploymentSpec.from_document(
        load_document(SAMPLES / "deployment-torch" / "deployment.yml"))
    assert spec.model == FolderSource(path="model", name="mnist-classifier-torch")
    assert spec.code == FolderSource(path="code")
    assert spec.scoring_script == "batch_driver.py"
    assert spec.ignored == ("$schema", "compute", "environment")
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
    assert spec.ignored == ("resources.instance_type",)


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
    ({"type": "pipeline"}, "only 'model'"),
    ({"model": None}, "model must be a mapping"),
    ({"model": {"name": "x"}}, "model needs 'path'"),
    ({"model": "azureml:x"}, "invalid asset reference"),
    ({"model": "azureml:x:v1"}, "invalid asset version"),
    ({"code_configuration": {"code": "code"}}, "needs 'code'"),
    ({"code_configuration": {"code": "code", "scoring_script": "../s.py"}}, "invalid"),
    ({"mini_batch_size": 0}, "mini_batch_size"),
    ({"settings": {"retry_settings": {"timeout": -1}}}, "timeout"),
    ({"settings": {"output_action": "explode"}}, "output_action"),
    ({"settings": {"unknown_thing": 1}}, "unknown setting"),
    ({"tags": ["a"]}, "tags must be a mapping"),
])
def test_invalid_deployments(change, fragment):
    with pytest.raises(InvalidRequest, match=fragment.replace("(", r"\(")):
        DeploymentSpec.from_document({**MINIMAL, **change})


def test_endpoint_document():
    spec = EndpointSpec.from_document(load_document(SAMPLES / "endpoint.yml"), name="other")
    assert spec.name == "other" and spec.tags == {"type": "deep-learning"}
    assert spec.ignored == ("$schema",)
    with pytest.raises(InvalidRequest, match="invalid endpoint name"):
        EndpointSpec.from_document({"name": "x" * 33})
    with pytest.raises(InvalidRequest, match="must be a mapping"):
        EndpointSpec.from_document(["not", "a", "mapping"])


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
