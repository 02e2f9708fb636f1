"""For tabular jobs: one output row per input row, with where the row comes from."""

import os

import pandas as pd

ORIGINS = "batchfn_row_origins"


def init():
    pass


def run(mini_batch):
    if not isinstance(mini_batch, pd.DataFrame):
        raise TypeError(f"rows.py scores tabular mini-batches, got {type(mini_batch).__name__}")
    print(f"rows scoring {len(mini_batch)} rows")
    files, numbers = [], []
    for file, first, count in mini_batch.attrs[ORIGINS]:
        files += [file] * count
        numbers += range(first, first + count)
    table = pd.DataFrame({"file": files, "row": numbers})
    column = os.environ.get("ROWS_SUM_COLUMN")
    if column:
        table["doubled"] = (mini_batch[column] * 2).tolist()
    missing = int(os.environ.get("ROWS_MISSING", "0"))
    return table.iloc[:len(table) - missing] if missing else table
