"""Pages of long listings (jobs, a job's errors report) and their continuation tokens.

A listing answers at most `top` items and at most MAX_PAGE_BYTES of them, with a
continuation token when more follow; the caller passes the token back to get the next
page. A token is opaque to callers: base64url of a small JSON object that says which
listing it continues and where, checked field by field when it comes back (a forged or
foreign token is a 400, never a read of anything else).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from shared.contract.errors import InvalidRequest

MAX_PAGE_BYTES = 4 * 1024 * 1024  # JSON of one page's items, about
MAX_TOKEN_CHARS = 1024
# What a token is made of (base64url): a URL carries it as it is, a request line stays short.
TOKEN_PATTERN = r"[A-Za-z0-9_-]{1,1024}"
_TOKEN = re.compile(TOKEN_PATTERN)


@dataclass(frozen=True)
class Page:
    """Items of one page, and the token of the next one (None: this was the last)."""

    value: list[dict[str, Any]]
    continuation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The API's answer: {"value": [...], "continuation": token} (no token at the end)."""
        body: dict[str, Any] = {"value": self.value}
        if self.continuation is not None:
            body["continuation"] = self.continuation
        return body


def make_token(kind: str, **state: int | str) -> str:
    """A continuation token of listing `kind` holding `state`."""
    text = json.dumps({"kind": kind, **state}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def read_token(token: str | None, kinds: dict[str, dict[str, type]]
               ) -> tuple[str, dict[str, Any]] | None:
    """(kind, state) of a token of one of the listings `kinds` names, whose state holds
    exactly the fields of its kind, each of its type (ints >= 0, strs of at most
    MAX_TOKEN_CHARS); None for no token; InvalidRequest for anything else."""
    if token is None:
        return None
    try:
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise ValueError("not a token")
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_token() from None
    kind = state.pop("kind", None) if isinstance(state, dict) else None
    fields = kinds.get(kind) if isinstance(kind, str) else None
    if fields is None or set(state) != set(fields):
        raise bad_token()
    for name, kind_of in fields.items():
        value = state[name]
        if type(value) is not kind_of or (kind_of is int and value < 0) or (
                kind_of is str and len(value) > MAX_TOKEN_CHARS):
            raise bad_token()
    return kind, state


def bad_token() -> InvalidRequest:
    """The refusal of a token that no page of this listing gave out (or no longer fits)."""
    return InvalidRequest("continuation is not a token this listing gave out; start again "
                          "without one", details={"parameter": "continuation"},
                          code="invalid_continuation")
