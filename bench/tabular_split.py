"""Row-range planning and reading over one large CSV blob, against plain reads of it.

One run on one fresh Azurite, one CSV blob (quoted multi-line fields every 97th row):
- planning: the exact row scan (`plan_table`) ÷ reading the same bytes with the same
  chunks and prefetch but no scan. Goal ≥ 0.8: planning costs about one read of the file.
- reading: the same ranged GETs of every range, without parsing ÷ all ranges read and
  parsed one by one (`TableReader`, as workers do): what parsing adds to the requests a
  mini-batch costs anyway. Also shown: one download of the whole blob parsed by
  `pandas.read_csv`, the rate no split reaches (it is one request and one parse call).
Prints the result and writes bench/results/tabular_split.json.

    .venv/bin/python bench/tabular_split.py [--rows 1000000] [--rows-per-range 1000]

Goals: plan_ratio ≥ 0.8, read_ratio ≥ 0.5.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import blob_service, data_container  # noqa: E402
from bench.report import now_utc, write_results  # noqa: E402
from devhost.azurite import Azurite  # noqa: E402
from shared.worker.tabular.read import BatchPiece, TableReader  # noqa: E402
from shared.worker.tabular.sources import BlobSource, read_chunks  # noqa: E402
from shared.worker.tabular.split import plan_table  # noqa: E402


def make_csv(rows: int) -> bytes:
    ids = np.arange(rows)
    frame = pd.DataFrame({"id": ids, "value": ids * 0.25, "flag": ids % 3 == 0,
                          "note": np.where(ids % 97 == 0, 'two\nlines, "quoted"', "plain")})
    return frame.to_csv(index=False).encode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rows-per-range", type=int, default=1000)
    args = parser.parse_args(argv)
    started_at = now_utc()
    data = make_csv(args.rows)
    with tempfile.TemporaryDirectory() as location, Azurite(Path(location)) as azurite:
        container = data_container(blob_service(azurite.connection_string, 8))
        blob = container.get_blob_client("bench/tabular.csv")
        blob.upload_blob(data, overwrite=True, max_concurrency=4)
        source = BlobSource.open(blob)

        clock = time.perf_counter()
        read_bytes = sum(len(chunk) for chunk in read_chunks(source))
        raw_read_s = time.perf_counter() - clock

        clock = time.perf_counter()
        plan = plan_table(source, "csv", args.rows_per_range)
        plan_s = time.perf_counter() - clock

        clock = time.perf_counter()
        for row_range in plan.ranges:
            source.read(row_range.start, row_range.end - row_range.start)
        ranged_gets_s = time.perf_counter() - clock

        reader = TableReader()
        clock = time.perf_counter()
        ranged_rows = sum(len(reader.read(BatchPiece("tabular.csv", source, "csv", r)).frame)
                          for r in plan.ranges)
        ranges_s = time.perf_counter() - clock

        clock = time.perf_counter()
        whole_rows = len(pd.read_csv(io.BytesIO(blob.download_blob(max_concurrency=4)
                                                 .readall())))
        whole_s = time.perf_counter() - clock

    assert read_bytes == len(data) and plan.rows == ranged_rows == whole_rows == args.rows
    mb = len(data) / 1e6
    figures = {
        "csv_mb": round(mb, 1), "rows": args.rows, "ranges": len(plan.ranges),
        "raw_chunked_read_mb_s": round(mb / raw_read_s, 1),
        "plan_scan_mb_s": round(mb / plan_s, 1),
        "plan_ratio": round(raw_read_s / plan_s, 2),
        "ranged_gets_rows_s": round(ranged_rows / ranged_gets_s),
        "ranges_read_rows_s": round(ranged_rows / ranges_s),
        "read_ratio": round(ranged_gets_s / ranges_s, 2),
        "whole_file_read_rows_s": round(whole_rows / whole_s),
    }
    path = write_results("tabular_split", figures,
                         {"rows": args.rows, "rows_per_range": args.rows_per_range},
                         started_at, {"plan_ratio >= 0.8": figures["plan_ratio"] >= 0.8,
                          "read_ratio >= 0.5": figures["read_ratio"] >= 0.5})
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
