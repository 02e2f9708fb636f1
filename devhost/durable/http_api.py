"""The Durable extension's HTTP API, served twice as in Azure.

Under `/runtime/webhooks/durabletask/` on devhost's own port, for people and tools: every
request needs the extension's system key or the master key (`code=` or x-functions-key),
and the management URLs that `create_check_status_response` hands out carry the system key.
Under `/durabletask/<token>/` on a listener of its own, bound to 127.0.0.1 on a free port:
the `rpcBaseUrl` that `DurableOrchestrationClient` (azure-functions-durable) calls from
inside the app, like the Functions host's local RPC endpoint. That client sends no key, so
the key is in the path: a random token that only the host process knows (it reaches the
app's functions in their starter JSON, never a worker process). Any other process on the
machine reaches the port too (loopback is every local user's), but without the token it
gets a 404 and nothing else; and what the listener answers carries URLs of its own, never
the system key. Status codes follow the real extension so that the client's own status
handling works unchanged.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from devhost.durable.management import (
    InstanceManager,
    InstanceQuery,
    ManagementError,
    serialized_payload,
)
from devhost.keys import KEY_HEADER, KeyRing

WEBHOOK_PREFIX = "/runtime/webhooks/durabletask"
RPC_PREFIX = "/durabletask"
_RUNNING = {"Pending", "Running", "ContinuedAsNew"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Authorize = Callable[[web.Request], web.Response | None]  # None: let the request through


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes")


def _error(status: int, code: str, message: str) -> web.Response:
    # Our JSON error shape, plus the keys the Python client reads from the real extension.
    body = {"error": {"code": code, "message": message, "details": {}},
            "Message": message, "ExceptionMessage": message}
    return web.json_response(body, status=status)


class ManagementUrls:
    """The URL templates of the starter JSON and of check-status responses: under `prefix`
    of `base_url`, with `system_key` in their query (None: no key, for the RPC listener,
    whose `prefix` holds its token)."""

    def __init__(self, base_url: str, hub: str, system_key: str | None, *,
                 prefix: str = WEBHOOK_PREFIX) -> None:
        self.base = f"{base_url.rstrip('/')}{prefix}"
        self.query = f"taskHub={hub}&connection=Storage"
        if system_key is not None:
            self.query += f"&code={system_key}"

    def for_instance(self, instance_id: str) -> dict[str, str]:
        base, query = f"{self.base}/instances/{instance_id}", self.query
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{base}?{query}",
            "sendEventPostUri": f"{base}/raiseEvent/{{eventName}}?{query}",
            "terminatePostUri": f"{base}/terminate?reason={{text}}&{query}",
            "rewindPostUri": f"{base}/rewind?reason={{text}}&{query}",
            "purgeHistoryDeleteUri": f"{base}?{query}",
            "restartPostUri": f"{base}/restart?{query}",
            "suspendPostUri": f"{base}/suspend?reason={{text}}&{query}",
            "resumePostUri": f"{base}/resume?reason={{text}}&{query}",
        }

    def creation(self) -> dict[str, str]:
        start = f"{self.base}/orchestrators/{{functionName}}[/{{instanceId}}]"
        return {"createNewInstancePostUri": f"{start}?{self.query}",
                "createAndWaitOnNewInstancePostUri":
                    f"{start}?timeout={{timeoutInSeconds}}&pollingInterval="
                    f"{{intervalInSeconds}}&{self.query}"}


def system_key_check(keys: KeyRing) -> Authorize:
    """Let through requests with the system or master key (x-functions-key or ?code=)."""
    def authorize(request: web.Request) -> web.Response | None:
        presented = request.headers.get(KEY_HEADER) or request.query.get("code")
        if keys.allows_system(presented):
            return None
        return _error(401, "Unauthorized", "the Durable HTTP API needs the system key or the "
                                           "master key (x-functions-key header or ?code=)")
    return authorize


def rpc_token_check(token: str) -> Authorize:
    """Let through requests whose path holds `token` (the routes' `{token}` segment); the
    others get a 404 that says nothing of the listener."""
    expected = token.encode()

    def authorize(request: web.Request) -> web.Response | None:
        presented = request.match_info.get("token", "").encode()
        if hmac.compare_digest(presented, expected):
            return None
        return web.Response(status=404, text="404: Not Found")
    return authorize


class DurableHttpApi:
    """aiohttp handlers over an `InstanceManager`."""

    def __init__(self, manager: InstanceManager, urls: ManagementUrls) -> None:
        self.manager = manager
        self.urls = urls

    def add_routes(self, router: web.UrlDispatcher, authorize: Authorize, *,
                   prefix: str = WEBHOOK_PREFIX) -> None:
        """Serve the API under `prefix` to the requests `authorize` lets through
        (`system_key_check`, or `rpc_token_check` for the local RPC listener)."""
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/orchestrators/{function}", self.start),
            ("POST", "/orchestrators/{function}/{instance}", self.start),
            ("GET", "/instances", self.list_instances),
            ("GET", "/instances/", self.list_instances),
            ("DELETE", "/instances", self.purge_by),
            ("DELETE", "/instances/", self.purge_by),
            ("GET", "/instances/{instance}", self.status),
            ("DELETE", "/instances/{instance}", self.purge),
            ("POST", "/instances/{instance}/terminate", self.terminate),
            ("POST", "/instances/{instance}/raiseEvent/{event}", self.raise_event),
            ("POST", "/instances/{instance}/{operation:rewind|suspend|resume|restart}",
             self.unsupported),
        ]
        for method, path, handler in routes:
            router.add_route(method, prefix + path, self._guarded(handler, authorize))

    @staticmethod
    def _guarded(handler: Handler, authorize: Authorize) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            refused = authorize(request)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except ManagementError as exc:
                return _error(exc.status, exc.code, str(exc))
        return guarded

    async def start(self, request: web.Request) -> web.StreamResponse:
        payload = serialized_payload(await request.read())
        record = await self.manager.start(request.match_info["function"],
                                          request.match_info.get("instance"), payload,
                                          request.query.get("version", ""))
        links = self.urls.for_instance(record.instance_id)
        return web.json_response(links, status=202, headers={
            "Location": links["statusQueryGetUri"], "Retry-After": "1"})

    async def status(self, request: web.Request) -> web.StreamResponse:
        record = await self.manager.get(request.match_info["instance"])
        body = record.status_json(
            show_input=_flag(request, "showInput", True),
            show_history=_flag(request, "showHistory", False),
            show_history_output=_flag(request, "showHistoryOutput", False))
        if record.status in _RUNNING:
            location = self.urls.for_instance(record.instance_id)["statusQueryGetUri"]
            return web.json_response(body, status=202, headers={"Location": location,
                                                                "Retry-After": "1"})
        failed_is_500 = _flag(request, "returnInternalServerErrorOnFailure", False)
        status = 500 if record.status == "Failed" and failed_is_500 else 200
        return web.json_response(body, status=status)

    async def list_instances(self, request: web.Request) -> web.StreamResponse:
        records = await self.manager.query(InstanceQuery.from_params(request.query))
        show_input = _flag(request, "showInput", False)
        return web.json_response([r.status_json(show_input=show_input) for r in records])

    async def raise_event(self, request: web.Request) -> web.StreamResponse:
        payload = serialized_payload(await request.read())
        await self.manager.raise_event(request.match_info["instance"],
                                       request.match_info["event"], payload)
        return web.Response(status=202)

    async def terminate(self, request: web.Request) -> web.StreamResponse:
        await self.manager.terminate(request.match_info["instance"],
                                     request.query.get("reason", ""))
        return web.Response(status=202)

    async def purge(self, request: web.Request) -> web.StreamResponse:
        deleted = await self.manager.purge(request.match_info["instance"])
        if not deleted:
            return _error(404, "NotFound",
                          f"No instance with ID '{request.match_info['instance']}' found.")
        return web.json_response({"instancesDeleted": deleted})

    async def purge_by(self, request: web.Request) -> web.StreamResponse:
        deleted = await self.manager.purge_by(InstanceQuery.from_params(request.query))
        if not deleted:
            return _error(404, "NotFound", "No instances matched.")
        return web.json_response({"instancesDeleted": deleted})

    async def unsupported(self, request: web.Request) -> web.StreamResponse:
        operation = request.match_info["operation"]
        return _error(501, "NotImplemented", f"devhost does not support '{operation}'")

