"""Hands back more than the host takes, as OVERSIZED_WHAT says: `message` raises an error of
OVERSIZED_BYTES characters (default 20 MB); `rows` returns that many bytes of rows; `pipe`
writes a message header announcing a terabyte straight onto the worker's pipe (its file
descriptor is the worker's first argument), as a hostile script could; `parquet` returns a
column that parquet compresses to almost nothing and decodes to OVERSIZED_BYTES. Any other
value echoes."""

import os
import struct
import sys

from scoring_common import echo_rows

SIZE = int(os.environ.get("OVERSIZED_BYTES", str(20 * 1024 * 1024)))


def init():
    pass


def run(mini_batch):
    what = os.environ.get("OVERSIZED_WHAT", "")
    if what == "message":
        raise ValueError("x" * SIZE + " the end of the message")
    if what == "rows":
        row = "r" * 1023
        return [row] * (SIZE // 1024 + 1)
    if what == "pipe":
        fd = int(sys.argv[1])
        os.write(fd, struct.pack("!i", -1) + struct.pack("!Q", 1 << 40))
        os.write(fd, b"\0" * 1024)
        return echo_rows(mini_batch)
    if what == "parquet":
        import pandas as pd

        return pd.DataFrame({"zeros": ["0" * 1024] * (SIZE // 1024 + 1)})
    return echo_rows(mini_batch)
