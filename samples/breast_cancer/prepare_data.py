"""Write the sample's unlabeled inputs and their labels (scoring rows only).

    python -m samples.breast_cancer.prepare_data [--out samples/breast_cancer/data]

Writes, deterministically, the 171 scoring rows three ways:
- `<out>/unlabeled/cancer-unlabeled-{0..3}.csv`: a folder of CSV files, as Azure ML's
  tutorial scores one file at a time;
- `<out>/unlabeled-parquet/cancer-unlabeled.parquet`: one parquet file of two row groups;
- `<out>/cancer-unlabeled.csv`: one CSV file, for a job split by rows (`input_format: csv`);
and `<out>/labels.csv`: the label of every row of every file (file, row, label), which
`accuracy.py` joins with an output file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from samples.breast_cancer.dataset import DATA_DIR, load_split

CSV_FILES = 4
LABELS_FILE = "labels.csv"


def prepare(out: Path = DATA_DIR) -> dict[str, Path]:
    """Write the inputs under `out`; returns their paths by name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    split = load_split()
    features, labels = split.score_features, split.score_labels
    folder, parquet_folder = out / "unlabeled", out / "unlabeled-parquet"
    for path in (folder, parquet_folder):
        path.mkdir(parents=True, exist_ok=True)
        for old in path.iterdir():
            old.unlink()
    label_rows = []
    for number, rows in enumerate(np.array_split(np.arange(len(features)), CSV_FILES)):
        name = f"cancer-unlabeled-{number}.csv"
        features.iloc[rows].to_csv(folder / name, index=False)
        label_rows += [(name, row, labels.iloc[i]) for row, i in enumerate(rows)]
    parquet = parquet_folder / "cancer-unlabeled.parquet"
    pq.write_table(pa.Table.from_pandas(features, preserve_index=False), parquet,
                   row_group_size=(len(features) + 1) // 2)
    single = out / "cancer-unlabeled.csv"
    features.to_csv(single, index=False)
    for name in (parquet.name, single.name):
        label_rows += [(name, row, label) for row, label in enumerate(labels)]
    pd.DataFrame(label_rows, columns=["file", "row", "label"]).to_csv(out / LABELS_FILE,
                                                                      index=False)
    return {"folder": folder, "parquet_folder": parquet_folder, "single_csv": single,
            "labels": out / LABELS_FILE}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder")
    args = parser.parse_args(argv)
    for name, path in prepare(args.out).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
