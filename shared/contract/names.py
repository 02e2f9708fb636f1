"""Name rules for everything a user names: endpoints, deployments, assets, asset files.

Endpoint and deployment names follow Azure ML: 3-32 characters, a letter first, then
letters, digits and hyphens. Asset names allow what Azure ML asset names allow (letters,
digits, `-`, `_`, `.`), starting with a letter or digit. Names end up in blob paths and in
local folders on workers, so anything that could walk out of its folder is refused here.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import InvalidRequest

RESOURCE_NAME_RULE = "3-32 characters: a letter first, then letters, digits or '-'"
ASSET_NAME_RULE = "1-255 characters: letters, digits, '-', '_' or '.', a letter or digit first"

# The patterns (whole-string matches) are also the API document's (functions/openapi.py).
RESOURCE_NAME_PATTERN = r"[a-zA-Z][a-zA-Z0-9-]{2,31}"
ASSET_NAME_PATTERN = r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}"
MAX_RELATIVE_PATH = 1024

_RESOURCE_NAME = re.compile(RESOURCE_NAME_PATTERN)
_ASSET_NAME = re.compile(ASSET_NAME_PATTERN)


def check_resource_name(kind: str, name: Any) -> str:
    """Return `name` if it is a valid endpoint/deployment name, else raise InvalidRequest."""
    if not isinstance(name, str) or not _RESOURCE_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid {kind} name {shown(name)}: expected {RESOURCE_NAME_RULE}",
            details={"field": f"{kind}_name", "value": shown(name), "rule": RESOURCE_NAME_RULE},
            code="invalid_name",
        )
    return name


def check_asset_name(name: Any) -> str:
    """Return `name` if it is a valid asset (model/code) name, else raise InvalidRequest."""
    if not isinstance(name, str) or not _ASSET_NAME.fullmatch(name) or ".." in name:
        raise InvalidRequest(
            f"invalid asset name {shown(name)}: expected {ASSET_NAME_RULE}",
            details={"field": "name", "value": shown(name), "rule": ASSET_NAME_RULE},
            code="invalid_name",
        )
    return name


def check_relative_path(path: Any, *, field: str = "path") -> str:
    """Return `path` if it is a plain relative POSIX path that stays inside its folder:
    no '..', '.' or empty segments, no leading '/', no backslash (storage reads it as '/'),
    no control characters, valid UTF-8, at most MAX_RELATIVE_PATH characters."""
    if relative_path_problem(path) is not None:
        raise InvalidRequest(
            f"invalid {field} {shown(path)}: expected a relative path inside the folder "
            "(no '..', no leading '/', no backslashes or control characters, at most "
            f"{MAX_RELATIVE_PATH} characters)",
            details={"field": field, "value": shown(path)},
            code="invalid_path",
        )
    return path


def relative_path_problem(path: Any, *, allow_dot_ended: bool = True) -> str | None:
    """Why `path` is not a plain relative path (see check_relative_path), or None.

    With `allow_dot_ended` False a segment may not end with '.' either: Azure Storage
    advises against such names, as a URL's trailing dot can be dropped on the way.
    """
    if not isinstance(path, str) or not path:
        return "not a non-empty text"
    if len(path) > MAX_RELATIVE_PATH:
        return f"longer than {MAX_RELATIVE_PATH} characters"
    if path.startswith("/"):
        return "starts with '/'"
    if "\\" in path:
        return "holds a backslash (storage reads it as '/')"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "holds a control character"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    segments = path.split("/")
    if any(part in ("", ".", "..") for part in segments):
        return "has an empty, '.' or '..' segment"
    if not allow_dot_ended and any(part.endswith(".") for part in segments):
        return "has a segment that ends with '.'"
    return None


def shown(value: Any, limit: int = 100) -> str:
    """`repr(value)` cut to `limit` characters, for error messages that echo input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
