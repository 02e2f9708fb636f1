"""What every HTTP blueprint shares: JSON responses, JSON errors, body, route and query
parsing. Logs name the method and path of a request, never its query string (where a
function key may travel as `?code=`) or its headers."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import azure.functions as func

from shared.contract.errors import BatchfnError, InvalidRequest, PayloadTooLarge, http_status
from shared.contract.json_input import parse_json_object

DEFAULT_MAX_BODY = 1024 * 1024
MAX_QUERY_VALUE = 256  # characters of one query parameter
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")

log = logging.getLogger("batchfn.http")


def json_response(body: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> func.HttpResponse:
    """A JSON response."""
    return func.HttpResponse(json.dumps(body), status_code=status, headers=headers,
                             mimetype="application/json", charset="utf-8")


def error_response(exc: BatchfnError) -> func.HttpResponse:
    """The JSON error `{"error": {"code", "message", "details"}}` with the error's status."""
    return json_response(exc.to_dict(), status=http_status(exc))


def api_errors(handler: Callable[[func.HttpRequest], func.HttpResponse]
               ) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """Turn BatchfnError into its JSON error and anything unexpected into a logged 500."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except BatchfnError as exc:
            return error_response(exc)
        except Exception:
            return internal_error(req)

    return wrapper


def internal_error(req: func.HttpRequest) -> func.HttpResponse:
    """Log an unexpected failure (with its traceback) and answer a JSON 500."""
    log.exception("unhandled error in %s %s", req.method, request_path(req))
    return json_response({"error": {"code": "internal_error",
                                    "message": "internal error; the host log has the details"}},
                         status=500)


def request_path(req: func.HttpRequest) -> str:
    """The path of a request, without its query string (safe to log)."""
    return urlsplit(req.url).path


def read_json(req: func.HttpRequest, max_bytes: int = DEFAULT_MAX_BODY) -> dict[str, Any]:
    """The request body as a JSON object; InvalidRequest / PayloadTooLarge otherwise."""
    body = req.get_body() or b""
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {max_bytes}",
                              details={"limit": max_bytes})
    return parse_json_object(body, what="request body")


def query_text(req: func.HttpRequest, name: str, *,
               max_chars: int = MAX_QUERY_VALUE) -> str | None:
    """A query parameter (None when absent), at most `max_chars` characters."""
    value = req.params.get(name)
    if value is not None and len(value) > max_chars:
        raise InvalidRequest(f"query parameter {name} is longer than {max_chars} "
                             "characters", details={"parameter": name}, code="invalid_parameter")
    return value


def query_int(req: func.HttpRequest, name: str, *, minimum: int, maximum: int) -> int | None:
    """A whole-number query parameter within [minimum, maximum]; None when absent."""
    value = query_text(req, name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not minimum <= number <= maximum:
        raise InvalidRequest(f"query parameter {name}={value!r} must be a whole number from "
                             f"{minimum} to {maximum}", details={"parameter": name},
                             code="invalid_parameter")
    return number


def attachment(file_name: str) -> str:
    """A Content-Disposition header value that downloads as `file_name`, whatever its
    characters: a plain ASCII fallback plus the exact name in RFC 5987 form."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                       for c in file_name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


def query_flag(req: func.HttpRequest, name: str) -> bool:
    """A boolean query parameter (`true/false/1/0/yes/no`); absent means False."""
    value = (query_text(req, name) or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidRequest(f"query parameter {name}={value!r} must be true or false",
                         details={"parameter": name}, code="invalid_parameter")
