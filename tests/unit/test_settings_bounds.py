"""Every setting finite and capped; file names, environment variables, tags and text bounded."""

from __future__ import annotations

import pytest

from shared.contract import settings as caps
from shared.contract.deployment_spec import DeploymentSpec, EndpointSpec
from shared.contract.errors import InvalidRequest
from shared.contract.settings import DeploymentSettings

LIMITS = [
    ("mini_batch_size", 1, caps.MAX_MINI_BATCH_SIZE),
    ("max_concurrency_per_instance", 1, caps.MAX_CONCURRENCY_PER_INSTANCE),
    ("instance_count", 1, caps.MAX_INSTANCE_COUNT),
    ("retry_settings.max_retries", 0, caps.MAX_RETRIES),
    ("error_threshold", -1, caps.MAX_ERROR_THRESHOLD),
]


@pytest.mark.parametrize("key, low, high", LIMITS)
def test_integer_settings_are_capped_at_both_ends(key, low, high):
    for good in (low, high, str(high), float(high)):
        DeploymentSettings.from_dict({key: good})
    for bad in (low - 1, high + 1, 10 ** 30, float("inf"), float("nan"), 1.5, "1e3", True,
                None, [], "9" * 5000):
        with pytest.raises(InvalidRequest) as refused:
            DeploymentSettings.from_dict({key: bad})
        assert refused.value.details["setting"] == key
        assert len(refused.value.message) < 300  # the value is cut, not echoed whole


def test_the_timeout_is_finite_positive_and_at_most_a_day():
    assert DeploymentSettings.from_dict({"retry_settings": {"timeout": 86400}}) \
        .retry_settings.timeout == 86400
    assert DeploymentSettings.from_dict({"retry_settings.timeout": "0.5"}) \
        .retry_settings.timeout == 0.5
    for bad in (0, -1, 86400.5, "inf", "-inf", "nan", float("inf"), 1e999, True, "x"):
        with pytest.raises(InvalidRequest):
            DeploymentSettings.from_dict({"retry_settings": {"timeout": bad}})


@pytest.mark.parametrize("name", ["predictions.csv", "scores 2024.jsonl", "résultats.csv",
                                  "x" * 255, ".hidden"])
def test_plain_file_names_are_accepted(name):
    assert DeploymentSettings.from_dict({"output_file_name": name}).output_file_name == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "../x", "x" * 256, "a:b",
                                  'a"b', "a*b", "a?b", "a<b", "a>b", "a|b", "a\nb", "a\x00b",
                                  "a\u202eb", "name.", "name ", " name", 7, None])
def test_unsafe_file_names_are_refused(name):
    with pytest.raises(InvalidRequest):
        DeploymentSettings.from_dict({"output_file_name": name})


def deployment(**fields):
    return DeploymentSpec.from_document({"name": "blue", "endpoint_name": "ep1",
                                         "model": "azureml:m:1",
                                         "code_configuration": {"code": "azureml:c:1",
                                                                "scoring_script": "s.py"},
                                         **fields})


@pytest.mark.parametrize("environment", [
    {"A=B": "1"}, {"A B": "1"}, {"": "1"}, {"1A": "1"}, {"A" * 257: "1"},
    {"AZUREML_MODEL_DIR": "/x"}, {"AZUREML_BI_OUTPUT_PATH": "/x"}, {"BATCHFN_ROLE": "x"},
    {"batchfn_work_dir": "x"}, {"V": "x" * (32 * 1024 + 1)}, {"V": "a\x00b"},
    {f"V{i}": "x" * 30_000 for i in range(3)}, {f"V{i}": "" for i in range(257)},
])
def test_environment_variables_are_checked_by_name_and_size(environment):
    with pytest.raises(InvalidRequest):
        deployment(environment_variables=environment)


def test_environment_variables_within_bounds_are_kept():
    spec = deployment(environment_variables={"TF_CPP_MIN_LOG_LEVEL": 2, "MODE": "x" * 30_000})
    assert spec.environment_variables == {"TF_CPP_MIN_LOG_LEVEL": "2", "MODE": "x" * 30_000}


@pytest.mark.parametrize("fields", [
    {"description": "d" * (8 * 1024 + 1)}, {"description": 5},
    {"tags": {f"t{i}": "v" for i in range(101)}}, {"tags": {"": "v"}},
    {"tags": {"k" * 257: "v"}}, {"tags": {"k": "v" * 1025}},
])
def test_descriptions_and_tags_are_bounded(fields):
    with pytest.raises(InvalidRequest):
        EndpointSpec.from_document({"name": "ep1", **fields})
    with pytest.raises(InvalidRequest):
        deployment(**fields)


@pytest.mark.parametrize("key, bad", [
    ("input_format", "x" * 5000), ("input_format", ["csv"]),
    ("passthrough_columns", ["id", "c" * 5000]), ("passthrough_columns", ["id", "id"]),
    ("passthrough_columns", [f"c{i}" for i in range(5000)]), ("passthrough_columns", 7),
])
def test_tabular_settings_refuse_bad_values_without_echoing_them_whole(key, bad):
    settings = {"input_format": "csv", key: bad} if key != "input_format" else {key: bad}
    with pytest.raises(InvalidRequest) as refused:
        DeploymentSettings.from_dict(settings)
    assert refused.value.details["setting"] == key
    assert len(refused.value.message) < 400 and len(str(refused.value.details["value"])) < 200
