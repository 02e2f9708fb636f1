"""HTTP triggers on aiohttp: routing, methods, keys, `func.HttpRequest` in, response out."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from devhost.bindings import FunctionBindings, json_properties
from devhost.invoker import Invoker
from devhost.keys import KEY_HEADER, KeyRing
from devhost.routes import RouteTemplate

log = logging.getLogger("devhost.http")

# The Functions host's request size limit (100 MB).
MAX_REQUEST_BYTES = 100 * 1024 * 1024
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")


def error_response(status: int, code: str, message: str,
                   details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """The JSON error body used at the HTTP edge."""
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return web.json_response(body, status=status, headers=headers)


@dataclass(frozen=True)
class HttpFunction:
    """An HTTP-triggered function with its compiled route."""

    bindings: FunctionBindings
    route: RouteTemplate
    methods: frozenset[str] | None
    auth_level: str

    @classmethod
    def build(cls, bindings: FunctionBindings, route_prefix: str) -> HttpFunction:
        """Compile the trigger of `bindings` (route defaults to the function's name)."""
        trigger = bindings.trigger
        route = trigger.get("route")
        methods = trigger.get("methods")
        return cls(
            bindings=bindings,
            route=RouteTemplate.parse(bindings.name if route is None else route, route_prefix),
            methods=frozenset(str(m).upper() for m in methods) if methods else None,
            auth_level=str(trigger.get("authLevel") or "function").lower(),
        )

    def allows_method(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods


def to_response(value: Any) -> web.Response:
    """A function's HTTP output → aiohttp response (func.HttpResponse, str, bytes, JSON)."""
    if value is None:
        return web.Response(status=204)
    if isinstance(value, func.HttpResponse):
        headers = CIMultiDict(value.headers.items())
        if "content-type" not in headers:
            mimetype = value.mimetype
            if mimetype.startswith(_TEXT_TYPES) and "charset" not in mimetype:
                mimetype = f"{mimetype}; charset={value.charset}"
            headers["Content-Type"] = mimetype
        return web.Response(status=value.status_code, body=value.get_body(), headers=headers)
    if isinstance(value, str):
        return web.Response(text=value, content_type="text/plain")
    if isinstance(value, bytes | bytearray):
        return web.Response(body=bytes(value), content_type="application/octet-stream")
    return web.json_response(value)


class HttpFrontend:
    """Dispatches every request under the catch-all route to the matching function."""

    def __init__(self, functions: list[HttpFunction], *, invoker: Invoker,
                 keys: KeyRing) -> None:
        self._functions = sorted(functions, key=lambda f: f.route.precedence)
        self._invoker = invoker
        self._keys = keys

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the catch-all route; add more specific routes before calling this."""
        router.add_route("*", r"/{tail:[\s\S]*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Route, authorize, invoke, answer."""
        matches = [(f, params) for f in self._functions
                   if (params := f.route.match(request.path)) is not None]
        if not matches:
            if request.path == "/":
                return web.json_response({"host": "devhost", "state": "Running"})
            return error_response(404, "NotFound", f"no function serves {request.path}")
        allowed = [(f, p) for f, p in matches if f.allows_method(request.method)]
        if not allowed:
            methods = sorted(set().union(*(f.methods or () for f, _ in matches)))
            return error_response(405, "MethodNotAllowed",
                                  f"{request.method} is not allowed on {request.path}",
                                  {"allowed": methods}, headers={"Allow": ", ".join(methods)})
        function, route_params = allowed[0]
        presented = request.headers.get(KEY_HEADER) or request.query.get("code")
        if not self._keys.allows(function.auth_level, presented):
            return error_response(401, "Unauthorized",
                                  "a valid function key is required (x-functions-key header "
                                  "or ?code=)")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, "PayloadTooLarge",
                                  f"request bodies are limited to {MAX_REQUEST_BYTES} bytes")
        except (web.RequestPayloadError, HttpProcessingError):
            # E.g. a Content-Encoding the body is not in: the request's fault, not the host's.
            return error_response(400, "BadRequestBody", "the request body cannot be read: "
                                  "its Content-Encoding or framing is wrong")
        return await self._invoke(function, request, route_params, body)

    async def _invoke(self, function: HttpFunction, request: web.Request,
                      route_params: dict[str, str], body: bytes) -> web.StreamResponse:
        headers = {key: ", ".join(request.headers.getall(key))
                   for key in request.headers.keys()}
        params = dict(request.query)
        http_request = func.HttpRequest(
            method=request.method, url=str(request.url), headers=headers, params=params,
            route_params=route_params, body=body,
        )
        data: dict[str, Any] = {**json_properties(body), **params, **route_params}
        bindings = function.bindings
        invocation_id = str(uuid.uuid4())
        try:
            kwargs, outs = await bindings.prepare(data)
        except Exception as exc:  # noqa: BLE001 - an input that cannot be read fails it
            log.error("function=%s id=%s input bindings failed: %s: %s",
                      bindings.name, invocation_id, type(exc).__name__, exc)
            return self._failed(bindings.name, invocation_id, exc)
        kwargs[bindings.trigger["name"]] = http_request
        try:
            result = await self._invoker.invoke(
                bindings.function, kwargs, invocation_id=invocation_id,
                detail=f"{request.method} {request.path}",
            )
        except Exception as exc:  # noqa: BLE001 - the host answers 500 for any failure
            return self._failed(bindings.name, invocation_id, exc)
        try:
            value = await bindings.complete(outs, result, data)
        except Exception as exc:  # noqa: BLE001 - an output that cannot be written fails it
            log.error("function=%s id=%s output bindings failed: %s: %s",
                      bindings.name, invocation_id, type(exc).__name__, exc)
            return self._failed(bindings.name, invocation_id, exc)
        return to_response(value)

    @staticmethod
    def _failed(name: str, invocation_id: str, exc: Exception) -> web.Response:
        return error_response(
            500, "FunctionInvocationFailed",
            f"Exception while executing function: Functions.{name}",
            {"invocation_id": invocation_id, "type": type(exc).__name__},
        )


def application() -> web.Application:
    """An aiohttp application sized like the Functions host (100 MB request bodies)."""
    return web.Application(client_max_size=MAX_REQUEST_BYTES)
