"""Local file and folder names derived from names that come from storage or users."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_segment(name: str) -> str:
    """One folder name made from `name`: no separators, never "." or ".."."""
    segment = _UNSAFE.sub("_", name).strip(".") or "_"
    return segment[:200]


def relative_parts(name: str) -> tuple[str, ...]:
    """The parts of a relative path that stay inside its folder ("..", "." and "" dropped)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return tuple(p for p in parts if p not in ("", ".", "..", "/"))

