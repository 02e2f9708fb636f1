"""The chaos suite's cluster, faults and check (see test_chaos.py).

A `Cluster` is one Azurite, one control devhost and two scoring devhosts on one machine,
as test_multi_host.py runs them. During a round's job, `Faults` injects, one after the
other at random moments, drawn from a seeded random generator: a killed scoring worker
process, a killed scoring devhost (restarted), a killed control devhost (restarted), an
Azurite outage (stopped and restarted on the same data and ports), duplicate deliveries
of mini-batch messages. The scoring script (tests/scoring_scripts/chaos.py) fails, hangs
and ends its process at random on top. `check_round` then counts every input file in the
job's output and errors report.

Azurite is stopped with SIGTERM, not SIGKILL: killed, it loses the writes of its last
seconds that it had already acknowledged (its metadata is saved every few seconds), which
no storage account does, so the suite would only test the emulator.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import requests
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from batchfn.client import ApiError, BatchfnClient
from batchfn.errors import TransportError
from devhost.azurite import Azurite
from devhost.testing import DevHostError, RunningDevHost, running_devhost
from shared.contract import layout
from shared.contract.layout import STATE_CONTAINER
from shared.contract.messages import MiniBatchMessage
from shared.storage.account import StorageAccount
from shared.storage.queue_clients import minibatch_queue
from tests.conftest import upload_blobs

REPO = Path(__file__).resolve().parents[2]
ENDPOINT = "chaos"
FILES = 2_000
MINI_BATCH = 20
WORKER_SLOTS = 2
INPUT_FOLDER = "chaos-2k"
TERMINAL = ("Completed", "Failed", "Canceled")
FAULT_KINDS = ("kill_worker", "kill_scoring_host", "kill_control_host", "azurite_outage",
               "duplicate_messages")
# The chaos script's odds per attempt (and of a mini-batch failing on every attempt).
SCRIPT_ODDS = {"CHAOS_FAIL": "0.03", "CHAOS_HANG": "0.005", "CHAOS_EXIT": "0.005",
               "CHAOS_DOOMED": "0.02", "CHAOS_LATE_FAIL": "1"}
SETTINGS = {"mini_batch_size": MINI_BATCH, "max_concurrency_per_instance": WORKER_SLOTS,
            "error_threshold": -1, "retry_settings": {"max_retries": 2, "timeout": 4}}
CALL_TIMEOUT = 120.0  # how long a client call keeps retrying through faults

T = TypeVar("T")


@dataclass
class Tally:
    """What the suite did and found, over all rounds."""

    seed: int
    rounds: int = 0
    faults: Counter = field(default_factory=Counter)
    files_checked: int = 0
    in_output: int = 0
    in_errors: int = 0
    lost: int = 0
    duplicated: int = 0

    def line(self) -> str:
        kinds = ", ".join(f"{kind} {self.faults[kind]}" for kind in FAULT_KINDS)
        return (f"chaos tally (seed {self.seed}): rounds {self.rounds}, faults injected "
                f"{sum(self.faults.values())} ({kinds}), files checked {self.files_checked} "
                f"({self.in_output} in outputs, {self.in_errors} in errors reports), "
                f"lost {self.lost}, duplicated {self.duplicated}")


def retried(call: Callable[[], T], what: str, timeout: float = CALL_TIMEOUT) -> T:
    """`call()`, tried again while a host or Azurite is down (connection errors, 5xx)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (OSError, requests.RequestException, TransportError, AzureError) as exc:
            if isinstance(exc, ResourceNotFoundError):
                raise
            error: Exception = exc
        except ApiError as exc:
            if exc.status < 500:
                raise
            error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still failing after {timeout:.0f}s: {error}")
        time.sleep(0.5)


class Cluster:
    """Azurite, a control devhost and two scoring devhosts, each one killable."""

    def __init__(self, location: Path, work: Callable[[str], Path], python: str) -> None:
        self._location = location
        self._work = work
        self._python = python
        self._stack = ExitStack()
        self.azurite = Azurite(location=location)
        self.control: RunningDevHost | None = None
        self.scoring: list[RunningDevHost] = []
        self.client: BatchfnClient | None = None
        self.state_dir = work("chaos-state")

    def start(self, seed: int) -> Cluster:
        self._stack.callback(lambda: self.azurite.stop())
        self.azurite.start()
        # The Functions host's 10-minute queue lease and the default heartbeat settings: a
        # killed scoring host's mini-batches come back through the job's monitor.
        scoring = {
            "BATCHFN_ROLE": "scoring",
            "AzureFunctionsJobHost__extensions__queues__batchSize": "1",
            "AzureFunctionsJobHost__extensions__queues__newBatchThreshold":
                str(WORKER_SLOTS - 1),
        }
        self.control = self._stack.enter_context(running_devhost(
            script_root=REPO, connection_string=self.azurite.connection_string,
            env={"BATCHFN_ROLE": "control"}))
        for name in ("scoring-a", "scoring-b"):
            self.scoring.append(self._stack.enter_context(running_devhost(
                script_root=REPO, connection_string=self.azurite.connection_string,
                env={**scoring, "BATCHFN_WORK_DIR": str(self._work(name) / "work")},
                python=self._python)))
        self.client = BatchfnClient(url=self.control.url, key=self.control.key)
        self.client.create_endpoint(document={"name": ENDPOINT})
        model = self._work("chaos-model") / "model"
        model.mkdir()
        (model / "weights.txt").write_text("1")
        self.client.create_deployment(document={
            "name": "chaos", "endpoint_name": ENDPOINT, "model": {"path": str(model)},
            "code_configuration": {"code": str(REPO / "tests" / "scoring_scripts"),
                                   "scoring_script": "chaos.py"},
            "settings": SETTINGS,
            "environment_variables": {**SCRIPT_ODDS, "CHAOS_SEED": str(seed),
                                      "CHAOS_STATE_DIR": str(self.state_dir)},
        }, set_default=True)
        return self

    def close(self) -> None:
        self._stack.close()

    @property
    def blobs(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.azurite.connection_string)

    def upload_inputs(self) -> list[str]:
        """The 2,000 input files (names unique by base name, as the output shows them)."""
        names = [f"file{i:04d}.bin" for i in range(FILES)]
        upload_blobs(self.azurite.connection_string,
                     {f"{INPUT_FOLDER}/{name}": b"x" for name in names})
        return names

    # --- faults ---------------------------------------------------------------------------

    def kill_worker(self, rng: random.Random) -> bool:
        """SIGKILL one scoring worker process of a scoring host, if one runs."""
        workers = []
        for host in self.scoring:
            try:
                children = psutil.Process(host.pid).children(recursive=True)
            except (psutil.Error, Exception):  # noqa: BLE001 - the host is down right now
                continue
            for child in children:
                try:
                    if "shared.worker.serve import main" in " ".join(child.cmdline()):
                        workers.append(child)
                except psutil.Error:
                    pass
        if not workers:
            return False
        try:
            rng.choice(workers).send_signal(signal.SIGKILL)
        except psutil.Error:
            return False
        return True

    def kill_host(self, host: RunningDevHost, down: float) -> None:
        """SIGKILL a devhost (its workers too), then start it again after `down` seconds."""
        host.kill()
        time.sleep(down)
        for attempt in range(3):
            try:
                host.start()
                return
            except DevHostError:
                if attempt == 2:
                    raise

    def azurite_outage(self, down: float) -> None:
        """Stop Azurite (SIGTERM: its data is kept), start it on the same data and ports."""
        ports = (self.azurite.blob_port, self.azurite.queue_port, self.azurite.table_port)
        self.azurite.stop()
        time.sleep(down)
        self.azurite = Azurite(location=self._location, blob_port=ports[0],
                               queue_port=ports[1], table_port=ports[2])
        self.azurite.start()

    def duplicate_messages(self, job: str, rng: random.Random, copies: int,
                           is_over: Callable[[], bool]) -> int:
        """Send extra copies of `copies` random mini-batch messages of `job`, once it is
        planned; 0 if it ends first."""
        state = self.blobs.get_container_client(STATE_CONTAINER)
        while True:
            try:
                plan = json.loads(state.download_blob(layout.plan(job)).readall())
                break
            except ResourceNotFoundError:
                if is_over():
                    return 0
                time.sleep(0.2)
        queue = minibatch_queue(StorageAccount(connection_string=self.azurite.connection_string))
        for _ in range(copies):
            # Chunks hold as many mini-batches as fit: a copy names a chunk's own index.
            chunk = rng.randrange(plan["chunks"])
            manifest = json.loads(state.download_blob(layout.manifest(job, chunk)).readall())
            index = manifest["first"] + rng.randrange(len(manifest["batches"]))
            queue.send_message(MiniBatchMessage(job, index, chunk).encode())
        return copies


class Faults:
    """Injects faults into a running job from a thread of its own, one after the other."""

    def __init__(self, cluster: Cluster, rng: random.Random, kinds: list[str],
                 log: Callable[[str], None]) -> None:
        self._cluster = cluster
        self._rng = rng
        self._kinds = kinds
        self._log = log
        self.injected: Counter = Counter()
        self.errors: list[str] = []  # faults the harness could not inject (a test failure)

    def run(self, job: str, is_over: Callable[[], bool],
            near_end: Callable[[], bool]) -> None:
        """Inject each of the round's faults at a random moment while the job runs; the last
        one, one time in three, once the job is nearly done (its last mini-batches, the
        merge)."""
        for number, kind in enumerate(self._kinds):
            at_end = number == len(self._kinds) - 1 and self._rng.random() < 1 / 3
            deadline = time.monotonic() + self._rng.uniform(0.0, 4.0)
            while not (near_end() if at_end else time.monotonic() >= deadline):
                if is_over():
                    return
                time.sleep(0.05)
            try:
                done = self._inject(kind, job, at_end, is_over)
            except Exception as exc:  # noqa: BLE001 - reported by the test, after the round
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                self._log(f"  fault {kind} could not be injected: {exc}")
                return
            if done:
                self.injected[kind] += 1

    def _inject(self, kind: str, job: str, at_end: bool, is_over: Callable[[], bool]) -> bool:
        cluster, rng = self._cluster, self._rng
        # Mostly short; one time in four longer than an activity's retries last.
        down = round(rng.uniform(0.2, 3.0) if rng.random() < 0.75 else rng.uniform(5, 20), 1)
        if kind == "kill_worker":
            done = cluster.kill_worker(rng)
            detail = "" if done else " (none running)"
        elif kind == "kill_scoring_host":
            host = rng.choice(cluster.scoring)
            cluster.kill_host(host, down)
            done, detail = True, f" port {host.port}, down {down}s"
        elif kind == "kill_control_host":
            cluster.kill_host(cluster.control, down)
            done, detail = True, f", down {down}s"
        elif kind == "azurite_outage":
            cluster.azurite_outage(down)
            done, detail = True, f" {down}s"
        else:
            copies = rng.randint(3, 12)
            done = bool(retried(lambda: cluster.duplicate_messages(job, rng, copies, is_over),
                                "sending duplicates", 60))
            detail = f" {copies} copies" if done else " (the job ended before its plan)"
        self._log(f"  fault {kind}{detail}{' (near the end)' if at_end else ''}")
        return done


@dataclass(frozen=True)
class RoundResult:
    job: str
    status: str
    reason: str | None
    in_output: int
    in_errors: int
    lost: list[str]
    duplicated: list[str]


def check_round(client: BatchfnClient, job: str, final: dict[str, Any], names: list[str],
                download: Path) -> RoundResult:
    """Count each input file in the job's output and errors report: exactly once in all."""
    output: Counter = Counter()
    if final["status"] == "Completed":
        path = retried(lambda: client.download_job_output(job, "score", download),
                       "downloading the output")
        output.update(line for line in path.read_text().splitlines() if line)
    errors = Counter(row["file"] for row in retried(lambda: client.job_errors(job),
                                                    "reading the errors report"))
    lost = [name for name in names if output[name] + errors[name] == 0]
    duplicated = [name for name in names if output[name] + errors[name] > 1]
    strangers = set(output) | set(errors)
    duplicated += sorted(strangers - set(names))  # rows that are no input file at all
    return RoundResult(job, final["status"], final.get("reason"),
                       sum(1 for name in names if output[name]),
                       sum(1 for name in names if errors[name]), lost, duplicated)


def near_end(cluster: Cluster, job: str) -> bool:
    """Whether `job` has at most a few mini-batches left (or merges its output)."""
    try:
        state = cluster.client.get_job(job)
    except (ApiError, TransportError, OSError):
        return False
    batches = (state.get("progress") or {}).get("mini_batches") or {}
    return state["status"] == "Finalizing" or (
        batches.get("total", 0) > 0 and batches.get("pending", 0) <= 2)


def wait_terminal(client: BatchfnClient, job: str, timeout: float) -> dict[str, Any]:
    """The job once it is in a terminal state; TimeoutError (with its last state) if not."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = retried(lambda: client.get_job(job), "reading the job")
        if last["status"] in TERMINAL:
            return last
        time.sleep(0.5)
    raise TimeoutError(f"job {job} not in a terminal state after {timeout:.0f}s: {last}")


@contextmanager
def cluster_for(location: Path, work: Callable[[str], Path], python: str,
                seed: int) -> Iterator[Cluster]:
    cluster = Cluster(location, work, python)
    try:
        yield cluster.start(seed)
    finally:
        cluster.close()
