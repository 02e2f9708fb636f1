"""A compute's max_instances, enforced by the engine: two scoring devhosts (two worker slots
each) and one control devhost on an Azurite of their own. A job on a pool with
max_instances 1 never has both hosts working on it at once; the same job on a pool with
max_instances 2 has them both at work together (so the measure below can see it).

What the hosts did is read from three records: the script's own start/end lines (with the
worker's process id, ECHO_RECORD_DIR), the output rows (each file with the worker's process
id, ECHO_WITH_PID) and the ledger (each mini-batch with the host's process id).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from batchfn.client import BatchfnClient
from devhost.azurite import Azurite
from devhost.testing import RunningDevHost
from shared.contract import layout
from shared.contract.layout import STATE_CONTAINER
from shared.contract.ledger import Completion
from tests.conftest import SCORING_SCRIPTS, split_devhosts, upload_blobs

ENDPOINT = "capped"
FILES = 24  # one mini-batch each
WORKER_SLOTS = 2
SLEEP_SECONDS = 0.4  # per run(): long enough for hosts to overlap when they may


@pytest.fixture(scope="module")
def azurite(tmp_path_factory) -> Iterator[Azurite]:
    with Azurite(location=tmp_path_factory.mktemp("azurite-cap")) as server:
        yield server


@pytest.fixture(scope="module")
def hosts(azurite, tmp_path_factory) -> Iterator[dict[str, RunningDevHost]]:
    with split_devhosts(azurite.connection_string, tmp_path_factory.mktemp("cap-hosts"),
                        WORKER_SLOTS) as started:
        yield started


@pytest.fixture(scope="module")
def client(hosts, azurite, worker_tmp, tmp_path_factory) -> BatchfnClient:
    control = hosts["control"]
    client = BatchfnClient(url=control.url, key=control.key)
    model = tmp_path_factory.mktemp("cap-model") / "model"
    model.mkdir()
    (model / "weights.txt").write_text("1")
    client.create_endpoint(document={"name": ENDPOINT})
    for compute, most in (("one-host", 1), ("two-hosts", 2)):
        client.create_compute(document={"type": "amlcompute", "max_instances": most},
                              name=compute)
        client.create_deployment(document={
            "name": compute, "endpoint_name": ENDPOINT, "model": {"path": str(model)},
            "compute": f"azureml:{compute}",
            "code_configuration": {"code": str(SCORING_SCRIPTS), "scoring_script": "echo.py"},
            "settings": {"mini_batch_size": 1, "max_concurrency_per_instance": WORKER_SLOTS},
            "environment_variables": {"ECHO_SLEEP": str(SLEEP_SECONDS), "ECHO_WITH_PID": "1",
                                      "ECHO_RECORD_DIR": str(worker_tmp(compute))},
        })
    upload_blobs(azurite.connection_string, {f"cap/f{i:03d}.bin": b"x" for i in range(FILES)})
    return client


def _busy_periods(client: BatchfnClient, azurite: Azurite, job: str,
                  record_dir: Path) -> dict[int, list[tuple[float, float]]]:
    """Each scoring host's (by process id) run() periods in the job: from the script's
    start/end lines, the worker pid of each output row and the host of each mini-batch."""
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    ledger = blobs.get_blob_client(STATE_CONTAINER, layout.ledger(job, 0)).download_blob()
    hosts_of = {}
    for line in ledger.readall().splitlines():
        if line.strip():
            completion = Completion.from_line(line)
            hosts_of[completion.index] = int(completion.host.rsplit("-", 2)[-2])
    rows = client.download_job_output(job, "score", record_dir / "out").read_text().split("\n")
    worker_host = {}
    for index, row in enumerate(line for line in rows if line):
        worker_host[int(row.split()[2])] = hosts_of[index]  # file, size, worker pid
    periods: dict[int, list[tuple[float, float]]] = defaultdict(list)
    started: dict[int, float] = {}
    for line in (record_dir / "runs.log").read_text().splitlines():
        event, pid, moment = line.split()
        if event == "start":
            started[int(pid)] = float(moment)
        elif int(pid) in worker_host:
            periods[worker_host[int(pid)]].append((started.pop(int(pid)), float(moment)))
    return dict(periods)


def _overlaps(periods: dict[int, list[tuple[float, float]]]) -> list[tuple]:
    """Pairs of run() periods of different hosts that overlap in time."""
    hosts = sorted(periods)
    return [(x, y) for i, first in enumerate(hosts) for second in hosts[i + 1:]
            for x in periods[first] for y in periods[second] if x[0] < y[1] and y[0] < x[1]]


def _run(client: BatchfnClient, azurite: Azurite, record_dirs: dict[str, Path],
         deployment: str) -> dict[int, list[tuple[float, float]]]:
    """Run the job on one deployment (and so its pool); each host's run() periods."""
    job = client.invoke(ENDPOINT, "azureml://datastores/workspaceblobstore/paths/cap",
                        deployment_name=deployment)["name"]
    final = client.wait_job(job, timeout=240)
    assert final["status"] == "Completed", final
    assert final["compute"]["name"] == deployment
    return _busy_periods(client, azurite, job, record_dirs[deployment])


@pytest.fixture(scope="module")
def record_dirs(client) -> dict[str, Path]:
    deployments = {d["name"]: d for d in client.list_deployments(ENDPOINT)}
    return {name: Path(d["environment_variables"]["ECHO_RECORD_DIR"])
            for name, d in deployments.items()}


def test_a_pool_of_one_never_has_two_hosts_at_work(client, hosts, azurite, record_dirs):
    periods = _run(client, azurite, record_dirs, "one-host")
    assert sum(len(p) for p in periods.values()) == FILES
    assert _overlaps(periods) == []
    # The other host was turned away, and said so: each try it made left the mini-batch
    # for later without counting an attempt.
    logs = hosts["scoring-a"].logs() + hosts["scoring-b"].logs()
    assert "deferred compute one-host has no free host slot" in logs


def test_a_pool_of_two_has_both_hosts_at_work_together(client, hosts, azurite, record_dirs):
    periods = _run(client, azurite, record_dirs, "two-hosts")
    assert sum(len(p) for p in periods.values()) == FILES
    assert set(periods) == {hosts["scoring-a"].pid, hosts["scoring-b"].pid}
    assert _overlaps(periods), "both hosts were never at work at the same time"
