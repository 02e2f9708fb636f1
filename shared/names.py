"""Name rules for everything a user names: endpoints, deployments, assets, asset files.

Endpoint and deployment names follow Azure ML: 3-32 characters, a letter first, then
letters, digits and hyphens. Asset names allow what Azure ML asset names allow (letters,
digits, `-`, `_`, `.`), starting with a letter or digit. Names end up in blob paths and in
local folders on workers, so anything that could walk out of its folder is refused here.
"""

from __future__ import annotations

import re
from typing import Any

from shared.errors import InvalidRequest

RESOURCE_NAME_RULE = "3-32 characters: a letter first, then letters, digits or '-'"
ASSET_NAME_RULE = "1-255 characters: letters, digits, '-', '_' or '.', a letter or digit first"

_RESOURCE_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9-]{2,31}")
_ASSET_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}")


def check_resource_name(kind: str, name: Any) -> str:
    """Return `name` if it is a valid endpoint/deployment name, else raise InvalidRequest."""
    if not isinstance(name, str) or not _RESOURCE_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid {kind} name {name!r}: expected {RESOURCE_NAME_RULE}",
            details={"field": f"{kind}_name", "value": name, "rule": RESOURCE_NAME_RULE},
            code="invalid_name",
        )
    return name


def check_asset_name(name: Any) -> str:
    """Return `name` if it is a valid asset (model/code) name, else raise InvalidRequest."""
    if not isinstance(name, str) or not _ASSET_NAME.fullmatch(name) or ".." in name:
        raise InvalidRequest(
            f"invalid asset name {name!r}: expected {ASSET_NAME_RULE}",
            details={"field": "name", "value": name, "rule": ASSET_NAME_RULE},
            code="invalid_name",
        )
    return name


def check_relative_path(path: Any, *, field: str = "path") -> str:
    """Return `path` if it is a plain relative POSIX path that stays inside its folder."""
    bad = (
        not isinstance(path, str)
        or not path
        or len(path) > 1024
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    )
    if bad:
        raise InvalidRequest(
            f"invalid {field} {path!r}: expected a relative path inside the folder "
            "(no '..', no leading '/', no backslashes)",
            details={"field": field, "value": path},
            code="invalid_path",
        )
    return path
