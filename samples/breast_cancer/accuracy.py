"""The accuracy of an output file of the sample against the labels.

    python -m samples.breast_cancer.accuracy OUTPUT_FILE [--labels data/labels.csv]

Reads Azure ML's MLflow output (lines of row,prediction,file_name without a header: the
default) or a csv, jsonl or parquet output with `row`, `prediction` and `file_name`
columns, and joins its rows with the labels by file name and row number.
"""

from __future__ import annotations

import argparse
import csv
import posixpath
from pathlib import Path

import pandas as pd

from samples.breast_cancer.dataset import DATA_DIR
from samples.breast_cancer.prepare_data import LABELS_FILE

AZUREML_COLUMNS = ["row", "prediction", "file_name"]


def read_predictions(output_file: Path) -> pd.DataFrame:
    """An output file as a frame of row, prediction and file_name."""
    suffix = output_file.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(output_file)
    if suffix == ".jsonl":
        return pd.read_json(output_file, lines=True)
    with output_file.open(newline="") as file:
        first = next(csv.reader(file), [])
    if "prediction" in first:  # a csv output with its header
        return pd.read_csv(output_file)
    return pd.read_csv(output_file, header=None, names=AZUREML_COLUMNS)


def accuracy(output_file: Path, labels_file: Path = DATA_DIR / LABELS_FILE) -> tuple[float, int]:
    """(accuracy, rows scored) of `output_file`; ValueError if a row has no label."""
    predictions = read_predictions(output_file)
    predictions["file"] = predictions["file_name"].map(posixpath.basename)
    labels = pd.read_csv(labels_file)
    joined = predictions.merge(labels, on=["file", "row"], how="left", validate="one_to_one")
    if joined["label"].isna().any():
        raise ValueError(f"{int(joined['label'].isna().sum())} rows of {output_file} have no "
                         f"label in {labels_file}")
    return float((joined["prediction"] == joined["label"]).mean()), len(joined)


def print_accuracy(output_file: Path, labels_file: Path = DATA_DIR / LABELS_FILE) -> float:
    """Print and return the accuracy of `output_file` (what the demo shows)."""
    value, rows = accuracy(output_file, labels_file)
    print(f"accuracy of {output_file.name}: {value:.3f} over {rows} rows")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_file", type=Path)
    parser.add_argument("--labels", type=Path, default=DATA_DIR / LABELS_FILE)
    args = parser.parse_args(argv)
    print_accuracy(args.output_file, args.labels)


if __name__ == "__main__":
    main()
