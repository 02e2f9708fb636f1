"""The ledger shards in storage: created by the planner, appended to by the scoring hosts,
read from an offset by the control app (the line format is contract.ledger)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError
from azure.storage.blob import ContainerClient

from shared.contract import layout
from shared.contract.ledger import Completion, shard_of

LEDGER_READ_BYTES = 8 * 1024 * 1024  # one ranged read of a ledger: memory stays bounded
APPEND_BLOCK_BYTES = 4 * 1024 * 1024  # the most one append_block call takes (the service's)


def ledger_lines(state: ContainerClient, job_id: str, shard: int, offset: int = 0,
                 chunk_bytes: int = LEDGER_READ_BYTES) -> Iterator[tuple[int, bytes]]:
    """Each whole line of a ledger shard from `offset` on, with the offset just past it.

    Reads `chunk_bytes` at a time, so memory stays bounded by that and one line (at most
    an append block) whatever the shard's size. Yields nothing for a shard that does not
    exist yet.
    """
    carry = b""
    position = offset
    while True:
        try:
            chunk = state.download_blob(layout.ledger(job_id, shard), offset=position,
                                        length=chunk_bytes).readall()
        except HttpResponseError as exc:
            if exc.status_code in (404, 416):  # not planned yet (404), nothing new (416)
                return
            raise
        start = position - len(carry)
        data = carry + chunk
        position += len(chunk)
        end = data.rfind(b"\n") + 1  # blocks end with a newline; keep whole lines only
        cursor = 0
        while cursor < end:
            stop = data.index(b"\n", cursor) + 1
            if data[cursor:stop].strip():
                yield start + stop, data[cursor:stop]
            cursor = stop
        carry = data[end:]
        if len(chunk) < chunk_bytes:
            return


def first_completion(state: ContainerClient, job_id: str, index: int) -> Completion | None:
    """The first ledger line recorded for mini-batch `index` (the one that counts), if any."""
    needle = f'{{"i":{index},'.encode()
    for _, line in ledger_lines(state, job_id, shard_of(index)):
        if line.startswith(needle):
            return Completion.from_line(line)
    return None


def create_ledger(state: ContainerClient, job_id: str, shard: int) -> None:
    """Create one ledger shard of the job; never truncates one that exists (replanning)."""
    try:
        state.get_blob_client(layout.ledger(job_id, shard)).create_append_blob(if_none_match="*")
    except (ResourceExistsError, ResourceModifiedError):
        pass


def record_completion(state: ContainerClient, job_id: str, completion: Completion) -> None:
    """Append `completion` to its shard's ledger (at-least-once; the reader deduplicates)."""
    append_lines(state, job_id, shard_of(completion.index), [completion.to_line()])


def append_lines(state: ContainerClient, job_id: str, shard: int,
                 lines: Sequence[bytes]) -> int:
    """Append whole ledger `lines` to one shard in one block (a group commit); returns the
    shard's committed block count after it.

    The lines land together or not at all, in the order given; a reader counts the first
    line per index wherever it stands, so a block may carry lines of many mini-batches.
    Their total must fit one append block (APPEND_BLOCK_BYTES).
    """
    block = b"".join(lines)
    if len(block) > APPEND_BLOCK_BYTES:
        raise ValueError(f"{len(block)} bytes of ledger lines exceed one append block")
    response = state.get_blob_client(layout.ledger(job_id, shard)).append_block(block)
    return int(response.get("blob_committed_block_count") or 0)
