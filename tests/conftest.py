"""Shared fixtures: one real Azurite per test session, on free ports."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
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


@pytest.fixture(autouse=True)
def _no_leaked_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell may point at a real account; tests only ever use their Azurite.
    for key in list(os.environ):
        if key.startswith("AzureWebJobsStorage") or key.startswith("BATCHFN_"):
            monkeypatch.delenv(key, raising=False)


def jsonl_rows(data: bytes | None) -> list[dict]:
    """The rows of a part encoded as jsonl (what the scoring tests ask workers for)."""
    return [json.loads(line) for line in (data or b"").splitlines()]


@pytest.fixture
def part_rows():
    """`jsonl_rows` for tests: the rows of a run()'s part encoded as jsonl."""
    return jsonl_rows
