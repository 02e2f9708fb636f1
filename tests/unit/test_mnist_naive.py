"""The naive reference scorer (the benchmark's baseline) scores like the torch deployment."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samples.mnist.dataset import load_digits, read_labels, scoring_sample, write_png_folder
from samples.mnist.naive_score import load_model, score_naively


def test_naive_scorer_matches_labels_one_image_at_a_time(tmp_path: Path) -> None:
    sample = scoring_sample(load_digits()).subset(np.arange(100))
    write_png_folder(sample, tmp_path / "pngs", tmp_path / "labels.csv")
    paths = sorted(str(path) for path in (tmp_path / "pngs").iterdir())

    model, device = load_model()
    frame = score_naively(model, device, paths)

    assert list(frame.columns) == ["file", "class", "probability"]
    assert list(frame["file"]) == [Path(path).name for path in paths]
    labels = read_labels(tmp_path / "labels.csv")
    predicted = zip(frame["file"], frame["class"], strict=True)
    accuracy = np.mean([labels[file] == cls for file, cls in predicted])
    assert accuracy >= 0.95
