"""JPEG photos for the ImageNet-style sample and bench/gpu_worker.py, made on this machine.

    python -m samples.imagenet.prepare_data --out DIR [--count 512] [--min-side 200]
                                            [--max-side 640] [--seed 0]

Crops of the two photos scikit-learn ships (`sklearn.datasets.load_sample_images`: a
temple in China and a flower), at random places and scales, resized to varied sizes and
saved as JPEG (quality 85-95): real photographic content, like a folder of camera images,
without downloading anything. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image


def sample_photos() -> list[Image.Image]:
    """The photos scikit-learn ships, as RGB images."""
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(array).convert("RGB") for array in load_sample_images().images]


def make_jpegs(out: Path, count: int, *, min_side: int = 200, max_side: int = 640,
               seed: int = 0) -> list[Path]:
    """Write `count` JPEGs to `out` (created), sides between `min_side` and `max_side`."""
    if not 1 <= min_side <= max_side:
        raise ValueError("expected 1 <= min_side <= max_side")
    out.mkdir(parents=True, exist_ok=True)
    photos = sample_photos()
    chooser = random.Random(seed)
    plans = []
    for number in range(count):  # every random choice first, in order: deterministic
        photo = photos[number % len(photos)]
        crop_width = chooser.randint(photo.width // 3, photo.width)
        crop_height = chooser.randint(photo.height // 3, photo.height)
        left = chooser.randint(0, photo.width - crop_width)
        top = chooser.randint(0, photo.height - crop_height)
        width = chooser.randint(min_side, max_side)
        height = max(min_side, min(max_side, round(width * crop_height / crop_width)))
        plans.append((out / f"photo-{number:06d}.jpg", photo,
                      (left, top, left + crop_width, top + crop_height), (width, height),
                      chooser.random() < 0.5, chooser.randint(85, 95)))

    def write(plan: tuple) -> Path:
        path, photo, box, size, mirrored, quality = plan
        image = photo.crop(box).resize(size, Image.BILINEAR)
        if mirrored:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        image.save(path, format="JPEG", quality=quality)
        return path

    # PIL resizes and encodes without holding the interpreter lock: threads use every core.
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(write, plans))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--min-side", type=int, default=200)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = make_jpegs(args.out, args.count, min_side=args.min_side, max_side=args.max_side,
                       seed=args.seed)
    size = sum(path.stat().st_size for path in paths)
    print(f"{len(paths)} JPEGs, {size / 1e6:.1f} MB, in {args.out}")


if __name__ == "__main__":
    main()
