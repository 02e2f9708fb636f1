"""The job settings of tabular inputs, validated where settings are (API, CLI, YAML).

Light on purpose: settings validation runs in the CLI, which loads no pandas or numpy.
"""

from __future__ import annotations

from typing import Any

from shared.errors import InvalidRequest
from shared.names import shown
from shared.tabular.formats import INPUT_FORMATS

MAX_PASSTHROUGH_COLUMNS = 64
MAX_COLUMN_NAME_CHARS = 256


def check_input_format(value: Any) -> str:
    """The setting `input_format` as one of INPUT_FORMATS (case-insensitive)."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text not in INPUT_FORMATS:
        raise InvalidRequest(
            f"setting input_format={shown(value)} is invalid: expected one of "
            + ", ".join(INPUT_FORMATS),
            details={"setting": "input_format", "value": shown(value)},
            code="invalid_setting",
        )
    return text


def check_passthrough_columns(value: Any) -> tuple[str, ...]:
    """The setting `passthrough_columns`: a list of column names, or one comma-separated
    string (as `--set passthrough_columns=id,region` gives it); () for none."""
    if value is None or value == "":
        return ()
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)):
        raise _bad(value, "a list of column names")
    cleaned = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise _bad(value, "column names that are non-empty strings")
        name = name.strip()
        if len(name) > MAX_COLUMN_NAME_CHARS:
            raise _bad(value, f"column names of at most {MAX_COLUMN_NAME_CHARS} characters")
        if name in cleaned:
            raise _bad(value, f"each column once ({name!r} is named twice)")
        cleaned.append(name)
    if len(cleaned) > MAX_PASSTHROUGH_COLUMNS:
        raise _bad(value, f"at most {MAX_PASSTHROUGH_COLUMNS} columns")
    return tuple(cleaned)


def _bad(value: Any, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"setting passthrough_columns={shown(value)} is invalid: expected {expected}",
        details={"setting": "passthrough_columns", "value": shown(value)},
        code="invalid_setting",
    )
