"""Ends its own process mid-batch (SIGKILL or os._exit(KILL_EXIT_CODE)), else echoes."""

import os
import signal

from scoring_common import echo_rows, name_matches


def init():
    pass


def run(mini_batch):
    if name_matches(mini_batch, "KILL_WHEN_NAME_CONTAINS"):
        print("ending my own process", flush=True)
        code = os.environ.get("KILL_EXIT_CODE")
        if code is not None:
            os._exit(int(code))
        os.kill(os.getpid(), signal.SIGKILL)
    return echo_rows(mini_batch, with_pid=True)
