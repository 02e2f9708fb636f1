"""The scoring script of MLflow deployments that bring none (Azure ML generates one too).

The worker runs it like a user's Azure ML script: init() once per worker process, then
run() per mini-batch, with AZUREML_MODEL_DIR set. run() takes a list of file paths, or a
DataFrame of rows when the job's input format is tabular, and returns a DataFrame of
Azure ML's MLflow output columns (row, the prediction, file_name): the worker writes it
comma-separated without a header in the default output format, with real columns in csv,
jsonl or parquet. Files and rows that cannot be scored are reported to the worker's
failure collector (tabular/failures.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from shared.worker.mlflow.scorer import MlflowScorer

_scorer: MlflowScorer | None = None


def init() -> None:
    """Load the model under AZUREML_MODEL_DIR with mlflow.pyfunc."""
    global _scorer
    _scorer = MlflowScorer(os.environ["AZUREML_MODEL_DIR"])


def run(mini_batch: Sequence[str] | pd.DataFrame) -> pd.DataFrame:
    """Score a mini-batch of files or rows (see the module docstring)."""
    if _scorer is None:
        raise RuntimeError("init() has not loaded the model")
    return _scorer.score(mini_batch)
