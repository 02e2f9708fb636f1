"""Waiting on a group of concurrent downloads."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future


def wait_all(futures: Iterable[Future]) -> None:
    """Wait for every future (none is left writing), then raise the first error, if any."""
    error: BaseException | None = None
    for future in futures:
        try:
            future.result()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            error = error or exc
    if error is not None:
        raise error
