"""Files only their owner may read: devhost's state files (they hold keys) and the folder of
the Azurite it starts (it stores the keys document).

Folders are `0700`, files `0600`; neither is ever reached through a symbolic link planted
in its place (the last component is opened with O_NOFOLLOW, relative to the folder's own
descriptor), and a folder another user owns is refused rather than used.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class PrivateFileError(OSError):
    """A private folder or file is a symlink, not ours, or not what it should be."""


def private_folder(path: Path) -> Path:
    """Make `path` a folder only its owner can use: created `0700` (parents as usual), an
    existing one of ours narrowed to `0700`; a symlink or another user's folder is refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        raise PrivateFileError(f"{path} is not a folder of its own (a symlink?): {exc}") from exc
    try:
        status = os.fstat(fd)
        if not stat.S_ISDIR(status.st_mode):
            raise PrivateFileError(f"{path} is not a folder")
        if hasattr(os, "getuid") and status.st_uid != os.getuid():
            raise PrivateFileError(f"{path} belongs to another user: devhost keeps its keys "
                                   "only in a folder of its own")
        if stat.S_IMODE(status.st_mode) & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, as a new `0600` file (never through a link)."""
    folder = os.open(path.parent, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
    temporary = f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600,
                     dir_fd=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            # rename() replaces a symlink at `path` itself; it never writes through it.
            os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=folder)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(folder)


def read_private(path: Path) -> bytes:
    """The content of `path`, refusing a symlink in its place."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()
