"""Fixtures of the integration tests (real Azurite)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceExistsError

from shared.contract.layout import DATA_CONTAINER
from shared.storage.account import StorageAccount


@pytest.fixture(scope="session")
def account(storage_connection: str) -> StorageAccount:
    """The Azurite account, with the data container (where job inputs lie) created."""
    account = StorageAccount(connection_string=storage_connection)
    try:
        account.container(DATA_CONTAINER).create_container()
    except ResourceExistsError:
        pass
    return account
