"""The MNIST tutorial end to end: the batchfn CLI against devhost + Azurite.

Both deployments score the 1,000-digit sample; every file gets exactly one prediction in
Azure ML's append_row format and the predictions match the labels.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchfn.client import BatchfnClient
from devhost.testing import RunningDevHost, running_devhost
from samples.mnist.dataset import SAMPLE_SIZE, read_labels
from samples.mnist.prepare_data import prepare
from tests.conftest import ensure_compute

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO / "samples" / "mnist"
DEPLOYMENTS = {"torch": "mnist-torch-dpl", "keras": "mnist-keras-dpl"}
JOB_TIMEOUT_S = 240.0
FINAL_STATUSES = {"Completed", "Failed", "Canceled"}
APPEND_ROW_LINE = re.compile(r"^(\d{5}\.png) ([0-9]) (0\.\d+|1\.0)$")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """The 1,000 sample PNGs in a temporary folder, and their labels."""
    out = tmp_path_factory.mktemp("mnist")
    folder = prepare(out, include_full=False)["sample"]
    return folder, read_labels(out / "sample-labels.csv")


@pytest.fixture(scope="module")
def host(storage_connection: str) -> Iterator[RunningDevHost]:
    with running_devhost("function_app", script_root=REPO,
                         connection_string=storage_connection) as running:
        yield running


def batchfn(host: RunningDevHost, *args: str) -> str:
    """Run one CLI command from samples/mnist/ against `host`; its stdout."""
    env = {**os.environ, "BATCHFN_URL": host.url, "BATCHFN_KEY": host.key}
    completed = subprocess.run(
        [sys.executable, "-c", "from batchfn.cli import main; main()", *args],
        cwd=SAMPLE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, (
        f"batchfn {' '.join(args)} exited {completed.returncode}:\n{completed.stderr[-3000:]}")
    return completed.stdout


def wait_for(host: RunningDevHost, job: str) -> str:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        status = batchfn(host, "job", "show", "-n", job, "--query", "status", "-o", "tsv").strip()
        if status in FINAL_STATUSES:
            return status
        time.sleep(1.0)
    pytest.fail(f"job {job} did not finish in {JOB_TIMEOUT_S:.0f}s:\n{host.logs()[-4000:]}")


@pytest.fixture(scope="module")
def outputs(host: RunningDevHost, sample,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Both deployments' output lines for the sample, keyed by framework."""
    folder, _labels = sample
    endpoint = f"mnist-{uuid.uuid4().hex[:10]}"
    ensure_compute(BatchfnClient(host.url, host.key))  # the tutorial's batch-cluster
    batchfn(host, "batch-endpoint", "create", "--file", "endpoint.yml", "--name", endpoint)
    batchfn(host, "batch-deployment", "create", "--file", "deployment-torch/deployment.yml",
            "--endpoint-name", endpoint, "--set-default")
    batchfn(host, "batch-deployment", "create", "--file", "deployment-keras/deployment.yml",
            "--endpoint-name", endpoint)
    # torch through the endpoint's default, keras by name; both run at the same time.
    jobs = {
        "torch": batchfn(host, "batch-endpoint", "invoke", "--name", endpoint,
                         "--input", str(folder), "--input-type", "uri_folder",
                         "--query", "name", "-o", "tsv").strip(),
        "keras": batchfn(host, "batch-endpoint", "invoke", "--name", endpoint,
                         "--deployment-name", DEPLOYMENTS["keras"], "--input", str(folder),
                         "--query", "name", "-o", "tsv").strip(),
    }
    lines = {}
    for framework, job in jobs.items():
        assert wait_for(host, job) == "Completed", host.logs()[-4000:]
        download = tmp_path_factory.mktemp(f"download-{framework}")
        batchfn(host, "job", "download", "-n", job, "--output-name", "score",
                "--download-path", str(download))
        found = sorted(download.rglob("predictions.csv"))
        assert len(found) == 1, f"expected one predictions.csv under {download}: {found}"
        lines[framework] = found[0].read_text().splitlines()
    return lines


@pytest.mark.parametrize("framework", sorted(DEPLOYMENTS))
def test_every_file_scored_once_in_append_row_format(outputs, sample, framework: str) -> None:
    _folder, labels = sample
    lines = outputs[framework]
    malformed = [line for line in lines if not APPEND_ROW_LINE.match(line)]
    assert malformed == []
    files = [line.split(" ")[0] for line in lines]
    assert len(files) == SAMPLE_SIZE
    assert sorted(files) == sorted(labels)  # one prediction for every file, none twice
    assert files == sorted(files)  # input order


@pytest.mark.parametrize("framework", sorted(DEPLOYMENTS))
def test_predictions_match_the_labels(outputs, sample, framework: str) -> None:
    _folder, labels = sample
    rows = [APPEND_ROW_LINE.match(line) for line in outputs[framework]]
    predicted = {row[1]: int(row[2]) for row in rows}
    accuracy = sum(predicted[file] == label for file, label in labels.items()) / len(labels)
    assert accuracy >= 0.95
