"""What every benchmark script shares: the stack it measures, data upload, timing, results.

Each script starts its own Azurite and devhost (`running_stack`), uploads its data, measures
one run, prints the ratios and writes `bench/results/<name>.json` with the figures, the
settings, the git commit, the date and the machine it ran on. Ratios measured in one run
are the claims: the machine is shared and noisy, absolute rates drift between runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import requests
from azure.storage.blob import BlobServiceClient, ContainerClient

from batchfn.client import JOB_TERMINAL_STATUSES, BatchfnClient
from devhost.azurite import Azurite
from devhost.testing import RunningDevHost, running_devhost
from shared.contract.layout import DATA_CONTAINER
from shared.contract.timestamps import parse_time
from shared.scoring.worker_users import ALLOW_ROOT_SETTING

REPO = Path(__file__).resolve().parents[1]
# The compute the MNIST sample deployments name, as the tutorial creates it.
TUTORIAL_COMPUTE = {"name": "batch-cluster", "type": "amlcompute", "min_instances": 0,
                    "max_instances": 5}


class BenchFailed(RuntimeError):
    """The product did not do what the benchmark needs (a job failed, a step timed out)."""


@dataclass
class Stack:
    """A running Azurite + devhost pair and a client of the devhost."""

    azurite: Azurite
    host: RunningDevHost
    client: BatchfnClient
    work_dir: Path

    @property
    def connection_string(self) -> str:
        return self.azurite.connection_string

    def blob_service(self, connections: int = 10) -> BlobServiceClient:
        """A client of the stack's Azurite whose HTTP pool keeps `connections` open."""
        return blob_service(self.connection_string, connections)


@contextmanager
def running_stack(name: str, env: dict[str, str] | None = None,
                  azurite_debug_log: Path | None = None) -> Iterator[Stack]:
    """Start Azurite and devhost in a fresh temporary folder; stop both and remove it.
    `azurite_debug_log`: where Azurite logs every request (slower: for counting only)."""
    # SIGTERM (a `timeout` wrapper, a closed terminal) must still stop devhost and Azurite.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    work_dir = Path(tempfile.mkdtemp(prefix=f"batchfn-bench-{name}-"))
    azurite = Azurite(work_dir / "azurite", debug_log=azurite_debug_log).start()
    try:
        # A benchmark is development: where deployments' users cannot run the workers (a
        # checkout or Python private to root), they run as root instead of not at all.
        host_env = {"BATCHFN_WORK_DIR": str(work_dir / "work"),
                    ALLOW_ROOT_SETTING: os.environ.get(ALLOW_ROOT_SETTING, "1"), **(env or {})}
        with running_devhost("function_app", script_root=REPO,
                             connection_string=azurite.connection_string,
                             env=host_env) as host:
            client = BatchfnClient(url=host.url, key=host.key, timeout=120.0)
            try:
                yield Stack(azurite, host, client, work_dir)
            except BaseException:
                print("--- last devhost log lines ---", file=sys.stderr)
                print(host.logs()[-4000:], file=sys.stderr)
                raise
    finally:
        azurite.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def blob_service(connection_string: str, connections: int) -> BlobServiceClient:
    """A BlobServiceClient whose requests session pools `connections` connections per host.

    The SDK's default session keeps 10; threads beyond the pool would open and drop
    connections, so every concurrent measurement sizes the pool to its threads.
    """
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=connections,
                                            pool_maxsize=connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return BlobServiceClient.from_connection_string(connection_string, session=session)


def data_container(service: BlobServiceClient) -> ContainerClient:
    """The default datastore's container (`workspaceblobstore`), created if missing."""
    container = service.get_container_client(DATA_CONTAINER)
    if not container.exists():
        container.create_container()
    return container


def upload_blobs(container: ContainerClient, items: Iterable[tuple[str, bytes]],
                 threads: int = 16) -> float:
    """Upload (name, body) pairs concurrently; returns the seconds it took."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda item: container.upload_blob(item[0], item[1], overwrite=True),
                          items):
            pass
    return time.perf_counter() - started


def download_rate(container: ContainerClient, names: Sequence[str], threads: int) -> float:
    """Files/s of downloading every blob in `names` with a pool of `threads` (no scoring)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda name: container.download_blob(name).readall(), names):
            pass
    return len(names) / (time.perf_counter() - started)


def async_download_rate(connection_string: str, container: str, names: Sequence[str],
                        concurrency: int) -> float:
    """Files/s of downloading every blob in `names` with the asyncio client, `concurrency`
    requests in flight (no scoring): the cheapest way per file this SDK has."""
    from azure.storage.blob.aio import BlobServiceClient as AsyncClient

    async def download_all() -> float:
        async with AsyncClient.from_connection_string(connection_string) as service:
            client = service.get_container_client(container)
            slots = asyncio.Semaphore(concurrency)

            async def one(name: str) -> None:
                async with slots:
                    await (await client.download_blob(name)).readall()

            started = time.perf_counter()
            await asyncio.gather(*(one(name) for name in names))
            return len(names) / (time.perf_counter() - started)

    return asyncio.run(download_all())


def signed_get_download_rate(connection_string: str, container: str, names: Sequence[str],
                             concurrency: int) -> float:
    """Files/s of plain HTTP GETs (aiohttp) of read URLs signed per blob, `concurrency` in
    flight: how a scoring worker downloads its inputs. Signing is included in the time."""
    import aiohttp

    from shared.contract.manifest import InputFile
    from shared.scoring.grants import ReadGrants

    async def download_all() -> float:
        started = time.perf_counter()
        files = [InputFile(container, name, name) for name in names]
        urls = ReadGrants(BlobServiceClient.from_connection_string(connection_string)).urls(
            files, timedelta(minutes=30))
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            async def one(url: str) -> None:
                async with session.get(url) as response:
                    response.raise_for_status()
                    await response.read()

            await asyncio.gather(*(one(url) for url in urls))
        return len(names) / (time.perf_counter() - started)

    return asyncio.run(download_all())


@dataclass(frozen=True)
class JobRun:
    """One job timed from the client: invoke → a terminal status."""

    name: str
    files: int
    invoke_seconds: float
    total_seconds: float
    final: dict[str, Any]
    finalizing_seen_at: float | None  # seconds after invoke when `Finalizing` was first seen

    @property
    def files_per_second(self) -> float:
        return self.files / self.total_seconds

    def record_seconds(self, start_field: str, end_field: str) -> float | None:
        """Seconds between two timestamps of the job record or its progress."""
        start = self.final.get(start_field) or self.final["progress"].get(start_field)
        end = self.final.get(end_field) or self.final["progress"].get(end_field)
        if not (start and end):
            return None
        return (parse_time(end) - parse_time(start)).total_seconds()


def run_job(client: BatchfnClient, endpoint: str, input_uri: str, files: int, *,
            deployment: str | None = None, settings: dict[str, Any] | None = None,
            poll: float = 0.05, timeout: float = 900.0) -> JobRun:
    """Invoke and poll until the job ends; it must end Completed with every file scored.

    The client polls every `poll` seconds once the job's progress shows it within
    `ENDGAME_FRACTION` of its files (or before progress exists), and every
    `SLOW_POLL_SECONDS` before that: each poll costs the host two storage reads, which on a
    small machine would slow the very pipeline being timed, while the end — what the
    figure hinges on — is still seen within `poll`.
    """
    started = time.perf_counter()
    job = client.invoke(endpoint, input_uri, deployment_name=deployment, settings=settings)
    invoked = time.perf_counter()
    finalizing_seen = None
    while True:
        current = client.get_job(job["name"])
        now = time.perf_counter()
        if current["status"] == "Finalizing" and finalizing_seen is None:
            finalizing_seen = now - started
        if current["status"] in JOB_TERMINAL_STATUSES:
            break
        if now - started > timeout:
            raise BenchFailed(f"job {job['name']} still {current['status']} after {timeout:.0f}s")
        time.sleep(poll if _near_end(current) else max(poll, SLOW_POLL_SECONDS))
    run = JobRun(job["name"], files, invoked - started, now - started, current, finalizing_seen)
    succeeded = current.get("progress", {}).get("files", {}).get("succeeded")
    if current["status"] != "Completed" or succeeded != files:
        raise BenchFailed(f"job {job['name']} ended {current['status']} "
                          f"({current.get('reason')}), {succeeded}/{files} files succeeded")
    return run


SLOW_POLL_SECONDS = 0.25
ENDGAME_FRACTION = 0.25


def _near_end(job: dict[str, Any]) -> bool:
    files = (job.get("progress") or {}).get("files") or {}
    total = files.get("total") or 0
    return not total or files.get("pending", 0) <= ENDGAME_FRACTION * total


class RssSampler:
    """Samples the RSS of a process tree (and extra processes) in a background thread."""

    def __init__(self, root_pid: int, extra: dict[str, int] | None = None,
                 interval: float = 0.2) -> None:
        self._root_pid = root_pid
        self._extra = dict(extra or {})
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self.peak_by_process: dict[str, int] = {}
        self.peak_tree_total = 0
        self.samples = 0

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def _sample(self) -> None:
        try:
            root = psutil.Process(self._root_pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total = 0
        for process in tree:
            rss = _rss(process)
            if rss is None:
                continue
            total += rss
            self._note(f"{_describe(process)} [{process.pid}]", rss)
        for label, pid in self._extra.items():
            rss = _rss(psutil.Process(pid)) if psutil.pid_exists(pid) else None
            if rss is not None:
                self._note(label, rss)
        self.peak_tree_total = max(self.peak_tree_total, total)
        self.samples += 1

    def _note(self, label: str, rss: int) -> None:
        self.peak_by_process[label] = max(self.peak_by_process.get(label, 0), rss)


def _rss(process: psutil.Process) -> int | None:
    try:
        return process.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _describe(process: psutil.Process) -> str:
    try:
        command = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    # "python -m devhost ..." / "python -c <worker bootstrap>": the module or first word is enough.
    words = [Path(word).name for word in command[:4]]
    return " ".join(words)[:80]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (nearest rank) of `values`."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
