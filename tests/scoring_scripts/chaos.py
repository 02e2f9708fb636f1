"""Fails, hangs or ends its own process at random, as CHAOS_SEED decides; else returns the
base name of each input file (a list: one output line per file).

Each attempt of a mini-batch (known by its job's output folder, AZUREML_BI_OUTPUT_PATH,
and its first file's name) is counted in CHAOS_STATE_DIR, and the attempt's fate is drawn
from (seed, job, file, attempt): the same seed and job name give each mini-batch the same
fates, whichever worker or host runs it. A mini-batch whose draw of (seed, job, file) is
below CHAOS_DOOMED fails on every attempt; one that succeeded once
fails every later attempt (a redelivered copy) with odds CHAOS_LATE_FAIL, as when its
inputs were deleted meanwhile. Odds are CHAOS_FAIL, CHAOS_HANG (past the timeout) and
CHAOS_EXIT (the process ends) per attempt.
"""

import os
import random
import time


def init():
    pass


def run(mini_batch):
    first = os.path.basename(mini_batch[0])
    key = f"{os.environ['CHAOS_SEED']}:{os.path.basename(os.environ['AZUREML_BI_OUTPUT_PATH'])}"
    if random.Random(f"{key}:{first}:doomed").random() < _rate("CHAOS_DOOMED"):
        raise ValueError(f"chaos: mini-batch of {first} always fails")
    state = os.path.join(os.environ["CHAOS_STATE_DIR"], key.replace(":", "-") + "-" + first)
    attempt = _count_attempt(state)
    done = f"{state}.succeeded"
    if os.path.exists(done) and random.Random(f"{key}:{first}:{attempt}:late").random() < \
            _rate("CHAOS_LATE_FAIL"):
        raise FileNotFoundError(f"chaos: {first} was scored already and is gone now")
    draw = random.Random(f"{key}:{first}:{attempt}").random()
    fail, hang, end = _rate("CHAOS_FAIL"), _rate("CHAOS_HANG"), _rate("CHAOS_EXIT")
    if draw < fail:
        raise RuntimeError(f"chaos: attempt {attempt} of {first} fails")
    if draw < fail + hang:
        print(f"chaos: attempt {attempt} of {first} hangs", flush=True)
        time.sleep(3600)
    if draw < fail + hang + end:
        print(f"chaos: attempt {attempt} of {first} ends its process", flush=True)
        os._exit(7)
    with open(done, "w"):
        pass
    return [os.path.basename(path) for path in mini_batch]


def _rate(name):
    return float(os.environ.get(name, "0"))


def _count_attempt(path):
    with open(path, "a") as file:
        file.write("x")
    return os.path.getsize(path)
