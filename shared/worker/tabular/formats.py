"""The tabular input formats, and which files of an input folder hold rows."""

from __future__ import annotations

import posixpath

from shared.worker.input_errors import UnsplittableInput

# The job setting input_format's tabular values (shared/contract/settings.py checks them).
CSV = "csv"
JSONL = "jsonl"
PARQUET = "parquet"
TABULAR_FORMATS = (CSV, JSONL, PARQUET)

# Compressed files cannot be read from the middle: their rows cannot be split by byte range.
COMPRESSED_SUFFIXES = (".gz", ".gzip", ".bz2", ".xz", ".zst", ".zip", ".lz4", ".snappy")


def is_data_file(name: str) -> bool:
    """Whether a file of an input folder holds rows in a tabular job.

    Names starting with "_" or "." are markers and metadata (`_SUCCESS`, `_start`,
    `.crc` files), skipped as Spark and Hadoop skip them.
    """
    base = posixpath.basename(name)
    return bool(base) and not base.startswith(("_", "."))


def check_splittable(name: str) -> None:
    """Raise UnsplittableInput for a compressed file, whose rows cannot be split."""
    lowered = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lowered.endswith(suffix):
            raise UnsplittableInput(
                name, f"compressed files ({suffix}) cannot be split into row ranges: "
                "decompress it, or write parquet (whose compression works per row group)")
