"""devhost's state file: which devhost runs on a port, its URL and keys, for the user who
started it. devhost writes it (devhost/keys.py) and removes it when it stops; this is its
one reader, used by devhost, its test harness and the batchfn client, which finds a local
host's key here (the client ships this package as `batchfn.devhost_state`, so it uses only
the standard library).

The file is `<state folder>/<port>.json`, the folder `$DEVHOST_STATE_DIR` or
`~/.devhost` (mode 0700, the file 0600); it is never read through a symbolic link.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

STATE_DIR_SETTING = "DEVHOST_STATE_DIR"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_STATE_BYTES = 64 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@dataclass(frozen=True)
class HostState:
    """A running devhost as its state file records it."""

    url: str
    key: str
    master_key: str
    pid: int
    script_root: str


def state_dir() -> Path:
    """Where state files live: $DEVHOST_STATE_DIR, else ~/.devhost."""
    configured = os.environ.get(STATE_DIR_SETTING, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".devhost"


def state_file(port: int, folder: Path | None = None) -> Path:
    """The state file of the devhost on `port` (in `folder`, else `state_dir()`)."""
    return (folder or state_dir()) / f"{port}.json"


def read_state(port: int, folder: Path | None = None) -> HostState | None:
    """The state of the devhost on `port`; None when there is no readable, whole file."""
    try:
        fd = os.open(state_file(port, folder), os.O_RDONLY | _NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            document = json.loads(handle.read(MAX_STATE_BYTES + 1))
        return HostState(url=str(document["url"]), key=str(document["key"]),
                         master_key=str(document["master_key"]), pid=int(document["pid"]),
                         script_root=str(document["script_root"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def local_key(url: str) -> str | None:
    """The function key of the devhost serving `url`, when `url` is on this machine."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in LOOPBACK_HOSTS:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    state = read_state(port)
    return None if state is None else state.key
