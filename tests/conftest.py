"""Shared fixtures: one real Azurite per test session, on free ports."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devhost.azurite import Azurite

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A real Azurite for the whole session; stopped at the end."""
    server = Azurite(location=tmp_path_factory.mktemp("azurite")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def storage_connection(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def unique_name() -> str:
    """A short name unique to one test, valid for containers, queues and hubs."""
    return "t" + uuid.uuid4().hex[:12]


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.1) -> object:
    """Poll `predicate` until it returns something truthy (returned); TimeoutError after
    `timeout` seconds names `what` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(autouse=True)
def _no_leaked_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell may point at a real account; tests only ever use their Azurite.
    for key in list(os.environ):
        if key.startswith("AzureWebJobsStorage") or key.startswith("BATCHFN_"):
            monkeypatch.delenv(key, raising=False)
