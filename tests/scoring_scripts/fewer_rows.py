"""Echoes all but the last FEWER_ROWS_MISSING (default 1) files."""

import os

from scoring_common import echo_rows


def init():
    pass


def run(mini_batch):
    missing = int(os.environ.get("FEWER_ROWS_MISSING", "1"))
    return echo_rows(mini_batch[: max(0, len(mini_batch) - missing)])
