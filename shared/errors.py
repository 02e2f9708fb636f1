"""Specific exceptions raised by the engine; the API edge turns them into coded errors."""

from __future__ import annotations

from typing import Any


class BatchfnError(Exception):
    """Base of every error meant for a user: a stable code, an HTTP status, details."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class InvalidRequest(BatchfnError):
    """The request or file is malformed or a value is out of range."""

    code = "invalid_request"
    status = 400


class NotFound(BatchfnError):
    """A named endpoint, deployment, job or asset does not exist."""

    code = "not_found"
    status = 404


class Conflict(BatchfnError):
    """The request clashes with what exists (already exists, in use, would overwrite)."""

    code = "conflict"
    status = 409


class Unprocessable(BatchfnError):
    """The request is well formed but its content cannot be used (e.g. a broken script)."""

    code = "unprocessable"
    status = 422


class PayloadTooLarge(BatchfnError):
    code = "payload_too_large"
    status = 413
