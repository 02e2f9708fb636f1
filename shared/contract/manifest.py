"""Manifest chunks: the files (or row ranges) of a job's mini-batches, as the planner
writes them and a scoring host reads them (`layout.manifest`). A queue message names a
mini-batch by index and chunk; the chunk holds its inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InputUnreadable

MANIFEST_ITEMS = 5000  # files (or row pieces) per manifest chunk: one read serves many batches


@dataclass(frozen=True)
class InputFile:
    """One input file of a mini-batch, stored in the app's storage account."""

    container: str
    blob_name: str
    display_name: str  # what appears in outputs/errors (path relative to the input folder)


@dataclass(frozen=True)
class RowPiece:
    """Rows of one input file in a tabular mini-batch, as planned.

    `size` and `etag` are the file's when it was planned: a file changed since is never
    read at the planned offsets. `row_range` is the worker's `RowRange.to_list()`:
    [first row, rows, start byte, end byte, header end].
    """

    file: InputFile
    size: int
    etag: str | None
    row_range: tuple[int, int, int, int, int]

    @property
    def first_row(self) -> int:
        return self.row_range[0]

    @property
    def rows(self) -> int:
        return self.row_range[1]


@dataclass(frozen=True)
class PlannedBatch:
    """One mini-batch of a manifest: its files, and for a tabular job their row ranges.

    A mini-batch without files stands for a file that failed at planning (its failure is
    recorded by the planner; no message is sent for it).
    """

    files: tuple[InputFile, ...]
    pieces: tuple[RowPiece, ...] = ()

    def entries(self) -> list[list[Any]]:
        """The manifest's JSON form: [container, blob, display] per file, or per piece
        [container, blob, display, size, etag, first row, rows, start, end, header end]."""
        if self.pieces:
            return [[p.file.container, p.file.blob_name, p.file.display_name, p.size, p.etag,
                     *p.row_range] for p in self.pieces]
        return [[f.container, f.blob_name, f.display_name] for f in self.files]

    @classmethod
    def from_entries(cls, entries: list[list[Any]]) -> PlannedBatch:
        if entries and len(entries[0]) > 3:
            pieces = tuple(RowPiece(InputFile(*e[:3]), e[3], e[4], tuple(e[5:10]))
                           for e in entries)
            return cls(tuple(dict.fromkeys(p.file for p in pieces)), pieces)
        return cls(tuple(InputFile(*entry) for entry in entries))


@dataclass(frozen=True)
class ManifestChunk:
    """Consecutive mini-batches starting at `first_index`."""

    first_index: int
    batches: tuple[PlannedBatch, ...] = field(default_factory=tuple)

    def batch(self, index: int) -> PlannedBatch:
        """Mini-batch `index`; InputUnreadable if this chunk does not hold it."""
        offset = index - self.first_index
        if not 0 <= offset < len(self.batches) or not self.batches[offset].files:
            raise InputUnreadable(f"mini-batch {index} is not in this manifest chunk")
        return self.batches[offset]

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first_index, "batches": [b.entries() for b in self.batches]}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ManifestChunk:
        return cls(body["first"], tuple(PlannedBatch.from_entries(entries)
                                        for entries in body["batches"]))
