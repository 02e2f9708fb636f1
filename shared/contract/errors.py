"""The engine's exceptions, one tree with a base per kind:

    BatchfnError
    ├── InvalidRequest        bad request: malformed, out of range, not allowed
    │   └── PayloadTooLarge       ... too large to take
    ├── NotFound              a named endpoint, deployment, job or asset does not exist
    ├── Conflict              clashes with what exists
    │   └── Busy                  ... a record kept changing under every try
    ├── Unprocessable         well formed, but its content cannot be used
    ├── InputUnreadable       a job's input (or its own state) cannot be read: the job or
    │                         mini-batch fails with the reason
    └── StorageUnavailable    storage failed or timed out: try again later

Each error has a stable `code` (the kind's, unless the raiser names a finer one), a
message meant for a user, and optional details. `http_status` maps kinds to HTTP statuses
in one table: the API answers with it (functions/http_edge.py), and the client raises a
check it makes itself as the error the API would answer (batchfn/errors.py).
"""

from __future__ import annotations

from typing import Any


class BatchfnError(Exception):
    """Base of every error meant for a user: a stable code, a message, details."""

    code = "error"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: `{"error": {"code", "message", "details"?}}`."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class InvalidRequest(BatchfnError):
    """The request or file is malformed, a value is out of range or not allowed."""

    code = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    """The request (or a file it names) is larger than batchfn takes."""

    code = "payload_too_large"


class NotFound(BatchfnError):
    """A named endpoint, deployment, job or asset does not exist."""

    code = "not_found"


class Conflict(BatchfnError):
    """The request clashes with what exists (already exists, in use, would overwrite)."""

    code = "conflict"


class Busy(Conflict):
    """A record kept changing under every try of a conditional update: try again."""

    code = "busy"


class Unprocessable(BatchfnError):
    """The request is well formed but its content cannot be used (e.g. a broken script)."""

    code = "unprocessable"


class InputUnreadable(BatchfnError):
    """A job's input, or the state it was planned into, cannot be read (missing container,
    file, manifest chunk or source job): what needs it fails with this reason."""

    code = "input_unreadable"


class StorageUnavailable(BatchfnError):
    """Storage failed or was too slow after its own retries: worth trying again later."""

    code = "storage_unavailable"


# Each kind's HTTP status; the first kind an error is an instance of wins (subclasses first).
HTTP_STATUS: tuple[tuple[type[BatchfnError], int], ...] = (
    (PayloadTooLarge, 413),
    (InvalidRequest, 400),
    (NotFound, 404),
    (Busy, 409),
    (Conflict, 409),
    (Unprocessable, 422),
    (InputUnreadable, 422),
    (StorageUnavailable, 503),
)


def http_status(error: BatchfnError) -> int:
    """The HTTP status of an error's kind (400 for a kind without one of its own)."""
    return next((status for kind, status in HTTP_STATUS if isinstance(error, kind)), 400)
