"""Prints and logs, then raises ValueError(ALWAYS_FAILS_MESSAGE); with
ALWAYS_FAILS_WHEN_NAME_CONTAINS set, only mini-batches holding such a file fail (others echo)."""

import logging
import os

from scoring_common import echo_rows, name_matches


def init():
    pass


def run(mini_batch):
    if not name_matches(mini_batch, "ALWAYS_FAILS_WHEN_NAME_CONTAINS"):
        return echo_rows(mini_batch)
    print(f"about to fail on {len(mini_batch)} files")
    logging.getLogger(__name__).error("failing now")
    raise ValueError(os.environ.get("ALWAYS_FAILS_MESSAGE", "this script always fails"))
