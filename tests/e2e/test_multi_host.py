"""The split deployment on one machine: one control devhost and two scoring devhosts.

The hosts share one Azurite of their own (other modules' queues cannot leak in) and run the
same function_app with BATCHFN_ROLE=control or scoring, as the two Function apps do in
Azure. Each scoring host takes at most two mini-batches at once through app settings that
override host.json, as the scoring image sets them. A 2,000-file job must finish with every
file exactly once, scored by both scoring hosts (the ledger names the host process of each
mini-batch), although one scoring host is killed in the middle of it: with the Functions
host's 10-minute queue lease and the default heartbeat settings, the killed host's
mini-batches are sent again within seconds, not minutes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from batchfn.client import BatchfnClient
from devhost.azurite import Azurite
from devhost.testing import RunningDevHost
from shared.contract import layout
from shared.contract.layout import STATE_CONTAINER
from shared.contract.ledger import Completion
from tests.conftest import REPO, split_devhosts, upload_blobs, wait_until

ENDPOINT = "split"
FILES = 2_000
MINI_BATCH = 10
BATCHES = FILES // MINI_BATCH
WORKER_SLOTS = 2
RECOVERY_SECONDS = 30  # the stall threshold (20 s) and the checks and beats around it


@pytest.fixture(scope="module")
def azurite(tmp_path_factory) -> Iterator[Azurite]:
    with Azurite(location=tmp_path_factory.mktemp("azurite-split")) as server:
        yield server


@pytest.fixture(scope="module")
def hosts(azurite, tmp_path_factory) -> Iterator[dict[str, RunningDevHost]]:
    # What infra/docker/Dockerfile sets for a replica with WORKER_SLOTS worker slots; the
    # queue lease is the Functions host's (10 minutes): recovery comes from the heartbeats.
    with split_devhosts(azurite.connection_string, tmp_path_factory.mktemp("split-hosts"),
                        WORKER_SLOTS) as started:
        yield started


@pytest.fixture(scope="module")
def client(hosts, tmp_path_factory) -> BatchfnClient:
    control = hosts["control"]
    client = BatchfnClient(url=control.url, key=control.key)
    model = tmp_path_factory.mktemp("split-model") / "model"
    model.mkdir()
    (model / "weights.txt").write_text("1")
    client.create_endpoint(document={"name": ENDPOINT})
    client.create_deployment(document={
        "name": "echo", "endpoint_name": ENDPOINT, "model": {"path": str(model)},
        "code_configuration": {"code": str(REPO / "tests" / "scoring_scripts"),
                               "scoring_script": "echo.py"},
        "settings": {"mini_batch_size": MINI_BATCH,
                     "max_concurrency_per_instance": WORKER_SLOTS},
        "environment_variables": {"ECHO_SLEEP": "0.1"},
    }, set_default=True)
    return client


def _upload_inputs(connection: str, folder: str) -> list[str]:
    names = [f"{folder}/file{i:04d}.bin" for i in range(FILES)]
    upload_blobs(connection, {name: b"x" * (1 + int(name[-8:-4]) % 7) for name in names})
    return names


def _completions(blobs: BlobServiceClient, job: str) -> list[Completion]:
    try:
        data = blobs.get_blob_client(STATE_CONTAINER, layout.ledger(job, 0)).download_blob()
    except ResourceNotFoundError:
        return []
    return [Completion.from_line(line) for line in data.readall().splitlines() if line.strip()]


def _host_pid(completion: Completion) -> int:
    """The process id in a worker name `<host>-<pid>-<random>`."""
    assert completion.host, completion
    return int(completion.host.rsplit("-", 2)[-2])


def test_two_scoring_hosts_share_a_job_and_survive_losing_one(hosts, client, azurite,
                                                              tmp_path):
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    names = _upload_inputs(azurite.connection_string, "split-2k")
    victim, survivor = hosts["scoring-a"], hosts["scoring-b"]
    scoring_pids = {victim.pid, survivor.pid}
    job = client.invoke(ENDPOINT, "azureml://datastores/workspaceblobstore/paths/split-2k"
                        )["name"]

    # Both hosts are scoring and the job is well under way: kill one, workers and all.
    def both_scoring():
        done = _completions(blobs, job)
        return len(done) >= BATCHES // 5 and {_host_pid(c) for c in done} == scoring_pids
    wait_until(both_scoring, 120, "both scoring hosts to record mini-batches")
    victim.kill()
    killed_at = time.monotonic()
    # Counted once the victim is dead: it records nothing later, but for appends it had
    # already sent (at most one per worker slot).
    recorded_at_kill = len(_completions(blobs, job))
    assert recorded_at_kill < BATCHES, "the job ended before a host could be killed"

    final = client.wait_job(job, timeout=240)
    recovered_in = time.monotonic() - killed_at
    assert final["status"] == "Completed", final
    # The victim's mini-batches were sent again (not left to their 10-minute lease), and the
    # job ended within the recovery time plus what was left for the survivor to score.
    assert final["progress"]["recovery"]["redelivered"] >= 1, final["progress"]
    left = BATCHES - recorded_at_kill
    assert recovered_in < RECOVERY_SECONDS + left * 0.1 * MINI_BATCH / WORKER_SLOTS + 15, (
        recovered_in, left)
    assert final["progress"]["files"] == {"total": FILES, "succeeded": FILES, "failed": 0,
                                          "pending": 0}
    output = client.download_job_output(job, "score", tmp_path / "out").read_text()
    assert sorted(output.splitlines()) == sorted(
        f"{Path(name).name} {1 + int(name[-8:-4]) % 7}" for name in names)

    completions = _completions(blobs, job)  # in append order; redeliveries may repeat
    assert {c.index for c in completions} == set(range(BATCHES))
    assert {_host_pid(c) for c in completions} == scoring_pids
    # The survivor finished what the victim left (which had at most its slots in flight).
    assert {_host_pid(c) for c in completions[recorded_at_kill + WORKER_SLOTS:]} == {
        survivor.pid}
    # The scoring hosts ran with the image's queue settings, read from app settings.
    assert "host.json extensions.queues.newBatchThreshold = 1" in survivor.logs()
    assert "score_minibatch" not in hosts["control"].logs()
