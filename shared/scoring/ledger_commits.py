"""Group commit of ledger lines: the completions of mini-batches that finish close together
on one host go to their ledger shard in one append.

A mini-batch's message may be completed (deleted) only once its line is in storage, so
`record` blocks until the append that carries the line has returned, and raises what that
append raised. Appends to one shard blob are made one at a time: the thread whose line
finds no append in flight makes it (the leader), the lines that arrive meanwhile wait and
go together in the next one. Before it appends, a leader waits up to `max_wait` for lines
that other threads announced (`recording`: their mini-batch has its outcome and is on its
way to the ledger), so two slots finishing a few milliseconds apart share a write; a line
nobody else is about to join is appended at once. A group holds at most `max_lines`
lines and `max_bytes` bytes (one append block).

Exactly-once is the reader's: it counts the first line per index, wherever it stands in a
block, and a group's lines land together or not at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from shared.contract.ledger import Completion, shard_of
from shared.storage.ledger_blobs import APPEND_BLOCK_BYTES

MAX_WAIT_SECONDS = 0.02  # the longest a line waits for announced lines to join it
MAX_LINES = 64

Append = Callable[[str, int, Sequence[bytes]], object]  # (job id, shard, lines) → anything


@dataclass
class _Line:
    data: bytes
    done: bool = False
    error: BaseException | None = None


@dataclass
class _Shard:
    waiting: list[_Line] = field(default_factory=list)
    announced: int = 0  # mini-batches of this shard on their way to `record`
    appending: bool = False


@dataclass
class CommitStats:
    """What group commit saved: `lines` recorded in `appends` writes."""

    appends: int = 0
    lines: int = 0


class LedgerCommits:
    """Records completions with group commit (see the module docstring); thread-safe."""

    def __init__(self, append: Append, *, max_wait: float = MAX_WAIT_SECONDS,
                 max_lines: int = MAX_LINES, max_bytes: int = APPEND_BLOCK_BYTES) -> None:
        self._append = append
        self._max_wait = max_wait
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._shards: dict[tuple[str, int], _Shard] = {}
        self._changed = threading.Condition()
        self.stats = CommitStats()

    @contextmanager
    def recording(self, job_id: str, index: int) -> Iterator[None]:
        """Announce that mini-batch `index` will call `record` within this block, so that
        a line being appended to its shard meanwhile may wait for it (up to max_wait)."""
        key = (job_id, shard_of(index))
        with self._changed:
            self._shards.setdefault(key, _Shard()).announced += 1
        try:
            yield
        finally:
            with self._changed:
                shard = self._shards[key]
                shard.announced -= 1
                self._forget_idle(key, shard)
                self._changed.notify_all()

    def record(self, job_id: str, completion: Completion) -> None:
        """Append `completion`'s line to its shard's ledger, possibly with others' lines;
        returns once it is in storage, raises the append's error otherwise."""
        key = (job_id, shard_of(completion.index))
        line = _Line(completion.to_line())
        with self._changed:
            shard = self._shards.setdefault(key, _Shard())
            shard.waiting.append(line)
            self._changed.notify_all()  # a leader waiting for announced lines
            while not line.done:
                if shard.appending:
                    self._changed.wait()
                    continue
                shard.appending = True
                try:
                    group = self._gather(shard)
                    self._changed.release()
                    try:
                        self._append(key[0], key[1], [item.data for item in group])
                    except BaseException as exc:  # noqa: BLE001 - each waiter re-raises it
                        error: BaseException | None = exc
                    else:
                        error = None
                    finally:
                        self._changed.acquire()
                    for item in group:
                        item.done, item.error = True, error
                    if error is None:
                        self.stats.appends += 1
                        self.stats.lines += len(group)
                finally:
                    shard.appending = False
                    self._changed.notify_all()
            self._forget_idle(key, shard)
        if line.error is not None:
            raise line.error

    def _gather(self, shard: _Shard) -> list[_Line]:
        """The leader's group: waiting lines, after up to max_wait for announced ones."""
        deadline = time.monotonic() + self._max_wait
        while (shard.announced > len(shard.waiting) and len(shard.waiting) < self._max_lines
               and (left := deadline - time.monotonic()) > 0):
            self._changed.wait(left)
        group, size = [], 0
        for line in shard.waiting:
            if group and (len(group) >= self._max_lines
                          or size + len(line.data) > self._max_bytes):
                break
            group.append(line)
            size += len(line.data)
        del shard.waiting[:len(group)]
        return group

    def _forget_idle(self, key: tuple[str, int], shard: _Shard) -> None:
        if not (shard.waiting or shard.announced or shard.appending):
            self._shards.pop(key, None)
