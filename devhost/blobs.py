"""Blob triggers: a container scan that fires once per new or changed blob.

Receipts are blobs in `azure-webjobs-hosts` (as the Functions host keeps them), one per
function, blob and ETag, written after the function succeeded, so a restart does not fire
again. A blob that fails 5 tries goes to the `webjobs-blobtrigger-poison` queue and gets a
receipt. Triggers declared with the Event Grid source are served by the same scan, since
Azurite raises no events.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from devhost.bindings import (
    FunctionBindings,
    as_blob_argument,
    expand_settings,
    is_sdk_type,
    sdk_blob_argument,
)
from devhost.config import ConfigError
from devhost.connections import DEFAULT_CONNECTION, StorageClients
from devhost.invoker import Invoker

log = logging.getLogger("devhost.blobs")

RECEIPTS_CONTAINER = "azure-webjobs-hosts"
POISON_QUEUE = "webjobs-blobtrigger-poison"
MAX_TRIES = 5
_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class BlobPath:
    """A trigger path `container/prefix{name}...`: where to list and how to match names."""

    container: str
    prefix: str
    pattern: re.Pattern[str]

    @classmethod
    def parse(cls, path: str) -> BlobPath:
        """Compile a blob-trigger path; parameters are not allowed in the container."""
        container, _, name = path.strip("/").partition("/")
        if not container or "{" in container or not name:
            raise ConfigError(f"blob trigger path {path!r} must be 'container/{{name}}'-like")
        regex, position = "", 0
        seen: set[str] = set()
        for match in _PARAMETER.finditer(name):
            regex += re.escape(name[position:match.start()])
            key = match.group(1)
            if key in seen:
                raise ConfigError(f"blob trigger path {path!r} repeats {{{key}}}")
            seen.add(key)
            # The last parameter may span folders; earlier ones stop at a '/' or a literal.
            regex += f"(?P<{key}>.+?)"
            position = match.end()
        regex += re.escape(name[position:])
        first = name.find("{")
        prefix = name if first < 0 else name[:first]
        return cls(container, prefix, re.compile(f"^{regex}$", re.DOTALL))

    def match(self, blob_name: str) -> dict[str, str] | None:
        """Binding data from a blob name in the container, or None if it does not match."""
        found = self.pattern.match(blob_name)
        return found.groupdict() if found else None


class BlobWatcher:
    """Scans one container for one function and runs it once per new or changed blob."""

    def __init__(self, bindings: FunctionBindings, *, clients: StorageClients,
                 invoker: Invoker, connection: str, host_connection: str,
                 concurrency: int, scan_interval: float = 1.0) -> None:
        self.bindings = bindings
        self.name = bindings.name
        self.path = expand_settings(bindings.trigger["path"])
        self._blob_path = BlobPath.parse(self.path)
        self._parameter = bindings.trigger["name"]
        self._annotation = bindings.annotation(self._parameter)
        self._sdk_type = is_sdk_type(self._annotation)
        self._connection_setting = bindings.trigger.get("connection") or DEFAULT_CONNECTION
        self._clients = clients
        self._invoker = invoker
        self._connection = connection
        self._host_connection = host_connection
        self._concurrency = asyncio.Semaphore(concurrency)
        self._scan_interval = scan_interval
        self._receipt_prefix = f"blobreceipts/devhost/{self.name}/"
        self._fired: dict[str, str] = {}
        self._tries: dict[tuple[str, str], int] = {}
        self._active: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        if str(bindings.trigger.get("source", "")).lower() == "eventgrid":
            log.info("function=%s: Event Grid blob trigger served by a container scan",
                     self.name)

    def start(self) -> None:
        """Start watching (on the running event loop)."""
        self._watcher = asyncio.create_task(self._watch(), name=f"blob:{self.name}")

    async def stop(self, grace: float) -> None:
        """Stop scanning; let running invocations finish for `grace` s, then abandon them
        (they have no receipt, so they fire again on the next start)."""
        self._stopping.set()
        if self._watcher is not None:
            await self._watcher
        tasks = list(self._active.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._load_receipts()
                break
            except AzureError as exc:
                log.warning("function=%s: reading receipts failed: %s", self.name, exc)
                await self._pause(self._scan_interval)
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self._scan()
            except AzureError as exc:
                log.warning("function=%s: scanning %s failed: %s", self.name, self.path, exc)
            # A slow listing (a huge container) must not keep Azurite busy all the time.
            await self._pause(max(self._scan_interval, 2 * (time.monotonic() - started)))

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    def _receipts(self) -> Any:
        return self._clients.container(self._host_connection, RECEIPTS_CONTAINER)

    async def _load_receipts(self) -> None:
        prefix = f"{self._receipt_prefix}{self._blob_path.container}/"
        try:
            async for name in self._receipts().list_blob_names(name_starts_with=prefix):
                etag, _, blob = name[len(prefix):].partition("/")
                if blob:
                    self._fired[blob] = etag
        except ResourceNotFoundError:
            return

    def _receipt_name(self, blob: str, etag: str) -> str:
        return f"{self._receipt_prefix}{self._blob_path.container}/{etag}/{blob}"

    async def _scan(self) -> None:
        container = self._clients.container(self._connection, self._blob_path.container)
        try:
            async for blob in container.list_blobs(name_starts_with=self._blob_path.prefix):
                if self._stopping.is_set():
                    return
                etag = blob.etag.strip('"')
                if blob.name in self._active or self._fired.get(blob.name) == etag:
                    continue
                data = self._blob_path.match(blob.name)
                if data is None:
                    continue
                task = asyncio.create_task(self._process(blob.name, data))
                self._active[blob.name] = task
                task.add_done_callback(lambda _, name=blob.name: self._active.pop(name, None))
        except ResourceNotFoundError:
            return

    async def _process(self, blob: str, data: dict[str, str]) -> None:
        async with self._concurrency:
            if self._stopping.is_set():
                return
            try:
                await self._try(blob, data)
            except AzureError as exc:
                log.warning("function=%s blob=%s: storage failed (%s); it fires again on "
                            "a later scan", self.name, blob, exc)

    async def _try(self, blob: str, data: dict[str, str]) -> None:
        container = self._blob_path.container
        client = self._clients.container(self._connection, container).get_blob_client(blob)
        try:
            if self._sdk_type:  # the function reads what it needs through its client
                properties, content = await client.get_blob_properties(), b""
            else:
                downloader = await client.download_blob()
                properties, content = downloader.properties, await downloader.readall()
        except ResourceNotFoundError:
            return
        etag = properties.etag.strip('"')
        if self._fired.get(blob) == etag:
            return
        path = f"{container}/{blob}"
        binding_data: dict[str, Any] = {**data, "BlobTrigger": path, "Uri": client.url}
        if self._sdk_type:
            argument = sdk_blob_argument(self._annotation, "blobTrigger",
                                         connection=self._connection_setting,
                                         container=container, blob=blob)
        else:
            argument = as_blob_argument(
                self._annotation, content, name=path, uri=client.url,
                properties={"etag": etag, "length": properties.size,
                            "content_type": properties.content_settings.content_type,
                            "last_modified": properties.last_modified},
                metadata=dict(properties.metadata or {}),
            )
        if await self._run(binding_data, argument, blob, etag):
            await self._receipt(blob, etag)
            return
        tries = self._tries.get((blob, etag), 0) + 1
        self._tries[(blob, etag)] = tries
        if tries >= MAX_TRIES:
            await self._poison(blob, etag)
            await self._receipt(blob, etag)

    async def _run(self, data: dict[str, Any], argument: Any, blob: str, etag: str) -> bool:
        return await self.bindings.run_trigger(
            self._invoker, data, self._parameter, argument,
            detail=f"blob={self._blob_path.container}/{blob} etag={etag}")

    async def _receipt(self, blob: str, etag: str) -> None:
        receipts = await self._clients.ensure_container(self._host_connection,
                                                        RECEIPTS_CONTAINER)
        await receipts.upload_blob(self._receipt_name(blob, etag), b"", overwrite=True)
        previous = self._fired.get(blob)
        self._fired[blob] = etag
        self._tries.pop((blob, etag), None)
        if previous and previous != etag:
            try:
                await receipts.delete_blob(self._receipt_name(blob, previous))
            except ResourceNotFoundError:
                pass

    async def _poison(self, blob: str, etag: str) -> None:
        queue = await self._clients.ensure_queue(self._host_connection, POISON_QUEUE)
        message = {"Type": "BlobTrigger", "FunctionId": f"Host.Functions.{self.name}",
                   "BlobType": "BlockBlob", "ContainerName": self._blob_path.container,
                   "BlobName": blob, "ETag": etag}
        await queue.send_message(base64.b64encode(json.dumps(message).encode()).decode())
        log.warning("function=%s blob=%s failed %d tries; sent to %s",
                    self.name, blob, MAX_TRIES, POISON_QUEUE)
