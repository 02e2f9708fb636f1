"""What goes wrong reading a mini-batch's inputs inside a worker process.

The worker imports nothing of the engine (it runs in the deployment's own environment),
so it has this small tree of its own; the scoring host turns what it reports into the
engine's errors (shared/contract/errors.py).

    InputUnreadable           an input cannot be read: what needs it fails, no retry helps
    ├── InputMissing              the blob no longer exists
    ├── InputChanged              the file changed or vanished after its rows were planned
    ├── UnsplittableInput         the file cannot be cut into row ranges
    └── UnreadableRange           a planned range of rows cannot be parsed at all
    StorageFailing            storage refused or kept failing: retry the mini-batch later
"""

from __future__ import annotations


class InputUnreadable(Exception):
    """An input cannot be read: the inputs that need it fail."""


class InputMissing(InputUnreadable):
    """An input blob no longer exists (deleted after the job was planned)."""

    def __init__(self, display_name: str) -> None:
        super().__init__(f"input file not found: {display_name}")
        self.display_name = display_name


class InputChanged(InputUnreadable):
    """The file changed (or vanished) after its rows were planned: its ranges are stale."""


class UnsplittableInput(InputUnreadable):
    """An input file cannot be split into row ranges (compressed, broken, a record too long).

    The whole file fails; other files of the job are not affected.
    """

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


class UnreadableRange(InputUnreadable):
    """A planned range of rows cannot be read at all (a broken header, a corrupt page)."""


class StorageFailing(Exception):
    """Storage refused or kept failing while inputs were read: worth retrying later.

    Messages name the HTTP status, never a URL (a read URL's query is a signature).
    """
