"""What every HTTP blueprint shares: JSON responses, JSON errors, body and query parsing."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.errors import BatchfnError, InvalidRequest, PayloadTooLarge

DEFAULT_MAX_BODY = 1024 * 1024
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
    return json_response(exc.to_dict(), status=exc.status)


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
            log.exception("unhandled error in %s %s", req.method, req.url)
            return json_response(
                {"error": {"code": "internal_error",
                           "message": "internal error; the host log has the details"}},
                status=500)

    return wrapper


def read_json(req: func.HttpRequest, max_bytes: int = DEFAULT_MAX_BODY) -> dict[str, Any]:
    """The request body as a JSON object; InvalidRequest / PayloadTooLarge otherwise."""
    body = req.get_body() or b""
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {max_bytes}",
                              details={"limit": max_bytes})
    if not body.strip():
        raise InvalidRequest("request body is empty: expected a JSON object", code="invalid_json")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}",
                             code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    return data


def query_flag(req: func.HttpRequest, name: str) -> bool:
    """A boolean query parameter (`true/false/1/0/yes/no`); absent means False."""
    value = (req.params.get(name) or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidRequest(f"query parameter {name}={value!r} must be true or false",
                         details={"parameter": name}, code="invalid_parameter")
