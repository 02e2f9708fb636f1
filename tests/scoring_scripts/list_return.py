"""Returns a list of "<file> <size>" strings instead of a DataFrame."""

import os


def init():
    pass


def run(mini_batch):
    return [f"{os.path.basename(path)} {os.path.getsize(path)}" for path in mini_batch]
