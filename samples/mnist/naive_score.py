"""The naive Azure ML-style reference scorer that batchfn's benchmark compares against.

It does what Azure ML's tutorial script does: decode each image on its own and run one
forward pass per image, collecting a row at a time. Same model and output as
deployment-torch, so only the scoring strategy differs.

    python -m samples.mnist.naive_score samples/mnist/data/full
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from os.path import basename
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

TORCH_DEPLOYMENT = Path(__file__).resolve().parent / "deployment-torch"


def load_model(deployment: Path = TORCH_DEPLOYMENT) -> tuple[torch.nn.Module, torch.device]:
    """The torch deployment's model, in eval mode on the GPU when there is one."""
    sys.path.insert(0, str(deployment / "code"))
    from mnist_classifier import MnistClassifier

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = MnistClassifier()
    state = torch.load(
        deployment / "model" / "mnist_classifier.pt", map_location=device, weights_only=True
    )
    model.load_state_dict(state)
    return model.to(device).eval(), device


def score_naively(
    model: torch.nn.Module, device: torch.device, image_paths: Iterable[str]
) -> pd.DataFrame:
    """One decode and one forward pass per image; rows (file, class, probability)."""
    results = []
    with torch.no_grad():
        for image_path in image_paths:
            with Image.open(image_path) as image:
                pixels = np.asarray(image.convert("L"), dtype=np.float32)
            batch_data = torch.from_numpy(pixels).expand(1, 1, -1, -1).to(device)
            predictions = torch.softmax(model(batch_data), dim=-1)
            predicted_prob, predicted_class = torch.max(predictions, dim=-1)
            results.append(
                {
                    "file": basename(image_path),
                    "class": int(predicted_class.cpu()[0]),
                    "probability": float(predicted_prob.cpu()[0]),
                }
            )
    return pd.DataFrame(results, columns=["file", "class", "probability"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score a folder of PNGs the naive way.")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    paths = sorted(str(path) for path in args.folder.glob("*.png"))
    model, device = load_model()
    started = time.perf_counter()
    frame = score_naively(model, device, paths)
    elapsed = time.perf_counter() - started
    print(f"{len(frame)} files in {elapsed:.2f}s ({len(frame) / elapsed:.0f} files/s) on {device}")


if __name__ == "__main__":
    main()
