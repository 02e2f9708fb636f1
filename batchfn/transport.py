"""The one way the client talks to the batchfn API: JSON over HTTP(S) with the function key.

Every request goes through `Transport.open`; every failure leaves it as an error of
batchfn.errors (an `ApiError` subclass for an error answer, `TransportError` when there is
no usable answer). Only the standard library is used, so importing the client stays cheap.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.client import HTTPResponse
from typing import Any

from batchfn.errors import ApiError, TransportError, api_error

_ERROR_TEXT_LIMIT = 300


class Transport:
    """HTTP access to one batchfn deployment: `url` (without /api) and its function `key`."""

    def __init__(self, url: str, key: str | None, timeout: float) -> None:
        self.url = url
        self.key = key
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, *,
                params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None) -> Any:
        """Send one request to `/api/<path>`; the decoded JSON answer (None when empty)."""
        with self.open(method, path, body, params=params, headers=headers) as response:
            payload = self._read(response)
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise TransportError(f"{self.url} answered {method} {path} with something other "
                                 "than JSON: is it a batchfn app?", code="bad_response") from None

    @contextmanager
    def open(self, method: str, path: str, body: Any = None, *,
             params: Mapping[str, Any] | None = None,
             headers: Mapping[str, str] | None = None) -> Iterator[HTTPResponse]:
        """Send one request and yield the successful response, to read or stream."""
        url = f"{self.url}/api/{path.lstrip('/')}"
        query = {k: str(v).lower() if isinstance(v, bool) else v
                 for k, v in (params or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.key:
            request.add_header("x-functions-key", self.key)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise self._error_answer(exc.code, self._read(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise TransportError(f"batchfn at {self.url} did not answer {method} {path} "
                                     f"within {self.timeout:g}s", code="timeout") from None
            raise TransportError(
                f"cannot reach batchfn at {self.url}: {reason} (is the devhost running? start "
                "it with `make serve`, or set --url/BATCHFN_URL)", code="unreachable") from None
        with response:
            yield response

    def _read(self, response: Any) -> bytes:
        try:
            return response.read()
        except TimeoutError:
            raise TransportError(f"batchfn at {self.url} stopped answering mid-response "
                                 f"(no data for {self.timeout:g}s)", code="timeout") from None
        except OSError as exc:
            raise TransportError(f"the answer of batchfn at {self.url} broke off: {exc}",
                                 code="unreachable") from None

    @staticmethod
    def _error_answer(status: int, payload: bytes) -> ApiError:
        try:
            error = json.loads(payload)["error"]
            return api_error(status, error.get("code", "error"), error.get("message", ""),
                             error.get("details"))
        except (ValueError, KeyError, TypeError, AttributeError):
            text = payload.decode("utf-8", "replace").strip()[:_ERROR_TEXT_LIMIT]
            return api_error(status, "http_error", f"HTTP {status}: {text or 'no details'}")
