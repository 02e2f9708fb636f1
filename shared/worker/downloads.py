"""A mini-batch's input files, downloaded concurrently from the read URLs the host signed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from shared.worker.input_errors import InputMissing, StorageFailing
from shared.worker.portable import zip_equal
from shared.worker.protocol import InputDownload

DOWNLOAD_CONCURRENCY = 32
# A download that fails this way is tried again after each delay (as the storage SDK's own
# retry policy would), before the mini-batch's message is left to the queue's retries.
RETRY_DELAYS = (0.2, 1.0, 4.0)
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
WHOLE_READ_BYTES = 4 * 1024 * 1024  # smaller bodies are read at once, larger ones streamed
STREAM_CHUNK_BYTES = 1024 * 1024


def make_folders(paths: Sequence[Path]) -> None:
    """Create the folders that `paths` land in (raises OSError where the folder cannot be)."""
    for parent in dict.fromkeys(path.parent for path in paths):
        parent.mkdir(parents=True, exist_ok=True)


class InputDownloader:
    """Downloads mini-batch inputs on one asyncio loop of its own (a worker process's).

    Each scoring worker process has one, so downloads spread over the workers' interpreter
    locks instead of all sharing the host's. Inputs come as signed read URLs
    (shared/scoring/grants.py), so the worker needs no storage credential, and a plain
    HTTP GET per blob costs less of the worker's interpreter than the storage SDK's
    request pipeline (bench/pipeline.py measures both). `start` returns at once: a
    mini-batch's inputs download while the previous mini-batch runs. At most
    `concurrency` requests are in flight.
    """

    def __init__(self, concurrency: int = DOWNLOAD_CONCURRENCY) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="batchfn-downloads", daemon=True)
        self._thread.start()
        self._session = asyncio.run_coroutine_threadsafe(
            self._open(concurrency), self._loop).result()

    @staticmethod
    async def _open(concurrency: int) -> aiohttp.ClientSession:
        # The session belongs to the loop it is created on. No environment lookups (proxy
        # variables, .netrc) per request unless a proxy is configured.
        connector = aiohttp.TCPConnector(limit=concurrency, ttl_dns_cache=300)
        return aiohttp.ClientSession(connector=connector, timeout=HTTP_TIMEOUT,
                                     trust_env=bool(urllib.request.getproxies()),
                                     auto_decompress=False)

    def start(self, downloads: Sequence[InputDownload],
              paths: Sequence[Path]) -> concurrent.futures.Future[None]:
        """Start downloading each of `downloads` to the path at the same place of `paths`.

        The future raises InputMissing for a blob that does not exist, StorageFailing when
        storage refuses or keeps failing, OSError when the local folder cannot take a file.
        """
        return asyncio.run_coroutine_threadsafe(self._download_all(downloads, paths),
                                                self._loop)

    def close(self) -> None:
        """Close the session and stop the loop (idempotent)."""
        if not self._loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _download_all(self, downloads: Sequence[InputDownload],
                            paths: Sequence[Path]) -> None:
        make_folders(paths)
        tasks = [asyncio.ensure_future(self._download(download, path))
                 for download, path in zip_equal(downloads, paths)]
        try:
            await asyncio.gather(*tasks)
        finally:
            # One failure ends the batch: don't leave its other downloads running.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _download(self, download: InputDownload, path: Path) -> None:
        for attempt in range(len(RETRY_DELAYS) + 1):
            try:
                await self._get(download, path)
                return
            except _Transient as exc:
                if attempt == len(RETRY_DELAYS):
                    raise StorageFailing(f"cannot read {download.display_name}: {exc}") from None
                await asyncio.sleep(RETRY_DELAYS[attempt])

    async def _get(self, download: InputDownload, path: Path) -> None:
        try:
            async with self._session.get(download.url) as response:
                if response.status == 200:
                    await _save(response, path)
                    return
                code = response.headers.get("x-ms-error-code", response.reason or "")
                await response.read()  # lets the connection be reused
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The message of some client errors quotes the URL, whose query is a signature.
            raise _Transient(type(exc).__name__) from None
        if response.status == 404:
            raise InputMissing(download.display_name)
        if response.status in RETRIED_STATUSES:
            raise _Transient(f"HTTP {response.status} {code}".strip())
        raise StorageFailing(f"cannot read {download.display_name}: HTTP {response.status} "
                              f"{code}".strip())


class _Transient(Exception):
    """A failure worth another try of the same request."""


async def _save(response: aiohttp.ClientResponse, path: Path) -> None:
    if response.content_length is not None and response.content_length <= WHOLE_READ_BYTES:
        path.write_bytes(await response.read())  # a RAM folder: microseconds, no thread hop
        return
    with path.open("wb") as file:
        async for chunk in response.content.iter_chunked(STREAM_CHUNK_BYTES):
            file.write(chunk)
