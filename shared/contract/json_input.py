"""JSON from outside (request bodies, drop markers): strict parsing with bounded nesting.

Python's parser accepts `NaN` and `Infinity` and fails on deep nesting with a
RecursionError; neither may reach the engine. Numbers such as `1e999` still parse (to an
infinite float): the checks of each field refuse them.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidRequest

MAX_JSON_DEPTH = 32  # objects and arrays inside each other; batchfn's own bodies need 5


def parse_json_object(data: bytes | str, *, what: str,
                      max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """`data` as a JSON object; InvalidRequest (code invalid_json) for anything else."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid(f"{what} is not UTF-8 text") from None
    if not data.strip():
        raise _invalid(f"{what} is empty: expected a JSON object")
    try:
        document = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise _invalid(f"{what} nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, and the constants refused below
        raise _invalid(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _invalid(f"{what} must be a JSON object")
    if nesting_depth(document) > max_depth:
        raise _invalid(f"{what} nests deeper than {max_depth} levels")
    return document


def nesting_depth(value: Any) -> int:
    """How many objects/arrays deep `value` goes (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_json")

