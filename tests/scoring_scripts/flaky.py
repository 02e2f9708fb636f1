"""Fails the first FLAKY_FAILURES attempts of each mini-batch, then echoes."""

import hashlib
import os

from scoring_common import echo_rows


def init():
    pass


def run(mini_batch):
    key = hashlib.sha256("\n".join(os.path.basename(p) for p in mini_batch).encode()).hexdigest()
    counter = os.path.join(os.environ["FLAKY_STATE_DIR"], f"flaky-{key[:16]}")
    attempts = 1
    if os.path.exists(counter):
        with open(counter) as file:
            attempts = int(file.read()) + 1
    with open(counter, "w") as file:
        file.write(str(attempts))
    failures = int(os.environ.get("FLAKY_FAILURES", "1"))
    if attempts <= failures:
        raise RuntimeError(f"flaky failure {attempts} of {failures}")
    return echo_rows(mini_batch)
