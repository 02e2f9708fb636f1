"""Sleeps in run() (to exceed a timeout) when told to, else echoes with the pid."""

import os
import subprocess
import sys
import time

from scoring_common import echo_rows, name_matches


def init():
    pass


def run(mini_batch):
    if name_matches(mini_batch, "SLEEP_WHEN_NAME_CONTAINS"):
        pid_file = os.environ.get("SLEEP_CHILD_PID_FILE")
        if pid_file:
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
            with open(pid_file, "w") as file:
                file.write(str(child.pid))
        print("going to sleep", flush=True)
        time.sleep(float(os.environ.get("SLEEP_SECONDS", "3600")))
    return echo_rows(mini_batch, with_pid=True)
