"""Crash recovery and the straggler tail, measured (run by `make chaos`, or CHAOS_RECOVERY=1).

One Azurite, a control devhost and two scoring devhosts (two worker slots each), with the
Functions host's 10-minute queue lease and the default heartbeat settings (a beat every
3 s, stalled after 20 s). The echo script sleeps per mini-batch; on the host whose work
folder is named "slow" it sleeps SLOW_FACTOR times as long.

(a) A scoring host is killed (SIGKILL, not restarted) 4 s into a job: the time from the
    kill to the last of its mini-batches being sent again (goal ≤ 30 s), and the job's time
    against the same job undisturbed.
(b) One scoring host slowed 10× among two: the job's time with backups and without, against
    the same job on the fast host alone (goal with backups ≤ 1.5×).

Every job must end Completed with every file once in its output (0 lost, 0 duplicated).
The figures are printed; CHAOS_RESULTS=<path> also writes them as a results file
(bench/results/recovery.json is the last one).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from batchfn.client import BatchfnClient
from devhost.azurite import Azurite
from devhost.testing import RunningDevHost, running_devhost
from shared.contract import layout
from shared.contract.layout import STATE_CONTAINER
from shared.contract.timestamps import parse_time
from tests.conftest import REPO, deploy_test_script, upload_blobs

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CHAOS_ROUNDS") or os.environ.get("CHAOS_RECOVERY")),
    reason="measured by `make chaos` (or CHAOS_RECOVERY=1): minutes of jobs")

ENDPOINT = "recovery"
FILES = 1000
MINI_BATCH = 10
SLOTS = 2
SLEEP = 0.4  # seconds per mini-batch on a normal host (kill)
SLOW_TEST_SLEEP = 1.0  # ... in the slow-host runs: 10 s on the slow host
SLOW_FACTOR = 10
KILL_AFTER = 4.0
REDELIVERY_GOAL = 30.0
SLOW_HOST_GOAL = 1.5
SCORING_ENV = {
    "BATCHFN_ROLE": "scoring",
    "AzureFunctionsJobHost__extensions__queues__batchSize": "1",
    "AzureFunctionsJobHost__extensions__queues__newBatchThreshold": str(SLOTS - 1),
}
FIGURES: dict = {}


@pytest.fixture(scope="module")
def azurite(tmp_path_factory) -> Iterator[Azurite]:
    with Azurite(location=tmp_path_factory.mktemp("azurite-recovery")) as server:
        yield server


@contextmanager
def _control(azurite: Azurite, backups: bool) -> Iterator[RunningDevHost]:
    env = {"BATCHFN_ROLE": "control", "BATCHFN_BACKUPS": "on" if backups else "off"}
    with running_devhost(script_root=REPO, connection_string=azurite.connection_string,
                         env=env) as host:
        yield host


@contextmanager
def _scoring(azurite: Azurite, work: Path, python: str) -> Iterator[RunningDevHost]:
    with running_devhost(script_root=REPO, connection_string=azurite.connection_string,
                         env={**SCORING_ENV, "BATCHFN_WORK_DIR": str(work)},
                         python=python) as host:
        yield host


def _deploy(client: BatchfnClient, scratch: Path, sleep: float) -> None:
    client.create_endpoint(document={"name": ENDPOINT})
    deploy_test_script(client, scratch, ENDPOINT, "echo", "echo.py",
                       {"mini_batch_size": MINI_BATCH, "max_concurrency_per_instance": SLOTS},
                       {"ECHO_SLEEP": str(sleep), "ECHO_SLOW_MARK": "slow",
                        "ECHO_SLOW_FACTOR": str(SLOW_FACTOR)}, set_default=True)


def _run(client: BatchfnClient, folder: str, names: list[str], tmp: Path,
         during=None) -> tuple[float, dict]:  # noqa: ANN001 - a callable of the job id
    """Run a job over `folder`; its seconds and final state, once every file was checked."""
    started = time.monotonic()
    job = client.invoke(ENDPOINT, f"azureml://datastores/workspaceblobstore/paths/{folder}"
                        )["name"]
    if during is not None:
        during(job, started)
    final = client.wait_job(job, timeout=900)
    seconds = time.monotonic() - started
    assert final["status"] == "Completed", final
    rows = client.download_job_output(job, "score", tmp / job).read_text().splitlines()
    counts = Counter(line.split()[0] for line in rows if line)
    lost = [name for name in names if not counts[name]]
    duplicated = [name for name, count in counts.items() if count > 1 or name not in names]
    assert not lost and not duplicated, (job, lost[:5], duplicated[:5])
    return seconds, final


def _progress(azurite: Azurite, job: str) -> dict:
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    return json.loads(blobs.get_blob_client(STATE_CONTAINER, layout.progress(job))
                      .download_blob().readall())


def test_a_killed_scoring_host_is_recovered_within_seconds(azurite, tmp_path_factory,
                                                           worker_tmp, worker_python):
    work = tmp_path_factory.mktemp("recovery-kill")
    names = [f"k{i:04d}.bin" for i in range(FILES)]
    upload_blobs(azurite.connection_string, {f"kill/{name}": b"x" for name in names})
    python = worker_python or sys.executable
    with ExitStack() as stack:
        control = stack.enter_context(_control(azurite, backups=True))
        victim = stack.enter_context(_scoring(azurite, worker_tmp("host-a"), python))
        stack.enter_context(_scoring(azurite, worker_tmp("host-b"), python))
        client = BatchfnClient(url=control.url, key=control.key)
        _deploy(client, work, SLEEP)
        _run(client, "kill", names, work)  # warm: workers started on both hosts
        undisturbed, _ = _run(client, "kill", names, work)
        killed: dict = {}

        def kill(job: str, started: float) -> None:
            time.sleep(max(0.0, KILL_AFTER - (time.monotonic() - started)))
            victim.kill()
            killed["at"] = datetime.now(UTC)
            killed["job"] = job

        disturbed, final = _run(client, "kill", names, work, during=kill)
    progress = _progress(azurite, killed["job"])
    sent = [parse_time(at) for copies in progress["copies"].values()
            for kind, at in copies if kind == "redelivery"]
    assert sent, "no mini-batch of the killed host was sent again"
    last = (max(sent) - killed["at"]).total_seconds()
    FIGURES["kill"] = {
        "files": FILES, "mini_batch_size": MINI_BATCH, "seconds_per_mini_batch": SLEEP,
        "killed_after_s": KILL_AFTER, "undisturbed_job_s": round(undisturbed, 1),
        "job_with_kill_s": round(disturbed, 1), "redelivered": len(sent),
        "kill_to_last_redelivery_s": round(last, 1), "goal_s": REDELIVERY_GOAL,
        "recovery": final["progress"]["recovery"]}
    print(f"\n(a) kill: {FIGURES['kill']}")
    _write_results()
    assert last <= REDELIVERY_GOAL


def test_a_slow_host_does_not_set_the_end_of_the_job(azurite, tmp_path_factory, worker_tmp,
                                                     worker_python):
    work = tmp_path_factory.mktemp("recovery-slow")
    names = [f"s{i:04d}.bin" for i in range(FILES)]
    upload_blobs(azurite.connection_string, {f"slow/{name}": b"x" for name in names})
    python = worker_python or sys.executable
    fast_dir, slow_dir = worker_tmp("fast"), worker_tmp("slow")
    times: dict[str, float] = {}
    recovery: dict[str, dict] = {}
    with _control(azurite, backups=True) as control:
        client = BatchfnClient(url=control.url, key=control.key)
        _deploy(client, work, SLOW_TEST_SLEEP)
        with _scoring(azurite, fast_dir, python):
            _run(client, "slow", names, work)  # warm
            times["fast host alone"], _ = _run(client, "slow", names, work)
            with _scoring(azurite, slow_dir, python):
                times["with a slow host, backups"], final = _run(client, "slow", names, work)
                recovery["backups"] = final["progress"]["recovery"]
    with _control(azurite, backups=False) as control:
        client = BatchfnClient(url=control.url, key=control.key)
        with _scoring(azurite, fast_dir, python), _scoring(azurite, slow_dir, python):
            times["with a slow host, no backups"], final = _run(client, "slow", names, work)
            recovery["no backups"] = final["progress"]["recovery"]
    base = times["fast host alone"]
    FIGURES["slow_host"] = {
        "files": FILES, "mini_batch_size": MINI_BATCH,
        "seconds_per_mini_batch": SLOW_TEST_SLEEP, "slow_factor": SLOW_FACTOR,
        "job_seconds": {k: round(v, 1) for k, v in times.items()},
        "ratio_to_fast_host_alone": {k: round(v / base, 2) for k, v in times.items()},
        "goal_with_backups": SLOW_HOST_GOAL, "recovery": recovery}
    print(f"\n(b) slow host: {FIGURES['slow_host']}")
    _write_results()
    assert times["with a slow host, backups"] <= SLOW_HOST_GOAL * base
    assert recovery["backups"]["backups"] >= 1 and recovery["no backups"]["backups"] == 0


def _write_results() -> None:
    path = os.environ.get("CHAOS_RESULTS")
    if not path:
        return
    from bench.report import now_utc, write_results

    write_results("recovery", dict(FIGURES), {
        "scoring_hosts": 2, "worker_slots": SLOTS, "queue_lease": "10 minutes (default)",
        "heartbeat_s": 3, "stall_s": 20, "backup_factor": 2}, now_utc(), path=Path(path))
