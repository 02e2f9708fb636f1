"""Inputs that failed inside a scoring process: a row that cannot be parsed, a file of an
unsupported type. Each is one `FailedInput`, reported with its file and row number.

Rows that fail while a range is read are returned by the reader. Failures found inside
run() (the built-in MLflow scorer's unsupported files) are reported to the collector that
the worker opened around the run() call; where none is open (a worker that does not
collect), `report` raises instead, so a failure is never silently lost: the mini-batch
fails with its message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

MAX_ERROR_CHARS = 1000  # one failure's message, as kept in reports


@dataclass(frozen=True)
class FailedInput:
    """Inputs that could not be scored: a whole file (`row` None), or `rows` consecutive
    rows of a file from row number `row` (one row, or a range that could not be read).

    `file` names the input as the scoring process knows it: its display name for rows of
    a tabular mini-batch, the local path run() was given for a file of a mini-batch of
    files (the worker maps it back to its input). Row numbers count data rows from 0
    after any header, as the output's `row` column does. A failure counts `rows` inputs
    against error_threshold (a file counts 1).
    """

    file: str
    error: str
    row: int | None = None
    rows: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def make(cls, file: str, error: object, row: int | None = None,
             rows: int = 1) -> FailedInput:
        """A FailedInput whose message is one line of at most MAX_ERROR_CHARS."""
        message = " ".join(str(error).split())
        if len(message) > MAX_ERROR_CHARS:
            message = message[:MAX_ERROR_CHARS - 1] + "…"
        return cls(file=file, error=message, row=row, rows=rows)


class NoCollector(RuntimeError):
    """A failure was reported while no worker collects them: it fails the mini-batch."""


class FailureCollector:
    """The failures reported during one run() call, in the order they were reported."""

    def __init__(self) -> None:
        self._items: list[FailedInput] = []
        self._lock = threading.Lock()

    def add(self, failure: FailedInput) -> None:
        with self._lock:
            self._items.append(failure)

    @property
    def items(self) -> tuple[FailedInput, ...]:
        with self._lock:
            return tuple(self._items)


_active: FailureCollector | None = None
_active_lock = threading.Lock()


@contextmanager
def collecting() -> Iterator[FailureCollector]:
    """Collect the failures reported until the block ends (the worker wraps run() in it)."""
    global _active
    collector = FailureCollector()
    with _active_lock:
        if _active is not None:
            raise RuntimeError("failures are already being collected in this process")
        _active = collector
    try:
        yield collector
    finally:
        with _active_lock:
            _active = None


def is_collecting() -> bool:
    """Whether a worker collects failures now (else `report` raises)."""
    return _active is not None


def report(failure: FailedInput) -> None:
    """Report one failed input to the worker; NoCollector (with its message) if none listens."""
    collector = _active
    if collector is None:
        where = failure.file if failure.row is None else f"{failure.file} row {failure.row}"
        if failure.row is not None and failure.rows > 1:
            where += f" (+{failure.rows - 1} rows)"
        raise NoCollector(f"{where}: {failure.error}")
    collector.add(failure)
