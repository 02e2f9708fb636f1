"""The storage account: one place that turns app settings into blob and queue clients.

Locally the setting is a connection string (Azurite); in Azure it is identity based
(`AzureWebJobsStorage__accountName` / `__blobServiceUri` / `__queueServiceUri`, with
`__credential=managedidentity` and optional `__clientId`), as the Functions host reads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueServiceClient

if TYPE_CHECKING:
    from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient

DEFAULT_CONNECTION = "AzureWebJobsStorage"


class StorageNotConfigured(RuntimeError):
    """No usable storage setting was found for a connection name."""


@dataclass(frozen=True)
class StorageAccount:
    """Blob and queue endpoints of one account, from a connection string or identity."""

    connection_string: str | None = None
    blob_url: str | None = None
    queue_url: str | None = None
    client_id: str | None = None

    @classmethod
    def from_settings(cls, name: str = DEFAULT_CONNECTION,
                      env: Mapping[str, str] | None = None) -> StorageAccount:
        """Read the connection `name` the way the Functions host does."""
        env = os.environ if env is None else env
        value = env.get(name)
        if value:
            return cls(connection_string=value)
        account = env.get(f"{name}__accountName")
        blob = env.get(f"{name}__blobServiceUri")
        queue = env.get(f"{name}__queueServiceUri")
        if account:
            blob = blob or f"https://{account}.blob.core.windows.net"
            queue = queue or f"https://{account}.queue.core.windows.net"
        if not blob:
            raise StorageNotConfigured(
                f"storage connection {name!r} is not configured: set {name} to a connection "
                f"string or {name}__accountName for a managed identity"
            )
        return cls(blob_url=blob, queue_url=queue, client_id=env.get(f"{name}__clientId"))

    @cached_property
    def _credential(self):  # noqa: ANN202 - azure.identity type is optional at import time
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        if self.client_id:
            return ManagedIdentityCredential(client_id=self.client_id)
        return DefaultAzureCredential()

    def blob_service(self, **client_options: Any) -> BlobServiceClient:
        """A blob client of the account; `client_options` go to the SDK client as they are."""
        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string,
                                                            **client_options)
        return BlobServiceClient(self.blob_url, credential=self._credential, **client_options)

    def async_blob_service(self) -> AsyncBlobServiceClient:
        """An asyncio blob client of the account (create and use it on one event loop)."""
        from azure.storage.blob.aio import BlobServiceClient as AsyncClient

        if self.connection_string:
            return AsyncClient.from_connection_string(self.connection_string)
        from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

        credential = (ManagedIdentityCredential(client_id=self.client_id) if self.client_id
                      else DefaultAzureCredential())
        return AsyncClient(self.blob_url, credential=credential)

    def queue_service(self, **client_options: Any) -> QueueServiceClient:
        """A queue client of the account; `client_options` go to the SDK client as they are."""
        if self.connection_string:
            return QueueServiceClient.from_connection_string(self.connection_string,
                                                             **client_options)
        if not self.queue_url:
            raise StorageNotConfigured("no queue endpoint configured for this account")
        return QueueServiceClient(self.queue_url, credential=self._credential, **client_options)

    @property
    def credential(self):  # noqa: ANN201 - an azure.identity credential
        """The identity the account's clients use (where the setting is identity based)."""
        return self._credential

    def container(self, name: str) -> ContainerClient:
        return self.blob_service().get_container_client(name)


@cache
def default_account() -> StorageAccount:
    """The account of the app setting AzureWebJobsStorage (one per process)."""
    return StorageAccount.from_settings()
