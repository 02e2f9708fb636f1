"""Tracebacks worth reading: where the user's code failed, without the host's frames.

A failed attempt's full traceback stays in its attempt log. The per-file errors report keeps
a readable excerpt of it: the frames of the user's scoring script (and of any module of
theirs it calls), the innermost frame wherever it is (that is where the exception was
raised), the exception itself, and nothing of batchfn's own machinery. Runs of library
frames (standard library, site-packages) between them are folded into one line, and the
whole is bounded in size, so one report line stays small whatever the script did.

Both formats a failure arrives in are understood: Python's traceback ("most recent call
last", possibly chained) and faulthandler's stack dump of a timed-out or crashed worker
("most recent call first", one block per thread).
"""

from __future__ import annotations

import re
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_CHARS = 3000  # the excerpt's size limit (the report repeats it for each file of a batch)
MAX_FRAMES = 20  # frames kept per traceback (deep recursion keeps its ends)
MAX_LINE = 300  # characters kept of any one line
MAX_MESSAGE_LINES = 20  # lines kept of an exception's message

_REPO = Path(__file__).resolve().parents[2]
# Where batchfn's own code lives: the worker that calls the script, the host, the CLI.
HOST_ROOTS: tuple[str, ...] = tuple(str(_REPO / name) + "/" for name in
                                    ("shared", "functions", "devhost", "batchfn"))
# Python's import machinery runs the host's import of the script, not the script.
HOST_FILES: tuple[str, ...] = ("<frozen importlib._bootstrap>",
                               "<frozen importlib._bootstrap_external>")
LIBRARY_ROOTS: tuple[str, ...] = tuple(sorted({
    str(Path(path)) + "/" for key, path in sysconfig.get_paths().items()
    if key in ("stdlib", "platstdlib", "purelib", "platlib") and path}))
_LIBRARY_MARKERS = ("/site-packages/", "/dist-packages/")

# `  File "x.py", line 3, in run` (traceback) or `  File "x.py", line 3 in run` (faulthandler)
_FRAME = re.compile(r'^(?P<indent>\s*)File "(?P<file>.*)", line (?P<line>\d+),? in (?P<func>.*)$')
_TRACEBACK_HEADER = "Traceback (most recent call last):"
_REPEATED = re.compile(r"^\s*\[Previous line repeated \d+ more times?\]$")
_THREAD_HEADER = re.compile(r"^(Current thread|Thread) 0x[0-9a-fA-F]+ .*most recent call first")


@dataclass(frozen=True)
class _Frame:
    file: str
    lines: tuple[str, ...]  # the `File ...` line and its source/caret lines

    @property
    def head(self) -> str:
        return self.lines[0]


@dataclass(frozen=True)
class _Block:
    """A header line, its frames, then the lines that follow (the exception, or nothing)."""

    header: str | None
    frames: tuple[_Frame, ...]
    tail: tuple[str, ...]
    innermost_first: bool  # faulthandler lists the innermost frame first


class FrameKinds:
    """Sorts a frame's file into the host's, a library's, or the user's."""

    def __init__(self, host_roots: Sequence[str] = HOST_ROOTS,
                 library_roots: Sequence[str] = LIBRARY_ROOTS) -> None:
        self.host_roots = tuple(host_roots)
        self.library_roots = tuple(library_roots)

    def is_host(self, file: str) -> bool:
        return file in HOST_FILES or file.startswith(self.host_roots)

    def is_library(self, file: str) -> bool:
        return (file.startswith(self.library_roots) or file.startswith("<frozen ")
                or any(marker in file for marker in _LIBRARY_MARKERS))


def readable_traceback(text: str | None, kinds: FrameKinds | None = None,
                       max_chars: int = MAX_CHARS) -> str | None:
    """The excerpt of `text` worth showing a user (see the module docstring); None stays None.

    Text that holds no frames (a one-line error) comes back as it is, bounded.
    """
    if text is None or not text.strip():
        return None
    kinds = kinds or FrameKinds()
    blocks = _parse(text.strip("\n").splitlines())
    if not any(block.frames for block in blocks):
        return _bounded("\n".join(_clip(line) for line in text.strip().splitlines()), max_chars)
    threads = [b for b in blocks if b.innermost_first]
    if threads:
        # A stack dump: the threads that ran the user's code (the current one if none did).
        wanted = [b for b in threads if any(_is_user(f, kinds) for f in b.frames)]
        current = [b for b in threads if (b.header or "").startswith("Current thread")]
        keep = {id(b) for b in (wanted or current or threads[-1:])}
        blocks = [b for b in blocks if not b.innermost_first or id(b) in keep]
    lines: list[str] = []
    for block in blocks:
        if block.header is not None:
            lines.append(_clip(block.header))
        lines.extend(_frame_lines(block, kinds))
        lines.extend(_tail_lines(block.tail))
    return _bounded("\n".join(lines), max_chars)


def _is_user(frame: _Frame, kinds: FrameKinds) -> bool:
    return not kinds.is_host(frame.file) and not kinds.is_library(frame.file)


def _parse(lines: list[str]) -> list[_Block]:
    blocks: list[_Block] = []
    index = 0
    header: str | None = None
    innermost_first = False
    while index < len(lines):
        line = lines[index]
        if line.strip() == _TRACEBACK_HEADER or _THREAD_HEADER.match(line.strip()):
            header, innermost_first = line, not line.strip().startswith("Traceback")
            index += 1
        frames: list[_Frame] = []
        while index < len(lines) and (found := _FRAME.match(lines[index])):
            depth = len(found.group("indent"))
            body = [lines[index]]
            index += 1
            while index < len(lines) and _belongs_to_frame(lines[index], depth):
                body.append(lines[index])
                index += 1
            frames.append(_Frame(found.group("file"), tuple(body)))
        tail: list[str] = []
        while index < len(lines):
            stripped = lines[index].strip()
            if stripped == _TRACEBACK_HEADER or _THREAD_HEADER.match(stripped):
                break
            if not frames and not tail and _FRAME.match(lines[index]):
                break
            tail.append(lines[index])
            index += 1
        blocks.append(_Block(header, tuple(frames), tuple(tail), innermost_first))
        header, innermost_first = None, False
    return blocks


def _belongs_to_frame(line: str, depth: int) -> bool:
    """Source and caret lines are indented deeper than their frame; repeats are noted."""
    if _REPEATED.match(line):
        return True
    return bool(line.strip()) and len(line) - len(line.lstrip()) > depth \
        and not _FRAME.match(line)


def _frame_lines(block: _Block, kinds: FrameKinds) -> list[str]:
    frames = [f for f in block.frames if not kinds.is_host(f.file)]
    if not frames:
        return []
    innermost = frames[0] if block.innermost_first else frames[-1]
    shown = [i for i, f in enumerate(frames) if f is innermost or _is_user(f, kinds)]
    hidden = range(0)
    if len(shown) > MAX_FRAMES:
        # Deep recursion: keep the outermost few and the innermost rest.
        outer = 4 if not block.innermost_first else MAX_FRAMES - 4
        hidden = range(shown[outer], shown[outer + len(shown) - MAX_FRAMES - 1] + 1)
    lines: list[str] = []
    run_kind, run_length = "", 0
    for index, frame in enumerate(frames):
        kind = "omitted" if index in hidden else "frame" if index in shown else "library"
        if kind != run_kind and run_length:
            lines.append(_folded(run_kind, run_length))
            run_length = 0
        run_kind = kind
        if kind == "frame":
            lines.extend(_clip(line) for line in frame.lines)
        else:
            run_length += 1
    if run_length:
        lines.append(_folded(run_kind, run_length))
    return lines


def _folded(kind: str, count: int) -> str:
    plural = "s" if count > 1 else ""
    if kind == "library":
        return f"  ... {count} library frame{plural} ..."
    return f"  ... {count} more frame{plural} (recursion) ..."


def _tail_lines(tail: tuple[str, ...]) -> list[str]:
    lines = [_clip(line) for line in tail]
    # Keep a long message's start and end; chain separators and blank lines stay.
    if len(lines) > MAX_MESSAGE_LINES:
        cut = len(lines) - MAX_MESSAGE_LINES
        lines = lines[:MAX_MESSAGE_LINES // 2] + [f"... {cut} lines ..."] + \
            lines[-(MAX_MESSAGE_LINES // 2):]
    return lines


def _clip(line: str) -> str:
    line = line.rstrip()
    return line if len(line) <= MAX_LINE else line[:MAX_LINE - 3] + "..."


def _bounded(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    # The end (the innermost frames and the exception) matters most.
    marker = f"... ({len(text) - max_chars} characters cut)\n"
    return marker + text[len(text) - max_chars + len(marker):]
