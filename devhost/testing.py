"""Run devhost as a subprocess in tests: `with running_devhost(...) as host: host.url`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devhost.azurite import free_port
from devhost.state_file import read_state, state_file

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 90.0


class DevHostError(RuntimeError):
    """The devhost subprocess did not start or stop as asked."""


class RunningDevHost:
    """A devhost subprocess on a fixed port; it can be killed, stopped and started again."""

    def __init__(self, app: str, *, script_root: Path, connection_string: str,
                 env: dict[str, str] | None, port: int, work_dir: Path,
                 python: str = sys.executable) -> None:
        self.app = app
        self.python = python
        self.script_root = Path(script_root).resolve()
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.key = ""
        self._state_dir = work_dir / "state"
        self._log_path = work_dir / "devhost.log"
        self._env = {
            **os.environ,
            **(env or {}),
            "AzureWebJobsStorage": connection_string,
            "DEVHOST_STATE_DIR": str(self._state_dir),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "PYTHONUNBUFFERED": "1",
        }
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id of the running devhost."""
        if self._process is None:
            raise DevHostError("devhost is not running")
        return self._process.pid

    @property
    def state_path(self) -> Path:
        """The state file this devhost writes while it runs."""
        return state_file(self.port, self._state_dir)

    def logs(self) -> str:
        """Everything devhost has written to stdout/stderr so far (across restarts)."""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = START_TIMEOUT) -> RunningDevHost:
        """Start devhost and wait until it answers HTTP and has written its state file."""
        if self._process is not None and self._process.poll() is None:
            raise DevHostError("devhost is already running")
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                [self.python, "-m", "devhost", "--app", self.app,
                 "--script-root", str(self.script_root), "--port", str(self.port)],
                cwd=self.script_root, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        state = self.state_path
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DevHostError(f"devhost exited with {self._process.returncode}:\n"
                                   f"{self.logs()[-4000:]}")
            recorded = read_state(self.port, self._state_dir) if state.exists() else None
            if recorded is not None and recorded.pid == self._process.pid and self._answers():
                self.key = recorded.key
                return self
            time.sleep(0.05)
        self.kill()
        raise DevHostError(f"devhost did not start within {timeout:.0f}s:\n{self.logs()[-4000:]}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for a clean exit (SIGKILL after `timeout`); the exit status."""
        process = self._process
        if process is None or process.poll() is not None:
            return process.returncode if process is not None else 0
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DevHostError(f"devhost ignored SIGTERM for {timeout:.0f}s") from None

    def kill(self) -> None:
        """SIGKILL devhost's whole process group at once (a crash)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


@contextmanager
def running_devhost(
    app: str = "function_app",
    *,
    script_root: Path,
    connection_string: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    python: str = sys.executable,
) -> Iterator[RunningDevHost]:
    """Start `python -m devhost` for `app` in `script_root` (with the interpreter
    `python`); stop it on exit."""
    with tempfile.TemporaryDirectory(prefix="devhost-") as work:
        host = RunningDevHost(app, script_root=script_root, connection_string=connection_string,
                              env=env, port=port or free_port(), work_dir=Path(work),
                              python=python)
        host.start()
        try:
            yield host
        finally:
            try:
                host.stop()
            finally:
                host.kill()
