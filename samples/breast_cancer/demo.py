"""The tabular part of `make demo`: Azure ML's MLflow batch tutorial with the batchfn CLI.

An MLflow model deployed without a scoring script scores a folder of CSV files (Azure ML's
flow: a file per run(), the output's accuracy printed), then one CSV split into
mini-batches of 50 rows with an input column carried beside the predictions (what batchfn
adds). Every `batchfn` command is printed before it runs, from samples/breast_cancer/.

    python -m samples.breast_cancer.demo [--port 7071]     # this tutorial alone
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import pandas as pd

from samples.breast_cancer.accuracy import print_accuracy
from samples.breast_cancer.dataset import DATA_DIR, SAMPLE_DIR
from samples.breast_cancer.prepare_data import LABELS_FILE, prepare
from samples.mnist.demo import DemoFailed, Tutorial, run_demo

MIN_ACCURACY = 0.95
ROWS_PER_MINI_BATCH = 50
PASSTHROUGH_COLUMN = "mean radius"


class CancerTutorial(Tutorial):
    """The MLflow tutorial's steps, each a `batchfn` command run from samples/breast_cancer/."""

    sample_dir = SAMPLE_DIR

    @staticmethod
    def prepare() -> None:
        print("Preparing the breast cancer rows (scikit-learn's bundled data set)...",
              flush=True)
        prepare(DATA_DIR)

    def __init__(self, url: str) -> None:
        self.url = url
        self.endpoint = f"cancer-batch-{secrets.token_hex(3)}"
        self.outputs: list[Path] = []

    def run(self) -> None:
        endpoint = self.endpoint
        self.ensure_compute()
        self.step("MLflow: create the endpoint")
        self.batchfn("batch-endpoint", "create", "--file", "endpoint.yml", "--name", endpoint)

        self.step("MLflow: deploy the model without a scoring script (no code_configuration)")
        self.batchfn("batch-deployment", "create", "--file", "deployment-mlflow/deployment.yml",
                     "--endpoint-name", endpoint, "--set-default")

        self.step("MLflow: score a folder of CSV files, a file per run() as in Azure ML")
        job = self.invoke("--input", self.relative(DATA_DIR / "unlabeled"),
                          "--input-type", "uri_folder")
        self.wait(job)
        self.check_accuracy(self.download(job), "row,prediction,file_name")

        self.step(f"Beyond Azure ML: one CSV split into mini-batches of {ROWS_PER_MINI_BATCH} "
                  "rows, an input column carried beside the predictions")
        job = self.invoke("--input", self.relative(DATA_DIR / "cancer-unlabeled.csv"),
                          "--input-type", "uri_file", "--set", "input_format=csv",
                          "--mini-batch-size", str(ROWS_PER_MINI_BATCH),
                          "--set", "output_format=csv",
                          "--set", f"passthrough_columns={PASSTHROUGH_COLUMN}")
        self.wait(job)
        progress = json.loads(self.batchfn("job", "show", "-n", job, "--query", "progress",
                                           capture=True))
        if progress["unit"] != "rows" or progress["mini_batches"]["total"] != 4:
            raise DemoFailed(f"job {job} was not split into 4 mini-batches of rows: "
                             f"{progress}")
        output = self.download(job)
        self.check_accuracy(output, "the csv header")
        columns = list(pd.read_csv(output, nrows=0).columns)
        if columns[0] != PASSTHROUGH_COLUMN:
            raise DemoFailed(f"{output} has no {PASSTHROUGH_COLUMN!r} column first: {columns}")

        self.step("Clean up: delete the endpoint and its deployment")
        self.batchfn("batch-endpoint", "delete", "--name", endpoint, "--yes")

        print("\nOutputs left on disk:")
        for path in self.outputs:
            print(f"  {path}")

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.sample_dir)

    def check_accuracy(self, output: Path, columns: str) -> None:
        """Print the first predictions and the accuracy against the labels."""
        lines = output.read_text().splitlines()
        print(f"{output} — first lines ({columns}):")
        for line in lines[:4]:
            print(f"  {line}")
        value = print_accuracy(output, DATA_DIR / LABELS_FILE)
        if value < MIN_ACCURACY:
            raise DemoFailed(f"accuracy {value:.3f} is below {MIN_ACCURACY}")


def main(argv: list[str] | None = None) -> int:
    """Run the tabular tutorial alone; returns the exit status."""
    return run_demo(argv, __doc__, [CancerTutorial])


if __name__ == "__main__":
    sys.exit(main())
