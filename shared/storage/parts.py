"""Where a mini-batch's part (its rows, encoded for the output format) is kept, and reading
the parts back in mini-batch order for finalize.

A part of up to `INLINE_PART_BYTES` travels inside the mini-batch's ledger line, so
recording a succeeded mini-batch is one append; the first line per index counts, so a
duplicate delivery's part is never merged. A larger part is written create-only to
`parts/<index>` first (its metadata carries the counts, to restore a lost ledger line, and
the csv header), and the ledger line then carries no part.

Finalize reads one ledger shard at a time into a temporary file while noting where each
index's first line is, then reads the succeeded indices' lines back in index order: memory
stays bounded whatever the number or size of parts, and a shard costs one streamed read
instead of one read per part.
"""

from __future__ import annotations

import base64
import io
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.contract import layout
from shared.contract.ledger import SHARD_BATCHES, Completion, Part, shard_count
from shared.storage.ledger_blobs import ledger_lines

# Parts up to this size ride in their ledger line. The ledger's append block takes 4 MiB,
# but the orchestrator's progress check reads every line, so large parts go to blobs: at
# that size one more write per mini-batch is noise.
INLINE_PART_BYTES = 256 * 1024
PREFETCH_PARTS = 16  # part blobs fetched ahead of the merge


def with_part(state: ContainerClient, job_id: str, completion: Completion,
              part: Part) -> Completion:
    """`completion` carrying `part`, or — for a large part — after writing its blob."""
    if len(part.data) + len(part.header) <= INLINE_PART_BYTES:
        return replace(completion, part=part.data, header=part.header)
    metadata = {"succeeded": str(completion.files_succeeded),
                "failed": str(completion.files_failed), "rows": str(completion.rows)}
    if part.header:
        metadata["header"] = base64.b64encode(part.header).decode()
    try:
        state.upload_blob(layout.part(job_id, completion.index), part.data, overwrite=False,
                          metadata=metadata)
    except ResourceExistsError:
        pass  # a duplicate delivery: the first part stands
    return completion


def restored_completion(state: ContainerClient, job_id: str, index: int,
                        at: str) -> Completion | None:
    """The success a part blob records, for a mini-batch whose ledger line was lost."""
    try:
        props = state.get_blob_client(layout.part(job_id, index)).get_blob_properties()
    except ResourceNotFoundError:
        return None
    meta = props.metadata or {}
    return Completion(index, True, int(meta.get("succeeded", 0)), int(meta.get("failed", 0)),
                      int(meta.get("rows", 0)), at=at)


def parts_in_order(state: ContainerClient, job_id: str, batches: int,
                   succeeded: Callable[[int], bool]) -> Iterator[Part]:
    """The part of each of the job's `batches` mini-batches that `succeeded`, in index
    order (see the module docstring)."""
    with ThreadPoolExecutor(8) as pool:
        for shard in range(shard_count(batches)):
            first = shard * SHARD_BATCHES
            wanted = [i for i in range(first, min(first + SHARD_BATCHES, batches))
                      if succeeded(i)]
            if wanted:
                yield from _shard_parts(state, job_id, shard, wanted, pool)


def _shard_parts(state: ContainerClient, job_id: str, shard: int, wanted: list[int],
                 pool: ThreadPoolExecutor) -> Iterator[Part]:
    with tempfile.TemporaryFile() as spool:
        where: dict[int, tuple[int, int]] = {}  # index -> (offset, length) of its first line
        written = 0
        for _, line in ledger_lines(state, job_id, shard):
            index = _line_index(line)
            if index not in where:
                where[index] = (written, len(line))
            spool.write(line)
            written += len(line)
        window: deque[Future[Part] | Part] = deque()
        for index in wanted:
            if index not in where:
                raise LookupError(f"job {job_id}: mini-batch {index} is counted as succeeded "
                                  f"but its ledger line is missing")
            offset, length = where[index]
            spool.seek(offset)
            line = Completion.from_line(spool.read(length))
            if line.part is not None:
                window.append(Part(line.part, line.header))
            else:
                window.append(pool.submit(_part_blob, state, job_id, index))
            if len(window) >= PREFETCH_PARTS:
                yield _value(window.popleft())
        while window:
            yield _value(window.popleft())


def _line_index(line: bytes) -> int:
    """The mini-batch index of a ledger line, read from its start ({"i":<index>,...})."""
    if line.startswith(b'{"i":'):
        return int(line[5:line.index(b",", 5)])
    return Completion.from_line(line).index


def _value(item: Future[Part] | Part) -> Part:
    return item.result() if isinstance(item, Future) else item


def _part_blob(state: ContainerClient, job_id: str, index: int) -> Part:
    download = state.download_blob(layout.part(job_id, index))
    data = download.readall()
    header = (download.properties.metadata or {}).get("header")
    return Part(data, base64.b64decode(header) if header else b"")


def read_parquet_part(data: bytes):  # noqa: ANN201 - a pyarrow Table
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))
