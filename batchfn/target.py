"""Which batchfn the client talks to: arguments, then BATCHFN_URL/BATCHFN_KEY, then the
local devhost (whose key devhost records in its state file, so local use needs no key)."""

from __future__ import annotations

import os

from batchfn.devhost_state import local_key

DEFAULT_URL = "http://127.0.0.1:7071"


def resolve_target(url: str | None = None, key: str | None = None) -> tuple[str, str | None]:
    """The API's base URL and key: arguments, then BATCHFN_URL/BATCHFN_KEY, then the devhost."""
    base = (url or os.environ.get("BATCHFN_URL") or DEFAULT_URL).rstrip("/")
    return base, key or os.environ.get("BATCHFN_KEY") or local_key(base)
