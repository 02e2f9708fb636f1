"""Start and stop a local Azurite storage emulator (npm package `azurite`).

Used by `devhost` when no `AzureWebJobsStorage` account is configured, and by the test
fixtures. Ports are chosen free at run time unless given.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from devhost.private_files import private_folder

DEV_ACCOUNT = "devstoreaccount1"
# The storage emulator's published, well-known development key (not a secret).
DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class AzuriteError(RuntimeError):
    """Azurite could not be found or did not start."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connection_string(blob_port: int, queue_port: int, table_port: int,
                      host: str = "127.0.0.1", account_key: str = DEV_KEY) -> str:
    """The connection string of the development account on the given ports."""
    base = f"http://{host}"
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={DEV_ACCOUNT};AccountKey={account_key};"
        f"BlobEndpoint={base}:{blob_port}/{DEV_ACCOUNT};"
        f"QueueEndpoint={base}:{queue_port}/{DEV_ACCOUNT};"
        f"TableEndpoint={base}:{table_port}/{DEV_ACCOUNT};"
    )


def find_azurite(start: Path | None = None) -> str:
    """Locate the `azurite` launcher: ./node_modules/.bin first, then PATH."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "node_modules" / ".bin" / "azurite"
        if candidate.exists():
            return str(candidate)
    repo = Path(__file__).resolve().parent.parent / "node_modules" / ".bin" / "azurite"
    if repo.exists():
        return str(repo)
    found = shutil.which("azurite")
    if found:
        return found
    raise AzuriteError("azurite not found: run `npm ci` in the repository (make install does it)")


@dataclass
class Azurite:
    """A running Azurite process; `stop()` ends it (also on context exit)."""

    location: Path
    blob_port: int = 0
    queue_port: int = 0
    table_port: int = 0
    process: subprocess.Popen | None = None
    # An Azurite left running on this location by a host that was killed, taken over.
    adopted_pid: int | None = None
    # The development account's key: the published one unless another is given, which
    # Azurite then takes instead (the published key stops working).
    account_key: str = DEV_KEY
    # Where Azurite writes its debug log, one line per request among others
    # (bench/storage_requests.py counts them); None: none. It slows Azurite: never time with it.
    debug_log: Path | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port, self.table_port,
                                 account_key=self.account_key)

    @property
    def _record(self) -> Path:
        return self.location / "azurite.json"

    def start(self, timeout: float = 30.0) -> Azurite:
        """Start Azurite on this location, or take over the one still running there."""
        # Its blobs include the host's keys document: a folder only this user can read.
        private_folder(self.location)
        if self._adopt():
            return self
        self.blob_port = self.blob_port or free_port()
        self.queue_port = self.queue_port or free_port()
        self.table_port = self.table_port or free_port()
        log = open(self.location / "azurite.log", "ab")
        accounts = {} if self.account_key == DEV_KEY else {
            "AZURITE_ACCOUNTS": f"{DEV_ACCOUNT}:{self.account_key}"}
        self.process = subprocess.Popen(
            [
                find_azurite(),
                "--silent",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--loose",
                *(["--debug", str(self.debug_log)] if self.debug_log else []),
                "--location", str(self.location),
                "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
                "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **accounts},
        )
        log.close()
        deadline = time.monotonic() + timeout
        ports = (self.blob_port, self.queue_port, self.table_port)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AzuriteError(
                    f"azurite exited with {self.process.returncode}; "
                    f"see {self.location / 'azurite.log'}"
                )
            if all(_listening(p) for p in ports):
                self._record.write_text(json.dumps({
                    "pid": self.process.pid, "blob_port": self.blob_port,
                    "queue_port": self.queue_port, "table_port": self.table_port}))
                return self
            time.sleep(0.05)
        self.stop()
        raise AzuriteError(f"azurite did not listen on {ports} within {timeout:.0f}s")

    def _adopt(self) -> bool:
        """Two Azurites must not share a location: reuse one that a killed host left."""
        try:
            record = json.loads(self._record.read_text())
            process = psutil.Process(int(record["pid"]))
            running = "azurite" in " ".join(process.cmdline())
            ports = (int(record["blob_port"]), int(record["queue_port"]),
                     int(record["table_port"]))
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return False
        requested = (self.blob_port, self.queue_port, self.table_port)
        if any(want and want != have for want, have in zip(requested, ports, strict=True)):
            return False
        if not running or not all(_listening(port) for port in ports):
            return False
        self.blob_port, self.queue_port, self.table_port = ports
        self.adopted_pid = process.pid
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the Azurite this object started or took over."""
        adopted, self.adopted_pid = self.adopted_pid, None
        if adopted is not None:
            _stop_group(adopted, timeout)
            self._record.unlink(missing_ok=True)
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        self._record.unlink(missing_ok=True)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def __enter__(self) -> Azurite:
        return self.start() if self.process is None and self.adopted_pid is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by `pid` (not our child), SIGKILL if it lingers."""
    try:
        os.killpg(pid, signal.SIGTERM)
        psutil.Process(pid).wait(timeout)
    except (ProcessLookupError, psutil.NoSuchProcess):
        return
    except psutil.TimeoutExpired:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
