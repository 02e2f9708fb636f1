"""Storage connections named by bindings, and the shared async SDK clients devhost uses."""

from __future__ import annotations

import asyncio
import os

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import BlobServiceClient, ContainerClient
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from devhost.config import ConfigError

DEFAULT_CONNECTION = "AzureWebJobsStorage"


def resolve_connection(setting: str | None) -> str:
    """The connection string a binding's `connection` names (the host's lookup rules)."""
    name = setting or DEFAULT_CONNECTION
    for key in (name, f"AzureWebJobs{name}"):
        value = os.environ.get(key, "").strip()
        if value:
            return value
    if any(key.startswith(f"{name}__") for key in os.environ):
        raise ConfigError(
            f"connection '{name}' is identity-based ({name}__...); devhost needs a "
            f"connection string in '{name}' (Azurite's, locally)"
        )
    raise ConfigError(f"connection '{name}' is not set (app setting or environment variable)")


class StorageClients:
    """Async SDK clients per connection string, created once and closed together."""

    def __init__(self) -> None:
        self._queue_services: dict[str, QueueServiceClient] = {}
        self._blob_services: dict[str, BlobServiceClient] = {}
        self._queues: dict[tuple[str, str], QueueClient] = {}
        self._created: set[tuple[str, str, str]] = set()
        self._create_lock = asyncio.Lock()

    def queue_service(self, connection: str) -> QueueServiceClient:
        """The queue service client of `connection` (a connection string)."""
        client = self._queue_services.get(connection)
        if client is None:
            client = QueueServiceClient.from_connection_string(connection)
            self._queue_services[connection] = client
        return client

    def blob_service(self, connection: str) -> BlobServiceClient:
        """The blob service client of `connection` (a connection string)."""
        client = self._blob_services.get(connection)
        if client is None:
            client = BlobServiceClient.from_connection_string(connection)
            self._blob_services[connection] = client
        return client

    def queue(self, connection: str, name: str) -> QueueClient:
        """A queue client, shared by everything that uses that queue."""
        key = (connection, name)
        client = self._queues.get(key)
        if client is None:
            client = self.queue_service(connection).get_queue_client(name)
            self._queues[key] = client
        return client

    def container(self, connection: str, name: str) -> ContainerClient:
        """A container client on `connection`."""
        return self.blob_service(connection).get_container_client(name)

    async def ensure_queue(self, connection: str, name: str) -> QueueClient:
        """The queue client, creating the queue on first use (as output bindings do)."""
        client = self.queue(connection, name)
        key = ("queue", connection, name)
        if key not in self._created:
            async with self._create_lock:
                if key not in self._created:
                    try:
                        await client.create_queue()
                    except ResourceExistsError:
                        pass
                    self._created.add(key)
        return client

    async def ensure_container(self, connection: str, name: str) -> ContainerClient:
        """The container client, creating the container on first use."""
        client = self.container(connection, name)
        key = ("container", connection, name)
        if key not in self._created:
            async with self._create_lock:
                if key not in self._created:
                    try:
                        await client.create_container()
                    except ResourceExistsError:
                        pass
                    self._created.add(key)
        return client

    async def close(self) -> None:
        """Close every client (their HTTP sessions)."""
        for client in (*self._queues.values(), *self._queue_services.values(),
                       *self._blob_services.values()):
            await client.close()
        self._queues.clear()
        self._queue_services.clear()
        self._blob_services.clear()
