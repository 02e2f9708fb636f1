"""Every error the batchfn client raises, in one tree (shaped like httpx's):

    BatchfnClientError
    ├── TransportError            no usable answer: unreachable, timed out, not batchfn
    ├── ApiError                  the API refused (or a local check refused before a request)
    │   ├── InvalidRequestError       400
    │   ├── NotFoundError             404
    │   ├── ConflictError             409
    │   ├── PayloadTooLargeError      413
    │   ├── UnprocessableError        422
    │   └── ServerError               5xx
    └── JobError                  a job the client waited for did not complete
        └── JobTimeoutError           ... within the time it was given

An `ApiError` carries the API's `status`, stable `code`, `message` and `details`. A check
made on this machine (a name, a setting, a scoring script) raises the same class the API
would, so callers handle both alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from batchfn.contract import errors as contract


class BatchfnClientError(Exception):
    """Base of everything the batchfn client raises."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransportError(BatchfnClientError):
    """The request got no usable answer (`code`: unreachable, timeout, bad_response)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"


class ApiError(BatchfnClientError):
    """An error answer of the API: HTTP `status`, stable `code`, `message`, `details`."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"


class InvalidRequestError(ApiError):
    """400: the request or file is malformed or a value is out of range."""


class NotFoundError(ApiError):
    """404: a named endpoint, deployment, job or asset does not exist."""


class ConflictError(ApiError):
    """409: the request clashes with what exists."""


class PayloadTooLargeError(ApiError):
    """413: the request body is larger than the API takes."""


class UnprocessableError(ApiError):
    """422: well formed, but its content cannot be used (e.g. a broken scoring script)."""


class ServerError(ApiError):
    """5xx: the service failed; retrying later may help."""


class JobError(BatchfnClientError):
    """A job ended without completing; `job` is its last state."""

    def __init__(self, message: str, job: dict[str, Any]) -> None:
        super().__init__(message)
        self.job = job
        self.code = "job_" + str(job.get("status", "unknown")).lower()


class JobTimeoutError(JobError):
    """A job was still running when the time given to wait for it ran out."""


_BY_STATUS = {400: InvalidRequestError, 404: NotFoundError, 409: ConflictError,
              413: PayloadTooLargeError, 422: UnprocessableError}


def api_error(status: int, code: str, message: str, details: Any = None) -> ApiError:
    """The ApiError subclass for an HTTP status."""
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return kind(status, code, message, details)


@contextmanager
def local_checks() -> Iterator[None]:
    """Raise a check made on this machine as the ApiError the API would answer with."""
    try:
        yield
    except contract.BatchfnError as exc:
        raise api_error(contract.http_status(exc), exc.code, exc.message, exc.details) \
            from None
