"""Byte sources: read any byte range of one file, wherever it lies.

Planning and reading of row ranges only ever ask a source for byte ranges, so the same
code runs over a blob (through the account's client, or a read-only SAS URL that a worker
was handed) and over a local file (tests, files already downloaded).
"""

from __future__ import annotations

import io
import itertools
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shared.worker.input_errors import InputChanged

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

SCAN_CHUNK_BYTES = 4 * 1024 * 1024
SCAN_PREFETCH = 4  # chunks fetched ahead of the scan: bounds a scan's memory
READ_AHEAD_BYTES = 64 * 1024  # the smallest read a parquet reader's small reads are merged to


class ByteSource(Protocol):
    """One file, read by byte range."""

    @property
    def name(self) -> str:
        """What the file is called in messages (a blob or file path)."""
        ...

    @property
    def size(self) -> int:
        """The file's length in bytes."""
        ...

    @property
    def identity(self) -> str:
        """A key that changes when the content changes (for caches of headers, footers)."""
        ...

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (fewer only at the end of the file)."""
        ...


class LocalFileSource:
    """A file on local disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        stat = self._path.stat()
        self._size = stat.st_size
        self._identity = f"file:{self._path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"

    @property
    def name(self) -> str:
        return str(self._path)

    @property
    def size(self) -> int:
        return self._size

    @property
    def identity(self) -> str:
        return self._identity

    def read(self, offset: int, length: int) -> bytes:
        with self._path.open("rb") as file:
            return os.pread(file.fileno(), max(0, length), offset)


class BlobSource:
    """A blob, read with ranged GETs that must match the ETag it had when opened.

    A blob replaced after planning fails its reads with InputChanged instead of yielding
    rows from the new content at the old offsets.
    """

    def __init__(self, blob: BlobClient, *, size: int, etag: str | None) -> None:
        self._blob = blob
        self._size = size
        self._etag = etag

    @classmethod
    def open(cls, blob: BlobClient) -> BlobSource:
        """Open `blob`: one request for its size and ETag. Raises InputChanged if missing."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            raise InputChanged(f"{blob.container_name}/{blob.blob_name} does not exist") \
                from None
        return cls(blob, size=props.size, etag=props.etag)

    @classmethod
    def from_url(cls, url: str, *, size: int, etag: str | None,
                 **client_options: Any) -> BlobSource:
        """A blob given by URL (a worker's read-only SAS URL): no account credential needed.

        `size` and `etag` come from the plan, so no request is made here;
        `client_options` go to the SDK client (e.g. a shared transport).
        """
        from azure.storage.blob import BlobClient

        return cls(BlobClient.from_blob_url(url, **client_options), size=size, etag=etag)

    @property
    def name(self) -> str:
        return f"{self._blob.container_name}/{self._blob.blob_name}"

    @property
    def size(self) -> int:
        return self._size

    @property
    def etag(self) -> str | None:
        return self._etag

    @property
    def identity(self) -> str:
        return f"blob:{self.name}:{self._etag}"

    def read(self, offset: int, length: int) -> bytes:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        length = min(length, self._size - offset)
        if length <= 0:
            return b""
        conditions: dict[str, Any] = {}
        if self._etag:
            conditions = {"etag": self._etag, "match_condition": MatchConditions.IfNotModified}
        try:
            return self._blob.download_blob(offset=offset, length=length, max_concurrency=1,
                                            **conditions).readall()
        except ResourceModifiedError:
            raise InputChanged(f"{self.name} changed after its rows were planned; "
                                "invoke the job again to plan the new content") from None
        except ResourceNotFoundError:
            raise InputChanged(f"{self.name} was deleted after its rows were planned") \
                from None


def read_chunks(source: ByteSource, start: int = 0, chunk_bytes: int = SCAN_CHUNK_BYTES,
                prefetch: int = SCAN_PREFETCH) -> Iterator[bytes]:
    """The bytes of `source` from `start` to its end, in order, `chunk_bytes` at a time.

    Up to `prefetch` chunks are read ahead on threads, so a scan over a blob overlaps
    network and CPU while holding at most (`prefetch` + 1) chunks in memory.
    """
    offsets = range(start, source.size, chunk_bytes)
    if prefetch <= 1 or len(offsets) <= 1:
        for offset in offsets:
            yield source.read(offset, chunk_bytes)
        return
    with ThreadPoolExecutor(prefetch, thread_name_prefix="batchfn-scan") as pool:
        pending = iter(offsets)
        window: deque[Future[bytes]] = deque(
            pool.submit(source.read, offset, chunk_bytes)
            for offset in itertools.islice(pending, prefetch))
        try:
            while window:
                chunk = window.popleft().result()
                following = next(pending, None)
                if following is not None:
                    window.append(pool.submit(source.read, following, chunk_bytes))
                yield chunk
        finally:
            for future in window:
                future.cancel()


class SourceFile(io.RawIOBase):
    """A read-only, seekable file object over a ByteSource (what pyarrow's readers take).

    Reads smaller than READ_AHEAD_BYTES are served from one buffered read, so a reader's
    many small reads (a parquet footer, page headers) cost few requests.
    """

    def __init__(self, source: ByteSource) -> None:
        super().__init__()
        self._source = source
        self._position = 0
        self._buffer = b""
        self._buffer_start = 0
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._source.size}
        if whence not in base:
            raise ValueError(f"invalid whence {whence}")
        position = base[whence] + offset
        if position < 0:
            raise ValueError("negative seek position")
        self._position = position
        return position

    def size(self) -> int:
        return self._source.size

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        with self._lock:
            data = self._read_at(self._position, len(view))
            view[:len(data)] = data
            self._position += len(data)
        return len(data)

    def _read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self._source.size)
        if offset >= end:
            return b""
        buffer_end = self._buffer_start + len(self._buffer)
        if self._buffer_start <= offset and end <= buffer_end:
            return self._buffer[offset - self._buffer_start:end - self._buffer_start]
        if length >= READ_AHEAD_BYTES:
            return self._source.read(offset, end - offset)
        self._buffer = self._source.read(offset, READ_AHEAD_BYTES)
        self._buffer_start = offset
        return self._buffer[:end - offset]
