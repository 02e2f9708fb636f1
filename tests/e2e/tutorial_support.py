"""What the tests of Azure ML's MNIST tutorial (its CLI and Python tabs, run as published)
share: a devhost of their own over an Azurite of their own (the tutorial's names, mnist-batch
and batch-cluster, are fixed), the tutorial's public input URL given a local meaning, a
subset of the digits behind it, and the checks of the scores."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from batchfn.client import BatchfnClient
from devhost.azurite import Azurite
from devhost.testing import RunningDevHost, running_devhost
from samples.mnist.dataset import read_labels
from samples.mnist.prepare_data import prepare

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO / "samples" / "mnist"
# The tutorial's input, Azure's public sample folder, stands for a data asset of this app.
TUTORIAL_URL = "https://azuremlexampledata.blob.core.windows.net/data/mnist/sample"
SAMPLE_ASSET = "mnist-sample"
ALIASES = f"{TUTORIAL_URL}=azureml:{SAMPLE_ASSET}@latest"
APPEND_ROW_LINE = re.compile(r"^(\d{5}\.png) ([0-9]) (0\.\d+|1\.0)$")


@dataclass(frozen=True)
class TutorialSite:
    """A devhost with the alias, the data asset behind the tutorial's URL, its labels."""

    host: RunningDevHost
    client: BatchfnClient
    labels: dict[str, int]


@contextmanager
def tutorial_site(work: Path, files: int) -> Iterator[TutorialSite]:
    """Start Azurite and devhost (with the alias), register the first `files` digits of
    the sample as the data asset the tutorial's URL stands for."""
    full = prepare(work / "digits", include_full=False)["sample"]
    labels = read_labels(work / "digits" / "sample-labels.csv")
    folder = work / "sample"
    folder.mkdir()
    chosen = sorted(labels)[:files]
    for name in chosen:
        shutil.copy(full / name, folder / name)
    with ExitStack() as stack:
        azurite = stack.enter_context(Azurite(location=work / "azurite"))
        host = stack.enter_context(running_devhost(
            "function_app", script_root=REPO, connection_string=azurite.connection_string,
            env={"BATCHFN_INPUT_ALIASES": ALIASES}))
        client = BatchfnClient(url=host.url, key=host.key)
        client.create_asset("data", SAMPLE_ASSET, folder)
        yield TutorialSite(host, client, {name: labels[name] for name in chosen})


def copy_tutorial(target: Path) -> Path:
    """The tutorial's folder (YAML files, models, code; no data) where a test may write."""
    shutil.copytree(SAMPLE_DIR, target,
                    ignore=shutil.ignore_patterns("data", "__pycache__", "named-outputs"))
    return target


def check_scores(lines: list[str], labels: dict[str, int]) -> None:
    """Azure ML's append_row lines, one per digit, at least 90% right."""
    rows = [APPEND_ROW_LINE.match(line) for line in lines]
    assert all(rows), lines[:5]
    assert sorted(row[1] for row in rows) == sorted(labels)
    correct = sum(int(row[2]) == labels[row[1]] for row in rows)
    assert correct / len(rows) >= 0.9
