"""Which OS user a deployment's workers run as (shared/scoring/worker_users.py), and what a
host that cannot drop privileges does: refuse, unless the development setting allows root.
The user creation itself (useradd) and the trial start are this module's own interfaces,
replaced here; tests/e2e/test_deployment_isolation.py runs them for real."""

from __future__ import annotations

import logging

import pytest

from shared.scoring import worker_users
from shared.scoring.isolation import WorkerAccount, WorkerAccountError
from shared.scoring.worker_users import (
    ALLOW_ROOT_SETTING,
    WorkerUsers,
    deployment_user_name,
)

ACCOUNT = WorkerAccount("bfd-0123456789ab", 990, 990)


def test_the_user_name_is_the_deployments_alone_and_the_same_on_every_host():
    name = deployment_user_name("mnist", "torch")
    assert name == deployment_user_name("mnist", "torch")
    assert name.startswith("bfd-") and len(name) == 16  # within every useradd's limit
    assert len({name, deployment_user_name("mnist", "keras"),
                deployment_user_name("mnist-torch", ""),
                deployment_user_name("mnis", "t/torch")}) == 4


def test_only_a_root_host_gives_deployments_users_of_their_own(monkeypatch):
    monkeypatch.setattr(worker_users.os, "geteuid", lambda: 1000)
    users = WorkerUsers.from_settings({})
    assert not users.per_deployment
    assert users.account("e", "d", python=None, runtime_path=None, folders=()) is None
    monkeypatch.setattr(worker_users.os, "geteuid", lambda: 0)
    assert WorkerUsers.from_settings({}).per_deployment
    assert not WorkerUsers.from_settings({}).allow_root
    assert WorkerUsers.from_settings({ALLOW_ROOT_SETTING: "1"}).allow_root


def _stub(monkeypatch, *, reach: str | None = None, trial: str | None = None) -> list:
    made = []
    monkeypatch.setattr(worker_users, "reach_problem", lambda *args: reach)
    monkeypatch.setattr(worker_users, "import_problem", lambda *args: trial)
    monkeypatch.setattr(worker_users.leftover_processes, "end_leftovers", lambda uid: 0)

    def ensure(endpoint: str, deployment: str) -> WorkerAccount:
        made.append((endpoint, deployment))
        return ACCOUNT
    monkeypatch.setattr(worker_users, "ensure_user", ensure)
    return made


def test_a_deployments_user_is_made_once_and_reused(monkeypatch):
    made = _stub(monkeypatch)
    users = WorkerUsers(per_deployment=True)
    for _ in range(3):
        assert users.account("e", "d", python=None, runtime_path=None, folders=()) == ACCOUNT
    assert made == [("e", "d")]


def test_a_host_that_cannot_drop_privileges_refuses_to_score(monkeypatch):
    made = _stub(monkeypatch, reach="user 'x' cannot reach /root/python (/root is mode 700)")
    users = WorkerUsers(per_deployment=True)
    with pytest.raises(WorkerAccountError) as refused:
        users.account("e", "d", python=None, runtime_path=None, folders=())
    message = str(refused.value)
    assert "/root is mode 700" in message and "does not run as root" in message
    assert ALLOW_ROOT_SETTING in message
    assert made == []  # no user is made for workers that could not run as it


def test_a_failed_trial_start_refuses_too(monkeypatch):
    _stub(monkeypatch, trial="user 'bfd-x' cannot import the scoring worker: ModuleNotFound")
    with pytest.raises(WorkerAccountError, match="cannot import the scoring worker"):
        WorkerUsers(per_deployment=True).account("e", "d", python="/env/bin/python",
                                                 runtime_path="/rt", folders=())


def test_the_development_setting_runs_them_as_root_with_a_warning(monkeypatch, caplog):
    _stub(monkeypatch, reach="cannot reach /root/python")
    users = WorkerUsers(per_deployment=True, allow_root=True)
    with caplog.at_level(logging.WARNING, logger="batchfn.scoring"):
        assert users.account("e", "d", python=None, runtime_path=None, folders=()) is None
    assert "run as root" in caplog.text and ALLOW_ROOT_SETTING in caplog.text


def test_a_user_of_that_name_that_is_not_batchfns_is_refused(monkeypatch):
    class Entry:
        pw_name, pw_uid, pw_gid = deployment_user_name("e", "d"), 1001, 1001
        pw_gecos = "Someone Else"
    monkeypatch.setattr(worker_users.pwd, "getpwnam", lambda name: Entry)
    with pytest.raises(WorkerAccountError, match="is not the workers' user"):
        worker_users.ensure_user("e", "d")
    Entry.pw_gecos = "batchfn deployment e/d"
    assert worker_users.ensure_user("e", "d") == WorkerAccount(Entry.pw_name, 1001, 1001)
    Entry.pw_uid = 0
    with pytest.raises(WorkerAccountError):
        worker_users.ensure_user("e", "d")
