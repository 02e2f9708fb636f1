"""The app settings of environments, fail-fast and worker users: a malformed one is an
error at the app's start (function_app.py), never a silent default."""

from __future__ import annotations

import pytest

from shared.contract.uv_settings import MANAGED_PYTHONS_SETTING, managed_pythons
from shared.control import environments
from shared.control.environments import (
    DEFAULT_SCORING_PLATFORM,
    SCORING_PLATFORM_SETTING,
    SCORING_PYTHON_SETTING,
    check_settings,
    scoring_platform,
    scoring_python,
)
from shared.scoring.fail_fast import (
    DEFAULT_FAIL_FAST_BATCHES,
    FAIL_FAST_SETTING,
    fail_fast_batches,
)
from shared.scoring.worker_users import ALLOW_ROOT_SETTING, WorkerUsers


def test_unset_settings_take_their_defaults(monkeypatch):
    for setting in (FAIL_FAST_SETTING, SCORING_PYTHON_SETTING, SCORING_PLATFORM_SETTING,
                    MANAGED_PYTHONS_SETTING, ALLOW_ROOT_SETTING):
        monkeypatch.delenv(setting, raising=False)
    assert fail_fast_batches() == DEFAULT_FAIL_FAST_BATCHES
    assert scoring_platform() == DEFAULT_SCORING_PLATFORM
    assert scoring_python() == f"{environments.sys.version_info.major}." \
                               f"{environments.sys.version_info.minor}"
    assert not managed_pythons()
    assert not WorkerUsers.from_settings().allow_root
    check_settings()


def test_set_settings_are_read(monkeypatch):
    monkeypatch.setenv(FAIL_FAST_SETTING, "0")
    monkeypatch.setenv(SCORING_PYTHON_SETTING, "3.12")
    monkeypatch.setenv(SCORING_PLATFORM_SETTING, "aarch64-manylinux_2_28")
    assert fail_fast_batches() == 0
    assert scoring_python() == "3.12"
    assert scoring_platform() == "aarch64-manylinux_2_28"
    assert managed_pythons({MANAGED_PYTHONS_SETTING: " 1 "})
    assert WorkerUsers.from_settings({ALLOW_ROOT_SETTING: "0"}).allow_root is False


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_malformed_fail_fast_count_is_refused(monkeypatch, value):
    monkeypatch.setenv(FAIL_FAST_SETTING, value)
    with pytest.raises(ValueError, match=FAIL_FAST_SETTING):
        fail_fast_batches()


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_switches_take_0_or_1_only(value):
    with pytest.raises(ValueError, match=MANAGED_PYTHONS_SETTING):
        managed_pythons({MANAGED_PYTHONS_SETTING: value})
    with pytest.raises(ValueError, match=ALLOW_ROOT_SETTING):
        WorkerUsers.from_settings({ALLOW_ROOT_SETTING: value})


@pytest.mark.parametrize(("setting", "value"), [
    (SCORING_PYTHON_SETTING, "3.8"), (SCORING_PYTHON_SETTING, "python3.11"),
    (SCORING_PLATFORM_SETTING, "linux x86"), (MANAGED_PYTHONS_SETTING, "on")])
def test_the_control_apps_check_names_a_malformed_setting(monkeypatch, setting, value):
    monkeypatch.setenv(setting, value)
    with pytest.raises(ValueError, match=setting):
        check_settings()
