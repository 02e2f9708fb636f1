"""Prints and logs, then always raises ValueError(ALWAYS_FAILS_MESSAGE)."""

import logging
import os


def init():
    pass


def run(mini_batch):
    print(f"about to fail on {len(mini_batch)} files")
    logging.getLogger(__name__).error("failing now")
    raise ValueError(os.environ.get("ALWAYS_FAILS_MESSAGE", "this script always fails"))
