"""The scoring host's local folders: names made safe from names that come from storage or
users, where a mini-batch's inputs land, and the scratch folder in RAM."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import psutil

from shared.contract.manifest import InputFile

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_segment(name: str) -> str:
    """One folder name made from `name`: no separators, never "." or ".."."""
    segment = _UNSAFE.sub("_", name).strip(".") or "_"
    return segment[:200]


def relative_parts(name: str) -> tuple[str, ...]:
    """The parts of a relative path that stay inside its folder ("..", "." and "" dropped)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return tuple(p for p in parts if p not in ("", ".", "..", "/"))


RAM_FOLDER = Path("/dev/shm")
RAM_MIN_FREE_BYTES = 2 * 1024**3
RAM_PREFIX = "batchfn-scratch-"


def ram_scratch_folder(folder: Path = RAM_FOLDER,
                       min_free_bytes: int = RAM_MIN_FREE_BYTES) -> Path | None:
    """This process's scratch folder in RAM (`/dev/shm`), or None where there is none.

    Mini-batch inputs (and attempt logs) live there only while run() works, and file
    creation there costs
    microseconds instead of the milliseconds of a busy disk (measured here: 0.05 ms against
    1.6 ms per small file), which the download threads otherwise spend instead of
    downloading. A RAM folder with less than `min_free_bytes` free (a container's 64 MB
    /dev/shm) is not used. Folders that dead processes left behind are removed.
    """
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    if stats.f_bavail * stats.f_frsize < min_free_bytes:
        return None
    for stale in folder.glob(f"{RAM_PREFIX}*"):
        pid = stale.name.removeprefix(RAM_PREFIX)
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return folder / f"{RAM_PREFIX}{os.getpid()}"


def local_paths(files: Sequence[InputFile], folder: Path) -> list[Path]:
    """Where each input lands: `folder`/<display name>, keeping the original file name.

    Scripts use os.path.basename(path) in their outputs, so names are kept; a clash (two
    display names that differ only in dropped ".." parts) goes into a numbered sub-folder.
    """
    paths: list[Path] = []
    taken: set[Path] = set()
    for number, file in enumerate(files):
        parts = relative_parts(file.display_name) or relative_parts(file.blob_name) or ("input",)
        path = folder.joinpath(*parts)
        if path in taken:
            path = folder / f".{number}" / parts[-1]
        taken.add(path)
        paths.append(path)
    return paths
