"""Where CSV and JSONL records end, found with numpy rather than a loop over bytes.

A record ends at a line feed. In CSV a line feed inside a quoted field does not end the
record, and whether a byte is inside quotes is the parity of the quote characters before
it: RFC 4180 only lets quotes open or close a field and escapes a quote as "" (two quotes,
parity unchanged). So the state at any byte is known from the parity at the start of the
buffer, which makes buffers independent: a scan carries one bit from one to the next.
JSON strings cannot hold a raw line feed, so every line feed ends a JSONL record.

A record whose bytes are all blank (space, tab, CR, LF) is an empty line: pandas skips it
and so does batchfn (it is no row). CRLF line ends work as they are: the CR is blank.

Only the positions of line feeds, quotes (and, when fields are counted, commas) are
looked at, a few passes over the bytes in C, so a scan runs at several hundred MB/s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LINE_FEED = 0x0A
QUOTE = 0x22
COMMA = 0x2C
_IS_TEXT = np.ones(256, dtype=bool)
_IS_TEXT[[0x20, 0x09, 0x0D, 0x0A]] = False  # space, tab, CR, LF
UTF8_BOM = b"\xef\xbb\xbf"
# Above this many segments that begin with a blank byte, one pass over all bytes finds
# their text faster than a look at each of them.
_BLANK_START_LOOKS = 256


@dataclass(frozen=True, eq=False)
class ByteScan:
    """The records of one buffer.

    The buffer holds segments: segment i < len(ends) is the bytes up to and including the
    record-ending line feed at `ends[i]`; the last segment (the tail) is what follows the
    last of them, a record that goes on past the buffer (or ends the file without a line
    feed). `starts[i]` is where segment i begins, so `starts[0]` is 0.
    """

    ends: np.ndarray  # int64: offsets of the record-ending line feeds
    starts: np.ndarray  # int64: len(ends) + 1 segment starts
    has_text: np.ndarray  # bool: per segment, whether any of its bytes is not blank
    in_quotes_after: bool  # the buffer ends inside a quoted field
    delimiters: np.ndarray | None  # int64: per segment, commas outside quotes (when counted)

    @property
    def records(self) -> int:
        """How many records end in the buffer (the tail not counted)."""
        return int(self.ends.size)


def scan_bytes(data: bytes | bytearray | memoryview, *, quoted: bool, in_quotes: bool = False,
               count_delimiters: bool = False) -> ByteScan:
    """Find the record ends of `data`.

    `quoted` applies CSV's quote rule; `in_quotes` says the buffer begins inside a quoted
    field (the previous buffer's `in_quotes_after`). With `count_delimiters` (CSV) the
    commas outside quotes are counted per segment: a record has that many plus one fields.
    """
    a = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(a == LINE_FEED)
    quotes = np.flatnonzero(a == QUOTE) if quoted else None
    in_quotes = bool(in_quotes and quoted)
    if quotes is not None and (quotes.size or in_quotes):
        ends = ends[_outside_quotes(ends, quotes, in_quotes)]
    starts = np.empty(ends.size + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends + 1
    bounds = np.append(starts, a.size)
    delimiters = None
    if count_delimiters:
        commas = np.flatnonzero(a == COMMA)
        if quotes is not None and (quotes.size or in_quotes):
            commas = commas[_outside_quotes(commas, quotes, in_quotes)]
        delimiters = np.diff(np.searchsorted(commas, bounds))
    in_quotes_after = bool((in_quotes + (quotes.size if quotes is not None else 0)) & 1)
    return ByteScan(ends=ends, starts=starts, has_text=_has_text(a, bounds),
                    in_quotes_after=in_quotes_after, delimiters=delimiters)


def _outside_quotes(positions: np.ndarray, quotes: np.ndarray, in_quotes: bool) -> np.ndarray:
    """Which of `positions` (not themselves quotes) lie outside quoted fields."""
    before = np.searchsorted(quotes, positions)
    return ((before + in_quotes) & 1) == 0


def _has_text(a: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per segment [bounds[i], bounds[i+1]): whether it holds a byte that is not blank.

    Nearly every record begins with text; only those that begin with a blank byte (empty
    lines, leading spaces) need a closer look.
    """
    starts, stops = bounds[:-1], bounds[1:]
    nonempty = stops > starts
    has_text = np.zeros(starts.size, dtype=bool)
    has_text[nonempty] = _IS_TEXT[a[starts[nonempty]]]
    doubtful = np.flatnonzero(nonempty & ~has_text)
    if doubtful.size > _BLANK_START_LOOKS:
        has_text[doubtful] = _segment_any(_IS_TEXT[a], starts, stops, doubtful)
    else:
        for i in doubtful.tolist():
            has_text[i] = bool(_IS_TEXT[a[starts[i]:stops[i]]].any())
    return has_text


def _segment_any(mask: np.ndarray, starts: np.ndarray, stops: np.ndarray,
                 which: np.ndarray) -> np.ndarray:
    """For the segments `which`: whether `mask` is set anywhere in them."""
    counts = np.cumsum(mask, dtype=np.int64)
    before = np.where(starts[which] > 0, counts[np.maximum(starts[which] - 1, 0)], 0)
    return counts[stops[which] - 1] - before > 0
