"""The scoring host's check of a mini-batch's part before it is stored.

A part (run()'s rows encoded for the output format) is made in the worker process, which
runs user code, so the host trusts nothing of it: its size is bounded on the pipe and here
(MAX_PART_BYTES, csv header included), and a parquet part is read back here — its footer's
row count must be the rows run() returned, the sizes its footer declares and the table it
decodes to must stay under MAX_PART_DECODED_BYTES. Finalize, on the control app, then
merges only parts that a scoring host has read back, never a worker's bytes unread.
"""

from __future__ import annotations

import io

from shared.worker.encoding import EncodedPart
from shared.worker.protocol import MAX_PART_BYTES

MAX_PART_DECODED_BYTES = 256 * 1024 * 1024  # a parquet part, decoded
PARQUET_CHECK_BATCH_ROWS = 64 * 1024


class InvalidPart(ValueError):
    """A part the host will not store: the attempt fails with this message."""


def check_part(part: EncodedPart | None, output_format: str | None, rows: int) -> None:
    """Raise InvalidPart unless `part` can be stored as the output of a run() that
    returned `rows` rows, for `output_format` (None: no output was asked for)."""
    if output_format is None:
        if part is not None:
            raise InvalidPart("the worker sent output rows where none were asked for")
        return
    if part is None:
        raise InvalidPart("the worker sent no output rows")
    size = len(part.data) + len(part.header)
    if size > MAX_PART_BYTES:
        raise InvalidPart(f"run()'s output for this mini-batch is {size:,} bytes, more than "
                          f"the {MAX_PART_BYTES:,} one mini-batch may produce: use a smaller "
                          "mini_batch_size")
    if output_format == "parquet" and part.data:
        _check_parquet(part.data, rows)


def _check_parquet(data: bytes, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        metadata = parquet.metadata
        if metadata.num_rows != rows:
            raise InvalidPart(f"the parquet output holds {metadata.num_rows} rows where run() "
                              f"returned {rows}")
        declared = sum(metadata.row_group(g).column(c).total_uncompressed_size
                       for g in range(metadata.num_row_groups)
                       for c in range(metadata.num_columns))
        if declared > MAX_PART_DECODED_BYTES:
            raise _too_large(declared)
        decoded = read = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_CHECK_BATCH_ROWS,
                                          use_threads=False):
            decoded += batch.nbytes
            read += batch.num_rows
            if decoded > MAX_PART_DECODED_BYTES:
                raise _too_large(decoded)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidPart(f"the parquet output cannot be read: {exc}") from None
    if read != rows:
        raise InvalidPart(f"the parquet output decodes to {read} rows where run() returned "
                          f"{rows}")


def _too_large(size: int) -> InvalidPart:
    return InvalidPart(f"the parquet output decodes to {size:,} bytes or more, beyond the "
                       f"{MAX_PART_DECODED_BYTES:,} one mini-batch may produce: use a smaller "
                       "mini_batch_size")
