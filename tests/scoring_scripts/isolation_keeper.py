"""Deployment B of the isolation test: keeps a secret where a deployment keeps things.

run() writes KEEPER_SECRET (its own environment variable) into its HOME, its TMPDIR, /tmp,
/dev/shm and its job's output folder (its model and its input hold it too), then waits,
running, until a file named `release` appears in its HOME (the test puts it there), so
that the other deployment's script looks while this one runs.
"""

import os
import time

WAIT_SECONDS = 120


def init():
    pass


def run(mini_batch):
    secret = os.environ["KEEPER_SECRET"]
    places = [os.environ["HOME"], os.environ["TMPDIR"], "/tmp", "/dev/shm",
              os.environ["AZUREML_BI_OUTPUT_PATH"]]
    for folder in places:
        with open(os.path.join(folder, f"keeper-{os.getpid()}.txt"), "w") as file:
            file.write(secret)
    with open(os.path.join(os.environ["HOME"], "written"), "w") as file:
        file.write("\n".join(places))
    release = os.path.join(os.environ["HOME"], "release")
    deadline = time.monotonic() + WAIT_SECONDS
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.1)
    import tabulate  # its environment's

    return [f"{os.path.basename(path)} {tabulate.__version__}" for path in mini_batch]
