"""The scoring runtime: one per host process, called by the mini-batch queue trigger.

It turns a `MiniBatch` of a deployment into a `ScoringOutcome`: the deployment's model and
code are downloaded once per version (`AssetCache`), and run() is called in a warm worker
process of the deployment version's `WorkerPool`. The host signs short-lived read URLs of
the attempt's inputs (`ReadGrants`); the worker downloads them into a folder of their own
while the slot's previous mini-batch still runs, and encodes run()'s return into output
lines. Where the host runs as root, each deployment's workers run as an OS user of its own
(worker_users.py): the folders they write in (inputs, attempt logs, job outputs, home,
temp) are that user's, their model and code are readable by that user alone, and no
other deployment's are within reach (deployment_folders.py). Failures of user code are
outcomes, never raised.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
import urllib.request
import uuid
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from shared.contract.layout import ENVIRONMENTS_CONTAINER
from shared.contract.manifest import InputFile
from shared.contract.registry_records import AssetRef, DeploymentRecord
from shared.scoring.asset_cache import AssetCache
from shared.scoring.batch import FAILED, SUCCEEDED, MiniBatch, ScoringOutcome
from shared.scoring.deployment_folders import (
    DeploymentFolders,
    asset_view,
    deployment_folders,
    hide_contents,
    keep_private,
)
from shared.scoring.environments import EnvironmentBuildError, EnvironmentCache, worker_runtime
from shared.scoring.gpus import detect_gpus, gpu_types
from shared.scoring.grants import ReadGrants
from shared.scoring.heartbeats import Holding
from shared.scoring.isolation import WorkerAccount, WorkerAccountError, prepare_worker_folder
from shared.scoring.part_check import InvalidPart, check_part
from shared.scoring.pool import RunResult, WorkerPool, download_limit, worker_cpu_threads
from shared.scoring.work_folders import (
    local_paths,
    ram_scratch_folder,
    relative_parts,
    safe_segment,
)
from shared.scoring.worker_users import WorkerUsers
from shared.storage.account import StorageAccount
from shared.storage.failure_records import InputFailure
from shared.worker.protocol import InputDownload, TablePiece, WorkerSpec, is_local_write_error

log = logging.getLogger("batchfn.scoring")

# How long an input's read URL outlives the download limit (retries, a slow start).
GRANT_MARGIN = timedelta(minutes=5)
# Asset files download on threads; the SDK's requests session keeps 10 connections per
# host, and more threads than that open and discard connections.
DOWNLOAD_THREADS = 10
WORK_DIR_SETTING = "BATCHFN_WORK_DIR"
PREFETCH_SETTING = "BATCHFN_PREFETCH"  # "0": no slot downloads its next mini-batch ahead
BUILTIN_MLFLOW = "builtin:mlflow"  # the "code" of a deployment scored by the MLflow scorer
MLFLOW_AZUREML_SEPARATOR = ","  # Azure ML's MLflow output lines are comma-separated
# The built-in MLflow scorer's script, found without importing it (it imports pandas).
MLFLOW_SCRIPT = Path(importlib.util.find_spec("shared.worker.mlflow.batch_driver").origin)


@dataclass
class _PoolEntry:
    pool: WorkerPool
    folders: DeploymentFolders
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)


class ScoringRuntime:
    """One per host process. Caches deployment assets by version, keeps warm worker pools.

    `score` is thread-safe: the host calls it from many queue invocations at once. Input
    downloads of waiting mini-batches overlap scoring, but at most
    `settings.max_concurrency_per_instance` run() calls per deployment version run at once.
    A pool unused for `pool_idle_seconds` is retired (its workers get shutdown()).
    """

    def __init__(self, account: StorageAccount, work_dir: Path, *,
                 gpus: Sequence[str] | None = None, init_timeout: float = 600.0,
                 pool_idle_seconds: float = 900.0,
                 download_threads: int = DOWNLOAD_THREADS,
                 scratch_dir: Path | None = None, prefetch: bool = True,
                 worker_users: WorkerUsers | None = None,
                 share_environments: bool = True) -> None:
        """`worker_users`: which OS account each deployment's workers run as (None: the
        host's own user, for all). `share_environments`: built environments are packed
        into (and unpacked from) the environments container, so hosts build each one once
        between them."""
        self._blobs = account.blob_service(**download_client_options())
        self._grants = ReadGrants(self._blobs)
        self._work_dir = Path(work_dir).resolve()
        self._work_dir.mkdir(parents=True, exist_ok=True)
        # Inputs and attempt logs live only while run() works: in RAM when there is room.
        self._scratch = scratch_dir or ram_scratch_folder() or self._work_dir
        self._scratch.mkdir(parents=True, exist_ok=True)
        self._users = worker_users or WorkerUsers(per_deployment=False)
        self._disk_inputs = self._work_dir / "inputs"
        self._inputs_root = self._scratch
        self._assets_root = self._work_dir / "assets"
        self._outputs_root = self._work_dir / "outputs"
        if self._users.per_deployment:
            # Each deployment reaches its own folders only (deployment_folders.py).
            keep_private(self._assets_root)
            hide_contents(self._outputs_root)
            hide_contents(self._scratch)
        self._gpus = tuple(gpus) if gpus is not None else detect_gpus()
        self._gpu_types = gpu_types(self._gpus)
        self._init_timeout = init_timeout
        self._prefetch = prefetch
        self._pool_idle_seconds = pool_idle_seconds
        self._downloads = ThreadPoolExecutor(download_threads,
                                             thread_name_prefix="batchfn-download")
        self._assets = AssetCache(self._blobs, self._assets_root, self._downloads)
        self._environments = EnvironmentCache(
            self._work_dir / "envs", self._blobs.get_container_client(ENVIRONMENTS_CONTAINER)
            if share_environments else None)
        self._runtime_path = worker_runtime(self._work_dir / "runtime")
        self._pools: dict[tuple[Any, ...], _PoolEntry] = {}
        self._lock = threading.Lock()
        self._closed = False
        _live_runtimes.add(self)

    @property
    def gpus(self) -> tuple[str, ...]:
        """The GPU ids handed to worker slots in turn (empty on a CPU host)."""
        return self._gpus

    def job_output_dir(self, job_id: str, account: WorkerAccount | None = None) -> Path:
        """The job's local AZUREML_BI_OUTPUT_PATH folder, where scripts may write files:
        the job's deployment's workers' own (`account`, where it is made)."""
        self._outputs_root.mkdir(exist_ok=True)
        return prepare_worker_folder(self._outputs_root / safe_segment(job_id), account)

    def score(self, deployment: DeploymentRecord, batch: MiniBatch,
              holding: Holding | None = None) -> ScoringOutcome:
        """Score one attempt of `batch` with `deployment`'s script; see ScoringOutcome.

        Storage errors (other than a missing input, which fails the batch) propagate so
        that the queue retries the message. `holding` (the host's heartbeat entry) is told
        when a worker slot takes the batch, and its `stop` event stops it (STOPPED).
        """
        started = time.monotonic()
        try:
            entry = self._checkout(deployment)
        except (EnvironmentBuildError, WorkerAccountError) as exc:
            log.warning("job %s mini-batch %d: %s", batch.job_id, batch.index, exc)
            return ScoringOutcome(
                job_id=batch.job_id, index=batch.index, attempt=batch.attempt, status=FAILED,
                part=None, rows=0, missing=(), succeeded=0, failed=batch.inputs,
                error=str(exc), traceback=None, log=f"[batchfn] {exc}\n",
                duration=time.monotonic() - started, download_seconds=0.0,
                startup_failed=True)
        folder = None
        try:
            folder, result = self._run_with_inputs(entry, batch, holding)
            result = _checked(result, batch)
            downloaded_at = result.downloaded_at or time.monotonic()
            outcome = _outcome(batch, result, started, downloaded_at - started,
                               self._gpu_types.get(result.gpu or ""))
        finally:
            self._checkin(entry)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        log.info("job %s mini-batch %d attempt %d: %s (%d succeeded, %d failed) in %.2fs",
                 batch.job_id, batch.index, batch.attempt, outcome.status, outcome.succeeded,
                 outcome.failed, outcome.duration)
        return outcome

    def _run_with_inputs(self, entry: _PoolEntry, batch: MiniBatch,
                         holding: Holding | None) -> tuple[Path, RunResult]:
        """Run the batch in a worker that downloads its inputs into a fresh folder.

        The folder is in RAM when there is room; where it cannot take the inputs (full,
        read-only), this and later attempts use the work folder on disk instead.
        """
        name = f"{batch.index}-{batch.attempt}-{uuid.uuid4().hex[:8]}"
        root = self._inputs_root
        try:
            return self._run_in_folder(entry, root, batch, name, holding)
        except OSError as exc:
            if root == self._disk_inputs or not is_local_write_error(exc):
                raise
            log.warning("input folder %s cannot take mini-batch inputs (%s); using %s from now",
                        root, exc, self._disk_inputs)
            self._inputs_root = self._disk_inputs
        return self._run_in_folder(entry, self._disk_inputs, batch, name, holding)

    def _run_in_folder(self, entry: _PoolEntry, root: Path, batch: MiniBatch, name: str,
                       holding: Holding | None) -> tuple[Path, RunResult]:
        # The worker makes the folders inside its deployment's input folder.
        folder = entry.folders.inputs(root) / safe_segment(batch.job_id) / name
        output_dir = str(self.job_output_dir(batch.job_id, entry.folders.account))
        watch = _watch(holding, len(batch.pieces) or len(batch.files))
        if batch.pieces:
            return folder, self._run_rows(entry.pool, batch, output_dir, watch)
        paths = local_paths(batch.files, folder)
        lifetime = timedelta(seconds=download_limit(len(paths))) + GRANT_MARGIN

        def downloads() -> list[InputDownload]:
            urls = self._grants.urls(batch.files, lifetime)
            return [InputDownload(url, file.display_name)
                    for url, file in zip(urls, batch.files, strict=True)]

        try:
            result = entry.pool.run([str(path) for path in paths], batch.timeout,
                                    output_dir, downloads=downloads,
                              output_format=batch.output_format,
                              names=[file.display_name for file in batch.files],
                              scratch=str(folder), **watch)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder, result

    def _run_rows(self, pool: WorkerPool, batch: MiniBatch, output_dir: str,
                  watch: dict[str, Any]) -> RunResult:
        """Run a tabular mini-batch: the worker reads its row ranges from read URLs."""
        lifetime = timedelta(seconds=download_limit(len(batch.pieces))) + GRANT_MARGIN

        def pieces() -> list[TablePiece]:
            urls = dict(zip(batch.files, self._grants.urls(batch.files, lifetime), strict=True))
            return [TablePiece(piece.file.display_name, urls[piece.file], piece.size,
                               piece.etag, piece.row_range) for piece in batch.pieces]

        return pool.run((), batch.timeout, output_dir,
                        output_format=batch.output_format, input_format=batch.input_format,
                        table_pieces=pieces, passthrough_columns=batch.passthrough_columns,
                        **watch)

    def close(self) -> None:
        """Retire all workers: shutdown() in each idle one, then end them all."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            entries = list(self._pools.values())
            self._pools.clear()
        for entry in entries:
            entry.pool.close()
        self._downloads.shutdown(wait=True, cancel_futures=True)
        if self._scratch != self._work_dir:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def _checkout(self, deployment: DeploymentRecord) -> _PoolEntry:
        key = _pool_key(deployment)
        self._retire_idle_pools()
        with self._lock:
            self._ensure_open()
            entry = self._pools.get(key)
            if entry is not None:
                entry.users += 1
                return entry
        # Downloads happen outside the lock: other deployments keep scoring meanwhile.
        spec, folders = self._worker_spec(deployment)
        with self._lock:
            self._ensure_open()
            entry = self._pools.get(key)
            if entry is None:
                account = folders.account
                pool = WorkerPool(spec, deployment.settings.max_concurrency_per_instance,
                                  scratch_dir=folders.logs, gpus=self._gpus,
                                  init_timeout=self._init_timeout, prefetch=self._prefetch,
                                  account=account, home=folders.home,
                                  temp=None if account is None else folders.temp)
                entry = self._pools[key] = _PoolEntry(pool, folders)
            entry.users += 1
            return entry

    def _checkin(self, entry: _PoolEntry) -> None:
        with self._lock:
            entry.users -= 1
            entry.last_used = time.monotonic()

    def _retire_idle_pools(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [key for key, entry in self._pools.items()
                    if entry.users == 0 and now - entry.last_used > self._pool_idle_seconds]
            retired = [self._pools.pop(key).pool for key in idle]
        for pool in retired:
            threading.Thread(target=pool.close, name="batchfn-retire-pool", daemon=True).start()

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("the scoring runtime is closed")

    def _worker_spec(self, deployment: DeploymentRecord
                     ) -> tuple[WorkerSpec, DeploymentFolders]:
        """What the deployment's workers run, and their folders: its environment built,
        its account ready (WorkerAccountError where it cannot be), its assets in view."""
        python = runtime_path = None
        if deployment.environment is not None:
            python = self._environments.get(deployment.environment).python
            runtime_path = str(self._runtime_path)
        account = self._users.account(deployment.endpoint_name, deployment.name,
                                      python=python, runtime_path=runtime_path,
                                      folders=(self._work_dir, self._scratch))
        folders = deployment_folders(self._work_dir, self._scratch, account)
        model_dir = self._asset(deployment.model, folders)
        separator = " "
        if deployment.code is None:
            # An MLflow model without a script: the built-in scorer is its script, run from
            # an empty folder of its own (Azure ML runs scripts from their code folder).
            script = MLFLOW_SCRIPT
            if runtime_path is not None:
                # Inside an environment it runs from the runtime's copy.
                script = self._runtime_path.joinpath(
                    *MLFLOW_SCRIPT.parts[-4:])  # shared/worker/mlflow/batch_driver.py
            code_dir = self._work_dir / "builtin" / "mlflow"
            code_dir.mkdir(parents=True, exist_ok=True)
            separator = MLFLOW_AZUREML_SEPARATOR
        else:
            assert deployment.scoring_script is not None  # a record has both or neither
            code_dir = self._asset(deployment.code, folders) / deployment.code.root
            script = code_dir.joinpath(*relative_parts(deployment.scoring_script))
        spec = WorkerSpec(
            script_path=str(script),
            code_dir=str(code_dir),
            model_dir=str(model_dir),
            logging_level=deployment.settings.logging_level,
            environment=dict(deployment.environment_variables),
            cpu_threads=worker_cpu_threads(deployment.settings.max_concurrency_per_instance),
            azureml_separator=separator,
            python=python,
            runtime_path=runtime_path,
        )
        return spec, folders

    def _asset(self, asset: AssetRef, folders: DeploymentFolders) -> Path:
        """The asset's folder as the deployment's workers see it (downloaded if needed)."""
        source = self._assets.folder(asset)
        return asset_view(source, folders, source.relative_to(self._assets_root))


def _watch(holding: Holding | None, inputs: int) -> dict[str, Any]:
    """WorkerPool.run's `stop` and `on_start` for a mini-batch the host reports on."""
    if holding is None:
        return {}
    return {"stop": holding.stop, "on_start": lambda: holding.running(inputs)}


def download_client_options() -> dict[str, Any]:
    """SDK options of the runtime's blob client: no environment lookups without a proxy.

    With `use_env_settings` (the default) `requests` scans the whole environment for proxy
    variables and looks for a .netrc file on every request: about a quarter of the
    Python time of a small download, in the process whose GIL all downloads share. Where
    a proxy is configured the SDK keeps its default behaviour, so proxies still apply.
    """
    return {} if urllib.request.getproxies() else {"use_env_settings": False}


def _pool_key(deployment: DeploymentRecord) -> tuple[Any, ...]:
    """Everything a worker process depends on: a change means a new pool."""
    code = deployment.code
    return (
        deployment.endpoint_name, deployment.name,
        deployment.model.name, deployment.model.version, deployment.model.digest,
        (code.name, code.version, code.digest) if code is not None else BUILTIN_MLFLOW,
        deployment.scoring_script, tuple(sorted(deployment.environment_variables.items())),
        deployment.settings.logging_level, deployment.settings.max_concurrency_per_instance,
        deployment.environment.digest if deployment.environment is not None else None,
    )


def _checked(result: RunResult, batch: MiniBatch) -> RunResult:
    """`result`, failed if its part cannot be stored (part_check.py)."""
    if result.status != SUCCEEDED:
        return result
    try:
        check_part(result.part, batch.output_format, result.rows)
    except InvalidPart as exc:
        error = f"run()'s return cannot be stored as output: {exc}"
        return replace(result, status=FAILED, part=None, error=error, traceback=None,
                       log=result.log + f"[batchfn] {error}\n")
    return result


def _outcome(batch: MiniBatch, result: RunResult, started: float,
             download_seconds: float, gpu: str | None = None) -> ScoringOutcome:
    """The attempt's outcome, its inputs (files, or rows) counted.

    Inputs that failed on their own (result.failed_inputs) are failed; of the others, as
    many as run() returned rows for succeeded (Azure ML's rule: each returned row is one
    succeeded input), and the rest failed too.
    """
    total = batch.inputs
    if result.status != SUCCEEDED:
        return _attempt(batch, result, started, download_seconds, succeeded=0, failed=total,
                        gpu=gpu)
    succeeded = max(0, min(result.rows, total - result.failed_inputs))
    by_name = {file.display_name: file for file in batch.files}
    failures = tuple(InputFailure(by_name.get(f.file, InputFile("", "", f.file)), f.error,
                                  f.row, f.rows) for f in result.failed)
    missing = () if batch.pieces else tuple(
        batch.files[i] for i in result.missing if 0 <= i < total)
    return _attempt(batch, result, started, download_seconds, succeeded=succeeded,
                    failed=total - succeeded, failures=failures, missing=missing,
                    unlisted=max(0, result.failed_inputs - _counted(batch, failures)), gpu=gpu)


def _counted(batch: MiniBatch, failures: tuple[InputFailure, ...]) -> int:
    """How many inputs the listed `failures` make: rows, or distinct files of the batch."""
    if batch.pieces:
        return sum(failure.rows for failure in failures)
    return len({failure.file for failure in failures} & set(batch.files))


def _attempt(batch: MiniBatch, result: RunResult, started: float, download_seconds: float, *,
             succeeded: int, failed: int, failures: tuple[InputFailure, ...] = (),
             missing: tuple[InputFile, ...] = (), unlisted: int = 0,
             gpu: str | None = None) -> ScoringOutcome:
    ok = result.status == SUCCEEDED
    return ScoringOutcome(
        job_id=batch.job_id,
        index=batch.index,
        attempt=batch.attempt,
        status=result.status,
        part=result.part if ok else None,
        rows=result.rows if ok else 0,
        missing=missing,
        succeeded=succeeded,
        failed=failed,
        error=result.error,
        traceback=result.traceback,
        log=result.log,
        duration=time.monotonic() - started,
        download_seconds=download_seconds,
        failures=failures,
        unlisted=unlisted,
        startup_failed=result.startup_failed,
        input_bytes=result.input_bytes,
        gpu=gpu,
        run_seconds=result.run_seconds,
    )


_live_runtimes: weakref.WeakSet[ScoringRuntime] = weakref.WeakSet()
_default: ScoringRuntime | None = None
_default_lock = threading.Lock()


def default_runtime() -> ScoringRuntime:
    """The process-wide runtime over AzureWebJobsStorage, working in BATCHFN_WORK_DIR.

    Without BATCHFN_WORK_DIR it works in <temp dir>/batchfn-work, so a restarted host on
    the same machine reuses the downloaded assets. BATCHFN_PREFETCH=0 turns off the
    download of each slot's next mini-batch while run() works (for inputs so large that
    two mini-batches of them do not fit the scratch folder). Each deployment's workers
    run as its own user where the host runs as root (worker_users.WorkerUsers).
    """
    global _default
    with _default_lock:
        if _default is None:
            work_dir = os.environ.get(WORK_DIR_SETTING) or os.path.join(
                tempfile.gettempdir(), "batchfn-work")
            prefetch = os.environ.get(PREFETCH_SETTING, "1").strip() != "0"
            _default = ScoringRuntime(StorageAccount.from_settings(), Path(work_dir),
                                      prefetch=prefetch,
                                      worker_users=WorkerUsers.from_settings())
        return _default


@atexit.register
def _close_live_runtimes() -> None:
    # Worker processes are not daemonic (scripts may start their own processes), so they
    # must be ended before multiprocessing's exit handler waits for them.
    for runtime in list(_live_runtimes):
        runtime.close()
