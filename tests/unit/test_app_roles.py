"""BATCHFN_ROLE: which functions each app serves, and that the scoring app needs no Durable.

Each role is imported in a fresh interpreter, as the Functions host's Python worker does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shared.contract.roles import ALL, CONTROL, SCORING, UnknownRole, app_role, serves
from tests.conftest import REPO

# The poison-queue recorder runs on the control app: a poison message must not wake a GPU.
SCORING_FUNCTIONS = {"health", "score_minibatch"}
CONTROL_ONLY = {"batch_job", "plan_job", "advance_job", "fail_job", "blob_drop",
                "invoke_endpoint", "list_endpoints", "openapi_document",
                "record_poisoned_minibatch"}

_LIST_APP = ("import json, sys, function_app\n"
             "print(json.dumps({'functions': sorted(f.get_function_name() for f in "
             "function_app.app.get_functions()), "
             "'durable': 'azure.durable_functions' in sys.modules}))\n")


def _import_app(role: str | None, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "BATCHFN_ROLE"}
    if role is not None:
        env["BATCHFN_ROLE"] = role
    env.update(settings)
    return subprocess.run([sys.executable, "-c", _LIST_APP], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def _served(role: str | None) -> dict:
    result = _import_app(role)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_role_setting_is_read_leniently_and_defaults_to_all():
    assert app_role({}) == ALL
    assert app_role({"BATCHFN_ROLE": ""}) == ALL
    assert app_role({"BATCHFN_ROLE": " Scoring\n"}) == SCORING
    assert serves(ALL, CONTROL) and serves(ALL, SCORING)
    assert serves(CONTROL, CONTROL) and not serves(CONTROL, SCORING)


@pytest.mark.parametrize("value", ["score", "control,scoring", "x" * 500])
def test_an_unknown_role_is_refused_with_the_roles_it_could_be(value: str):
    with pytest.raises(UnknownRole) as caught:
        app_role({"BATCHFN_ROLE": value})
    message = str(caught.value)
    assert "control, scoring, all" in message and len(message) < 300


def test_the_scoring_app_serves_the_queues_without_durable():
    served = _served(SCORING)
    assert set(served["functions"]) == SCORING_FUNCTIONS
    assert served["durable"] is False


def test_the_control_app_serves_everything_but_scoring():
    served = _served(CONTROL)
    assert CONTROL_ONLY <= set(served["functions"])
    assert not set(served["functions"]) & (SCORING_FUNCTIONS - {"health"})
    assert served["durable"] is True


def test_all_is_the_default_and_serves_both():
    default, everything = _served(None), _served(ALL)
    assert default == everything
    control, scoring = _served(CONTROL), _served(SCORING)
    assert set(everything["functions"]) == set(control["functions"]) | set(
        scoring["functions"])


def test_an_unknown_role_stops_the_app_at_import():
    result = _import_app("gpu")
    assert result.returncode != 0
    assert "UnknownRole: BATCHFN_ROLE='gpu' is not a batchfn role" in result.stderr


def test_a_datastore_setting_naming_batchfns_own_container_stops_the_control_app():
    result = _import_app(CONTROL, BATCHFN_DATASTORES="keys=azure-webjobs-secrets")
    assert result.returncode != 0
    assert "DatastoreSettingError: BATCHFN_DATASTORES: container 'azure-webjobs-secrets'" in (
        result.stderr)
    assert _import_app(SCORING, BATCHFN_DATASTORES="keys=azure-webjobs-secrets").returncode == 0


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("BATCHFN_PRICES", '{"blob_write_10k": -1}', "BATCHFN_PRICES: blob_write_10k"),
    ("BATCHFN_PROGRESS_EVENT_SECONDS", "0", "BATCHFN_PROGRESS_EVENT_SECONDS must be"),
    ("BATCHFN_EVENTGRID_ENDPOINT", "http://topic.example/api/events",
     "BATCHFN_EVENTGRID_ENDPOINT must be"),
])
def test_malformed_event_and_price_settings_stop_the_control_app(setting, value, message):
    result = _import_app(CONTROL, **{setting: value})
    assert result.returncode != 0 and message in result.stderr
    assert _import_app(SCORING, **{setting: value}).returncode == 0


@pytest.mark.parametrize("setting", ["BATCHFN_MAX_FILES_PER_JOB", "BATCHFN_MAX_ROWS_PER_JOB",
                                     "BATCHFN_MAX_MINI_BATCHES_PER_JOB"])
def test_a_job_cap_that_is_not_a_positive_number_stops_the_control_app(setting: str):
    for bad in ("0", "abc", "1.5"):
        result = _import_app(CONTROL, **{setting: bad})
        assert result.returncode != 0, bad
        assert f"{setting} must be a positive whole number, not {bad!r}" in result.stderr
    assert _import_app(CONTROL, **{setting: "1000"}).returncode == 0


@pytest.mark.parametrize(("role", "setting", "value", "message"), [
    (CONTROL, "BATCHFN_STALL_SECONDS", "soon", "BATCHFN_STALL_SECONDS must be between"),
    (CONTROL, "BATCHFN_BACKUP_FACTOR", "0.5", "BATCHFN_BACKUP_FACTOR must be between"),
    (CONTROL, "BATCHFN_BACKUPS", "maybe", "BATCHFN_BACKUPS must be on or off"),
    (SCORING, "BATCHFN_HEARTBEAT_SECONDS", "0", "BATCHFN_HEARTBEAT_SECONDS must be between"),
])
def test_a_malformed_recovery_setting_stops_the_app_that_reads_it(role: str, setting: str,
                                                                   value: str, message: str):
    result = _import_app(role, **{setting: value})
    assert result.returncode != 0 and message in result.stderr
    other = SCORING if role == CONTROL else CONTROL
    assert _import_app(other, **{setting: value}).returncode == 0


def test_the_control_app_records_the_poison_queue_of_every_scoring_app():
    # Scoring profiles with apps of their own have queues (and poison queues) of their own.
    result = _import_app(CONTROL, BATCHFN_SCORING_PROFILES="gpu-t4,gpu-a100,cpu")
    assert result.returncode == 0, result.stderr
    names = set(json.loads(result.stdout.splitlines()[-1])["functions"])
    assert {"record_poisoned_minibatch", "record_poisoned_minibatch_gpu_a100",
            "record_poisoned_minibatch_cpu"} <= names
    assert "record_poisoned_minibatch_gpu_t4" not in names  # the main app reads minibatches
