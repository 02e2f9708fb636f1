"""Echoes each input file as a row (file, size); see README.md for its variables."""

import logging
import os
import time

from scoring_common import echo_rows, record

logger = logging.getLogger(__name__)
model_text = None


def init():
    global model_text
    record("inits.log", "init")
    model_file = os.environ.get("ECHO_MODEL_FILE")
    if model_file:
        with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], model_file)) as file:
            model_text = file.read().strip()
    print("echo init done")


def run(mini_batch):
    record("runs.log", "start")
    print(f"echo scoring {len(mini_batch)} files")
    logger.info("echo info message")
    logger.debug("echo debug message")
    time.sleep(float(os.environ.get("ECHO_SLEEP", "0")) * _slowdown())
    table = echo_rows(mini_batch, with_pid=os.environ.get("ECHO_WITH_PID") == "1")
    for name in filter(None, os.environ.get("ECHO_ENV_COLUMNS", "").split(",")):
        table[name] = os.environ.get(name, "")
    if model_text is not None:
        table["model"] = model_text
    record("runs.log", "end")
    return table


def _slowdown() -> float:
    """ECHO_SLOW_FACTOR on a host whose output folder's path holds ECHO_SLOW_MARK, else 1:
    one slow host among several (the host's BATCHFN_WORK_DIR is in that path)."""
    mark = os.environ.get("ECHO_SLOW_MARK")
    if mark and mark in os.environ.get("AZUREML_BI_OUTPUT_PATH", ""):
        return float(os.environ.get("ECHO_SLOW_FACTOR", "10"))
    return 1.0


def shutdown():
    record("shutdowns.log", "shutdown")
