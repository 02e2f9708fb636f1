"""Which batchfn the client talks to: arguments, then BATCHFN_URL/BATCHFN_KEY, then the
local devhost (whose key the devhost writes to a state file, so local use needs no key)."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:7071"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def resolve_target(url: str | None = None, key: str | None = None) -> tuple[str, str | None]:
    """The API's base URL and key: arguments, then BATCHFN_URL/BATCHFN_KEY, then the devhost."""
    base = (url or os.environ.get("BATCHFN_URL") or DEFAULT_URL).rstrip("/")
    return base, key or os.environ.get("BATCHFN_KEY") or devhost_key(base)


def devhost_key(url: str) -> str | None:
    """The key a local devhost wrote to `~/.devhost/<port>.json` (or DEVHOST_STATE_DIR)."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in _LOOPBACK:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    folder = Path(os.environ.get("DEVHOST_STATE_DIR") or Path.home() / ".devhost")
    try:
        state = json.loads((folder / f"{port}.json").read_text())
    except (OSError, ValueError):
        return None
    return state.get("key") if isinstance(state, dict) else None
