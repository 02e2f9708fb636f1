"""Tabular mini-batches in the worker process: their planned row ranges, read from the
signed URLs the host hands over, into the DataFrame that run() gets.

A tabular mini-batch arrives as `TablePiece`s (a range of one file each) instead of files
to download: the worker reads each range with ranged GETs of its read URL (it holds no
storage credential) through one `TableReader` per process, which keeps CSV headers and
parquet footers of recent files, on a thread of its own so that a slot's next mini-batch
is read while run() works on this one. Rows that cannot be parsed come back as failures
with their file and row number; storage errors raise, for the mini-batch to be retried.

pandas, numpy and the storage SDK are imported by `TableLoader`, so a worker that never
scores rows never loads them for this module.
"""

from __future__ import annotations

import concurrent.futures
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shared.worker.input_errors import StorageFailing
from shared.worker.protocol import TablePiece

if TYPE_CHECKING:
    from shared.worker.tabular.read import TabularBatch


class TableLoader:
    """Reads tabular mini-batches on one thread of its own (one loader per worker process)."""

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="batchfn-tables")
        self._reader: Any = None
        self._session: Any = None  # a requests.Session: one connection pool for every read

    def start(self, input_format: str,
              pieces: Sequence[TablePiece]) -> concurrent.futures.Future[TabularBatch]:
        """Start reading `pieces` of `input_format` files; the future holds the batch."""
        return self._executor.submit(self._read, input_format, tuple(pieces))

    def close(self) -> None:
        """Stop the reading thread (a read in progress ends first)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._session is not None:
            self._session.close()

    def _read(self, input_format: str, pieces: tuple[TablePiece, ...]) -> TabularBatch:
        from azure.core.exceptions import AzureError, HttpResponseError

        from shared.worker.tabular.read import BatchPiece, TableReader
        from shared.worker.tabular.sources import BlobSource
        from shared.worker.tabular.split import RowRange

        if self._reader is None:
            import requests

            self._reader = TableReader()
            self._session = requests.Session()
        try:
            return self._reader.read_batch([
                BatchPiece(piece.file, BlobSource.from_url(piece.url, size=piece.size,
                                                           etag=piece.etag,
                                                           transport=self._transport()),
                           input_format, RowRange.from_list(list(piece.row_range)))
                for piece in pieces])
        except HttpResponseError as exc:
            # Storage refused or failed (after the SDK's retries): the mini-batch is retried.
            # The message names the status, never the URL (its query is a signature).
            raise StorageFailing(f"storage answered HTTP {exc.status_code} "
                                   f"{exc.error_code or exc.reason or ''}".strip()) from None
        except AzureError as exc:
            raise StorageFailing(f"storage could not be reached: {type(exc).__name__}") \
                from None

    def _transport(self) -> Any:
        """A transport over the loader's session, which the client it serves leaves open."""
        from azure.core.pipeline.transport import RequestsTransport

        # No proxy variables or .netrc read per request unless a proxy is configured.
        return RequestsTransport(session=self._session, session_owner=False,
                                 use_env_settings=bool(urllib.request.getproxies()))
