"""Two deployments on one scoring host cannot reach each other (a real devhost, as root).

Deployment B (tests/scoring_scripts/isolation_keeper.py), in an environment of its own
that the host builds, keeps a secret in its environment_variables, its model, its input,
its HOME, its TMPDIR, /tmp, /dev/shm and its job's output folder, and keeps running.
Meanwhile deployment A (tests/scoring_scripts/isolation_probe.py) looks for it
everywhere: B's worker process (environment, working folder, memory map, a signal), every
process's environment, every file under the work and scratch folders, B's folders by
name. Then A leaves three
processes behind (a child, a child in its own session, a double-forked daemon that
ignores SIGTERM), and a second job of A ends A's worker: none of them survives.

The workers run as the deployments' own users, which the host creates: the test needs
root and an interpreter with the project's packages that those users can reach
(worker_user_python); elsewhere it is skipped with that reason. The users it made are
removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from azure.storage.blob import BlobServiceClient

from batchfn.client import BatchfnClient
from devhost.testing import RunningDevHost, running_devhost
from shared.contract.layout import DATA_CONTAINER
from shared.scoring.work_folders import safe_segment
from shared.scoring.worker_users import ALLOW_ROOT_SETTING, deployment_user_name
from tests.conftest import REPO, SCORING_SCRIPTS, wait_until
from tests.e2e.test_environments_cli import UV_CACHE

ENDPOINT = f"iso{uuid.uuid4().hex[:8]}"  # users of its own, removed at the end
KEEPER, PROBER = "keeper", "prober"
SECRET = f"keeper-secret-{uuid.uuid4().hex}"
MARKER = f"probe-leftover-{uuid.uuid4().hex}"
SETTINGS = {"mini_batch_size": 1, "max_concurrency_per_instance": 1,
            "retry_settings": {"max_retries": 0, "timeout": 180}}


@pytest.fixture(scope="module")
def work(worker_tmp) -> Path:
    return worker_tmp("isolation") / "work"


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, str]]:
    names = {name: deployment_user_name(ENDPOINT, name) for name in (KEEPER, PROBER)}
    yield names
    for name in names.values():
        with contextlib.suppress(KeyError):
            uid = pwd.getpwnam(name).pw_uid
            for process in psutil.process_iter(["uids"]):
                if process.info["uids"] and process.info["uids"].real == uid:
                    with contextlib.suppress(psutil.Error):
                        process.kill()
            subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture(scope="module")
def host(azurite, work, users, worker_user_python) -> Iterator[RunningDevHost]:
    env = {"BATCHFN_WORK_DIR": str(work), ALLOW_ROOT_SETTING: "0",
           "UV_CACHE_DIR": str(UV_CACHE)}
    with running_devhost("function_app", script_root=REPO,
                         connection_string=azurite.connection_string, env=env,
                         python=worker_user_python) as running:
        yield running


def deploy(client: BatchfnClient, folder: Path, name: str, script: str,
           model_files: dict[str, str], env: dict[str, str], **fields: object) -> None:
    model = folder / name / "model"
    model.mkdir(parents=True)
    for file, text in model_files.items():
        (model / file).write_text(text)
    client.create_deployment(document={
        "name": name, "endpoint_name": ENDPOINT, "model": {"path": str(model)},
        "code_configuration": {"code": str(SCORING_SCRIPTS), "scoring_script": script},
        "settings": SETTINGS, "environment_variables": env, **fields})


def marked() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if MARKER in (process.info["cmdline"] or []):
            found.append(process)
    return found


def test_a_deployment_reaches_none_of_anothers_and_leaves_nothing_behind(
        azurite, host, work, users, tmp_path):
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    data = blobs.get_container_client(DATA_CONTAINER)
    with contextlib.suppress(Exception):
        data.create_container()
    data.upload_blob(f"{ENDPOINT}/keep/input.txt", SECRET.encode())
    data.upload_blob(f"{ENDPOINT}/probe/probe.txt", b"probe")
    data.upload_blob(f"{ENDPOINT}/exit/exit.txt", b"exit")
    client = BatchfnClient(url=host.url, key=host.key)
    client.create_endpoint(document={"name": ENDPOINT})
    conda = tmp_path / "conda.yaml"  # B runs in an environment batchfn builds
    conda.write_text("dependencies:\n  - python=3.11\n  - pip:\n      - tabulate==0.9.0\n")
    deploy(client, tmp_path, KEEPER, "isolation_keeper.py", {"secret-model.txt": SECRET},
           {"KEEPER_SECRET": SECRET}, environment={"conda_file": str(conda)})
    uri = f"azureml://datastores/workspaceblobstore/paths/{ENDPOINT}"

    keeper_job = client.invoke(ENDPOINT, f"{uri}/keep", deployment_name=KEEPER)["name"]
    keeper_home = work / "deployments" / users[KEEPER] / "home"
    wait_until(lambda: (keeper_home / "written").exists(), 120, "B's secrets to be written")
    written = (keeper_home / "written").read_text().splitlines()
    for folder in written:  # as root: B did put its secret there
        assert any(SECRET in path.read_text() for path in Path(folder).glob("keeper-*.txt"))
    scratch = [path for path in Path("/dev/shm").glob("batchfn-scratch-*/" + users[KEEPER])]
    keeper_folders = [work / "deployments" / users[KEEPER], keeper_home,
                      work / "deployments" / users[KEEPER] / "tmp",
                      work / "outputs" / safe_segment(keeper_job),
                      *scratch, *(path / "inputs" for path in scratch)]
    deploy(client, tmp_path, PROBER, "isolation_probe.py", {"weights.txt": "1"}, {
        "PROBE_NEEDLE_REVERSED": SECRET.split("-")[-1][::-1], "PROBE_MARKER": MARKER,
        "PROBE_ROOTS": os.pathsep.join([str(work), "/tmp", "/dev/shm",
                                        *(str(path.parent) for path in scratch)]),
        "PROBE_PATHS": os.pathsep.join(str(path) for path in keeper_folders)})

    probe_job = client.invoke(ENDPOINT, f"{uri}/probe", deployment_name=PROBER)["name"]
    final = client.wait_job(probe_job, timeout=180)
    (keeper_home / "release").touch()
    assert final["status"] == "Completed", (final, host.logs()[-3000:])
    [line] = client.download_job_output(probe_job, "score", tmp_path / "out").read_text(
        ).splitlines()
    report = json.loads(line)
    assert client.wait_job(keeper_job, timeout=120)["status"] == "Completed"
    kept = client.download_job_output(keeper_job, "score", tmp_path / "kept").read_text()
    assert kept.split() == ["input.txt", "0.9.0"]  # it ran in its environment, as B

    # Each deployment runs as its own user, neither root, with a private umask.
    assert report["user"] == users[PROBER] and report["uid"] != 0
    assert report["umask"] == 0o077
    assert report["home"] == str(work / "deployments" / users[PROBER] / "home")
    # B's worker was there (and maybe the workers of other tests' deployments, which run
    # beside this one under `make test`, each as a user of its own) ...
    assert users[KEEPER] in {other["user"] for other in report["other_workers"]}
    # ... and all out of reach: no environment, folder, map or signal.
    assert report["reached"] == {"environ": [], "cwd": [], "maps": [], "signal": []}
    assert report["needle_in_environ"] == []
    # No file of B's anywhere: its folders cannot even be listed.
    assert report["files_read"] > 0  # it looked (its own files, the worker runtime, ...)
    assert report["needle_in_files"] == []
    assert report["paths_reached"] == []

    # What A started runs while its worker does, the daemon adopted by the host ...
    assert len(report["started"]) == 3
    alive = wait_until(lambda: len(marked()) == 3 and marked(), 30, "A's three processes")
    assert {process.uids().real for process in alive} == {pwd.getpwnam(users[PROBER]).pw_uid}
    # ... and none of it outlives A's slot: here its worker ends (os._exit in run()).
    ended = client.wait_job(client.invoke(ENDPOINT, f"{uri}/exit",
                                          deployment_name=PROBER)["name"], timeout=180)
    assert ended["status"] in ("Completed", "Failed"), ended
    wait_until(lambda: not marked(), 30, "A's leftover processes to end")
    uid = pwd.getpwnam(users[PROBER]).pw_uid
    assert not [p for p in psutil.process_iter(["uids"]) if p.info["uids"]
                and p.info["uids"].real == uid and p.status() != psutil.STATUS_ZOMBIE]
