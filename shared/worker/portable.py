"""What the worker runtime uses of Python beyond 3.9, written for 3.9 too.

The worker runtime runs inside each deployment's environment, on Python 3.9 to 3.13: its
modules use no syntax or library feature newer than 3.9 (tests/unit/test_worker_portability.py
checks the syntax and the known calls).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

_MISSING = object()


def zip_equal(*iterables: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
    """zip(), raising ValueError when the iterables' lengths differ (zip(strict=True))."""
    iterators = [iter(items) for items in iterables]
    while True:
        items = [next(iterator, _MISSING) for iterator in iterators]
        if all(item is _MISSING for item in items):
            return
        if any(item is _MISSING for item in items):
            raise ValueError("zip_equal() arguments have different lengths")
        yield tuple(items)
