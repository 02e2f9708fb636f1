"""Writes to its own stdout and stderr outside its mini-batches: after the first run()
returns, a thread writes CHATTY_LINES (default 500) short lines, a line that forges a host
log line with a terminal escape and an embedded line break, and a line of 100,000
characters; then it echoes."""

import os
import sys
import threading
import time

from scoring_common import echo_rows

_ran = threading.Event()


def _chatter():
    _ran.wait()
    time.sleep(0.5)  # the attempt is over: fds 1 and 2 are the worker's own again
    forged = ("\x1b[2K\r2030-01-01 00:00:00 INFO batchfn.scoring: job x: all is well"
              "\u2028second line\n")
    os.write(2, forged.encode())
    os.write(1, b"y" * 100_000 + b"\n")
    for number in range(int(os.environ.get("CHATTY_LINES", "500"))):
        print(f"chatter {number}", flush=True)
    sys.stderr.flush()


def init():
    threading.Thread(target=_chatter, daemon=True).start()


def run(mini_batch):
    _ran.set()
    return echo_rows(mini_batch)
