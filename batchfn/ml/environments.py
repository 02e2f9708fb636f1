"""`ml_client.environments`, as azure-ai-ml's: register, get and list environments."""

from __future__ import annotations

import os
from typing import Any

from batchfn.client import BatchfnClient
from batchfn.ml.entities import Environment


class EnvironmentOperations:
    """Environments: a conda file (Python version and pip packages) registered by content;
    the service resolves it with uv before it stores anything."""

    def __init__(self, client: BatchfnClient) -> None:
        self._client = client

    def create_or_update(self, environment: Environment) -> Environment:
        """Register `environment` (identical content: the existing version)."""
        record = self._client.create_environment(document=environment._to_document(),
                                                 base_dir=os.getcwd())
        return _from_api(record, like=environment)

    def get(self, name: str, version: str | None = None, label: str | None = None
            ) -> Environment:
        """An environment version; the newest with `label="latest"` or without a version."""
        return _from_api(self._client.get_environment(name, version or label or "latest"))

    def list(self, name: str | None = None) -> list[Environment]:
        """The latest version of every environment, or the versions of `name`."""
        return [_from_api(r) for r in self._client.list_environments(name)]


def _from_api(record: dict[str, Any], like: Environment | None = None) -> Environment:
    return Environment(name=record["name"], version=str(record["version"]),
                       description=record.get("description") or None,
                       image=record.get("image"),
                       conda_file=like.conda_file if like is not None else record.get(
                           "conda_file"),
                       tags=like.tags if like is not None else None)
