"""Helpers shared by the test scoring scripts (importable: the code folder is on sys.path)."""

import os
import time

import pandas as pd


def echo_rows(mini_batch, with_pid=False):
    """One row per file: base name and size, in input order."""
    rows = [{"file": os.path.basename(path), "size": os.path.getsize(path)} for path in mini_batch]
    table = pd.DataFrame(rows, columns=["file", "size"])
    if with_pid:
        table["pid"] = os.getpid()
    return table


def record(file_name, text):
    """Append one line to ECHO_RECORD_DIR/file_name, when that folder is set."""
    folder = os.environ.get("ECHO_RECORD_DIR")
    if folder:
        with open(os.path.join(folder, file_name), "a") as file:
            file.write(f"{text} {os.getpid()} {time.time():.6f}\n")


def name_matches(mini_batch, variable):
    """True when the variable is unset or some file's base name contains its value."""
    needle = os.environ.get(variable)
    return not needle or any(needle in os.path.basename(path) for path in mini_batch)
