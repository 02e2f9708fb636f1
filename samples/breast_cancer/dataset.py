"""The sample's data: scikit-learn's bundled breast cancer set (569 tumours, 30 features,
malignant 0 / benign 1), split once into training and scoring rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SAMPLE_DIR = Path(__file__).resolve().parent
DATA_DIR = SAMPLE_DIR / "data"
SCORING_FRACTION = 0.3
SEED = 7


@dataclass(frozen=True)
class Split:
    train_features: pd.DataFrame
    train_labels: pd.Series
    score_features: pd.DataFrame  # in scoring order, index 0..n-1
    score_labels: pd.Series


def load_split() -> Split:
    """The same training/scoring split every time (stratified by label)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer(as_frame=True)
    train_x, score_x, train_y, score_y = train_test_split(
        data.data, data.target, test_size=SCORING_FRACTION, random_state=SEED,
        stratify=data.target)
    return Split(train_x, train_y, score_x.reset_index(drop=True),
                 score_y.reset_index(drop=True))
