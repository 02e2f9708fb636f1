"""Shared fixtures: one real Azurite per test session, on free ports."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from devhost.azurite import Azurite
from devhost.testing import RunningDevHost, running_devhost
from shared.contract.layout import DATA_CONTAINER
from shared.scoring.isolation import NOBODY_ID, WorkerAccount, unreachable
from shared.scoring.worker_users import ALLOW_ROOT_SETTING

REPO = Path(__file__).resolve().parent.parent
SCORING_SCRIPTS = REPO / "tests" / "scoring_scripts"

# The devhosts of the tests run as root (here and in CI) from a checkout and an interpreter
# that other users often cannot reach (a clone in a `mktemp -d` folder, a pyenv Python in
# /root): there, deployments' workers could not run as users of their own, and a scoring
# host would refuse to score. The tests are development: they let such workers run as root.
# Where the users can run them they still do; the isolation tests run on an interpreter
# they can reach (worker_user_python) with this setting off.
os.environ.setdefault(ALLOW_ROOT_SETTING, "1")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A real Azurite for the whole session; stopped at the end."""
    server = Azurite(location=tmp_path_factory.mktemp("azurite")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def worker_tmp() -> Iterator[Callable[[str], Path]]:
    """Makes folders that scoring workers can reach and write in: `worker_tmp("name")`.

    Where tests run as root, workers run as `nobody` (shared/scoring/isolation.py), and
    pytest's own temporary folders are private to the user running the tests.
    """
    root = Path(tempfile.mkdtemp(prefix="batchfn-tests-"))
    root.chmod(0o755)

    def make(name: str) -> Path:
        folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        folder.chmod(0o1777)  # sticky, like /tmp: each user removes only its own files
        return folder

    try:
        yield make
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def worker_python(worker_tmp) -> str | None:
    """An interpreter with this project's packages that scoring workers can run as users of
    their own (`nobody`, or a deployment's user: neither owns these files): this one, or a
    venv of the system's Python of the same version when this one lives in root's private
    home; None where there is none, where the project or its packages are out of those
    users' reach, or where the tests do not run as root (a host then runs workers as its
    own user)."""
    if os.geteuid() != 0:
        return None
    nobody = WorkerAccount("nobody", NOBODY_ID, NOBODY_ID)
    if not any(unreachable(Path(p), nobody) for p in (sys.executable, *sys.path) if p):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if system is None or unreachable(Path(system), nobody):
        return None
    if any(unreachable(Path(p), nobody) for p in (REPO, *site.getsitepackages())):
        return None  # the project or its packages sit below a folder private to root
    venv = worker_tmp("python")
    venv.chmod(0o755)
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next((venv / "lib").glob("python*/site-packages"))
    (site_packages / "batchfn-tests.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return str(venv / "bin" / "python")


@pytest.fixture(scope="session")
def worker_user_python(worker_python) -> str:
    """`worker_python`, or a skip where workers cannot run as another user."""
    if worker_python is None:
        pytest.skip("no interpreter that scoring workers can run as another user here (the "
                    "tests must run as root, and user nobody must reach the project and its "
                    "packages: a checkout below a mode-700 folder is out of its reach)")
    return worker_python


@pytest.fixture(scope="session")
def storage_connection(azurite: Azurite) -> str:
    return azurite.connection_string


# Heartbeats every second and a 5 s stall threshold: a killed host's mini-batches come back
# within seconds in the tests that kill one (the defaults are 3 s and 20 s).
FAST_RECOVERY = {"BATCHFN_HEARTBEAT_SECONDS": "1", "BATCHFN_STALL_SECONDS": "5"}


@contextmanager
def scoring_devhost(connection_string: str, scratch: Path) -> Iterator[RunningDevHost]:
    """devhost serving the app, its scoring runtime working under `scratch`, with
    FAST_RECOVERY (the queue lease is the Functions host's 10 minutes)."""
    with running_devhost("function_app", script_root=REPO, connection_string=connection_string,
                         env={"BATCHFN_WORK_DIR": str(scratch / "work"), **FAST_RECOVERY}
                         ) as running:
        yield running


@contextmanager
def split_devhosts(connection_string: str, work: Path, worker_slots: int,
                   env: dict[str, str] | None = None) -> Iterator[dict[str, RunningDevHost]]:
    """One control devhost and two scoring devhosts (`scoring-a`, `scoring-b`) on one
    Azurite, as the two Function apps run in Azure; each scoring host takes at most
    `worker_slots` mini-batches at once, through the app settings the scoring image sets."""
    common = dict(env or {})
    scoring = {
        **common, "BATCHFN_ROLE": "scoring",
        "AzureFunctionsJobHost__extensions__queues__batchSize": "1",
        "AzureFunctionsJobHost__extensions__queues__newBatchThreshold": str(worker_slots - 1),
    }
    with ExitStack() as stack:
        started = {"control": stack.enter_context(running_devhost(
            script_root=REPO, connection_string=connection_string,
            env={**common, "BATCHFN_ROLE": "control"}))}
        for name in ("scoring-a", "scoring-b"):
            started[name] = stack.enter_context(running_devhost(
                script_root=REPO, connection_string=connection_string,
                env={**scoring, "BATCHFN_WORK_DIR": str(work / name)}))
        yield started


@pytest.fixture(scope="module")
def scratch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for one test module's files: models, inputs, the scoring runtime's work."""
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def host(storage_connection: str, scratch: Path) -> Iterator[RunningDevHost]:
    """The devhost one test module talks to: the app with its scoring runtime
    (scoring_devhost). A module that needs other settings defines its own."""
    with scoring_devhost(storage_connection, scratch) as running:
        yield running


def deploy_test_script(client: Any, scratch: Path, endpoint: str, name: str, script: str,
                       settings: dict, env: dict[str, str] | None = None,
                       set_default: bool = False, **fields: Any) -> None:
    """Deploy one of tests/scoring_scripts (with a one-file model) through `client`."""
    model = scratch / "model" / "model"
    if not model.exists():
        model.mkdir(parents=True)
        (model / "weights.txt").write_text("1")
    client.create_deployment(document={
        "name": name, "endpoint_name": endpoint, "model": {"path": str(model)},
        "code_configuration": {"code": str(SCORING_SCRIPTS), "scoring_script": script},
        "settings": settings, "environment_variables": env or {}, **fields,
    }, set_default=set_default)


SAMPLE_COMPUTE = "batch-cluster"  # what Azure ML's sample deployments name


def ensure_compute(client: Any, name: str = SAMPLE_COMPUTE, max_instances: int = 5) -> None:
    """Create the compute a deployment names, as Azure ML's tutorials do before deploying
    (`compute create -n batch-cluster --max-instances 5`), unless an earlier test did."""
    from batchfn.errors import ConflictError

    try:
        client.create_compute(document={"type": "amlcompute", "max_instances": max_instances},
                              name=name)
    except ConflictError:
        pass


@pytest.fixture
def unique_name() -> str:
    """A short name unique to one test, valid for containers, queues and hubs."""
    return "t" + uuid.uuid4().hex[:12]


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.1) -> object:
    """Poll `predicate` until it returns something truthy (returned); TimeoutError after
    `timeout` seconds names `what` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(autouse=True)
def _no_leaked_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell may point at a real account; tests only ever use their Azurite.
    for key in list(os.environ):
        if key.startswith("AzureWebJobsStorage") or (
                key.startswith("BATCHFN_") and key != ALLOW_ROOT_SETTING):
            monkeypatch.delenv(key, raising=False)


def upload_blobs(connection_string: str, blobs: dict[str, bytes], threads: int = 32) -> None:
    """Upload many small blobs of the data container at once (one pooled connection per
    thread), creating the container if needed."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=threads))
    data = BlobServiceClient.from_connection_string(
        connection_string, session=session).get_container_client(DATA_CONTAINER)
    try:
        data.create_container()
    except ResourceExistsError:
        pass
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda item: data.upload_blob(*item, overwrite=True), blobs.items()))


def jsonl_rows(data: bytes | None) -> list[dict]:
    """The rows of a part encoded as jsonl (what the scoring tests ask workers for)."""
    return [json.loads(line) for line in (data or b"").splitlines()]


def parquet_claiming(rows: int, *, row_groups_too: bool = True) -> bytes:
    """A parquet file that holds one row while its footer claims `rows` (for the file, and
    unless `row_groups_too` is False for its row group too): a hostile or broken file whose
    footer is not to be trusted."""
    import io
    import struct

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"v": [7]}), sink)
    data = sink.getvalue()
    length = struct.unpack("<I", data[-8:-4])[0]
    footer = data[-8 - length:-8]
    zigzag, varint = rows * 2, b""  # thrift's compact encoding of an i64
    while zigzag >= 0x80:
        varint += bytes([zigzag & 0x7F | 0x80])
        zigzag >>= 7
    varint += bytes([zigzag])
    # Field 3 (i64) right after field 2, with the value 1: the file's and the row group's
    # num_rows, and the column chunk's num_values.
    forged = footer.replace(b"\x16\x02", b"\x16" + varint, -1 if row_groups_too else 1)
    claimed = data[:-8 - length] + forged + struct.pack("<I", len(forged)) + b"PAR1"
    assert pq.ParquetFile(io.BytesIO(claimed)).metadata.num_rows == rows
    return claimed


@pytest.fixture
def part_rows():
    """`jsonl_rows` for tests: the rows of a run()'s part encoded as jsonl."""
    return jsonl_rows
