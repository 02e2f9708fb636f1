"""Fixtures of the integration tests (real Azurite)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceExistsError

from shared.contract.layout import ASSETS_CONTAINER, DATA_CONTAINER
from shared.contract.registry_records import AssetRef
from shared.storage.account import StorageAccount

SCRIPTS = Path(__file__).resolve().parents[1] / "scoring_scripts"


@pytest.fixture(scope="session")
def account(storage_connection: str) -> StorageAccount:
    """The Azurite account, with the data container (where job inputs lie) created."""
    account = StorageAccount(connection_string=storage_connection)
    try:
        account.container(DATA_CONTAINER).create_container()
    except ResourceExistsError:
        pass
    return account


def script_assets(account: StorageAccount, name: str,
                  weights: bytes = b"weights\n") -> tuple[AssetRef, AssetRef]:
    """A tiny model folder (`model/weights.txt`) and the test scripts folder, uploaded as
    versioned assets named after `name` under a fresh digest each call."""
    container = account.container(ASSETS_CONTAINER)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    run = uuid.uuid4().hex[:8]
    model = AssetRef(kind="model", name=f"{name}-model", version="1", digest=f"m{run}",
                     prefix=f"models/{name}-model/{run}/", root="model")
    container.upload_blob(f"{model.prefix}model/weights.txt", weights)
    code = AssetRef(kind="code", name=f"{name}-scripts", version="1", digest=f"c{run}",
                    prefix=f"code/{name}-scripts/{run}/", root="scoring_scripts")
    for path in sorted(SCRIPTS.glob("*.py")):
        container.upload_blob(f"{code.prefix}scoring_scripts/{path.name}", path.read_bytes())
    return model, code
