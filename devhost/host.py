"""DevHost: enumerates an app's functions once and serves each kind of trigger."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiohttp import web
from azure.functions import FunctionRegister

from devhost.bindings import FunctionBindings, trigger_binding
from devhost.blobs import BlobWatcher
from devhost.config import ConfigError, HostConfig
from devhost.connections import StorageClients, resolve_connection
from devhost.http import HttpFrontend, HttpFunction, application
from devhost.invoker import Invoker, function_name
from devhost.keys import load_keys, remove_state, write_state
from devhost.queues import QueueListener

log = logging.getLogger("devhost")

DURABLE_TRIGGERS = ("orchestrationTrigger", "activityTrigger", "entityTrigger")


class ServeError(RuntimeError):
    """The HTTP server could not listen (e.g. the port is taken)."""


def load_app(module_name: str) -> FunctionRegister:
    """Import `module_name` and return its one FunctionApp (as the Python worker finds it)."""
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import-time failure stops start-up
        # The Python worker reports an app that fails to import the same way: no functions.
        raise ConfigError(f"cannot import app module {module_name!r}: "
                          f"{type(exc).__name__}: {exc}") from exc
    apps = [value for value in vars(module).values() if isinstance(value, FunctionRegister)]
    if len(apps) != 1:
        raise ConfigError(f"{module_name} must define exactly one FunctionApp, found {len(apps)}")
    return apps[0]


class DevHost:
    """Serves one app: HTTP, queue and blob triggers here; durable ones via DurableRuntime."""

    def __init__(
        self,
        app: FunctionRegister,
        *,
        config: HostConfig,
        connection_string: str,
        script_root: Path,
        host: str = "127.0.0.1",
        port: int = 7071,
        shutdown_grace: float = 20.0,
    ) -> None:
        self.config = config
        self.connection_string = connection_string
        self.script_root = script_root
        self.host = host
        self.port = port
        self.shutdown_grace = shutdown_grace
        self.url = f"http://{host}:{port}"
        self.invoker = Invoker(function_timeout=config.function_timeout,
                               function_directory=str(script_root))
        self.clients = StorageClients()
        # get_functions() registers names as it goes: a second call raises duplicates.
        self.functions: dict[str, list[Any]] = defaultdict(list)
        needs_durable = False
        for function in app.get_functions():
            kind = trigger_binding(function)["type"]
            self.functions[kind].append(function)
            needs_durable = needs_durable or kind in DURABLE_TRIGGERS or any(
                '"durableClient"' in raw for raw in map(str, function.get_raw_bindings()))
        self.runtime = self._durable_runtime() if needs_durable else None
        client_binding = self.runtime.client_binding if self.runtime is not None else None

        def bind(function: Any) -> FunctionBindings:
            return FunctionBindings(function, clients=self.clients,
                                    message_encoding=config.queues.message_encoding,
                                    durable_client=client_binding)

        self.http_functions = [HttpFunction.build(bind(f), config.route_prefix)
                               for f in self.functions["httpTrigger"]]
        self.queue_listeners = [
            QueueListener(bind(f), clients=self.clients, invoker=self.invoker,
                          options=config.queues,
                          connection=resolve_connection(trigger_binding(f).get("connection")))
            for f in self.functions["queueTrigger"]
        ]
        self.blob_watchers = [
            BlobWatcher(bind(f), clients=self.clients, invoker=self.invoker,
                        connection=resolve_connection(trigger_binding(f).get("connection")),
                        host_connection=connection_string,
                        concurrency=config.queues.batch_size)
            for f in self.functions["blobTrigger"]
        ]
        for function in self.functions["entityTrigger"]:
            log.warning("entity function %s is not served by devhost", function_name(function))

    def _durable_runtime(self) -> Any:
        from devhost.durable import DurableRuntime

        def named(kind: str) -> dict[str, Any]:
            return {function_name(f): f for f in self.functions[kind]}

        return DurableRuntime(
            connection_string=self.connection_string,
            hub_name=self.config.hub_name,
            orchestrators=named("orchestrationTrigger"),
            activities=named("activityTrigger"),
            invoker=self.invoker,
            base_url=self.url,
        )

    def describe(self) -> list[str]:
        """One line per served function, like Core Tools prints at start."""
        lines = []
        for function in self.http_functions:
            methods = ",".join(sorted(function.methods)) if function.methods else "ALL"
            prefix = f"/{self.config.route_prefix}" if self.config.route_prefix else ""
            lines.append(f"{function.bindings.name}: [{methods}] "
                         f"{self.url}{prefix}/{function.route.template.strip('/')}")
        for listener in self.queue_listeners:
            lines.append(f"{listener.name}: queueTrigger {listener.queue_name}")
        for watcher in self.blob_watchers:
            lines.append(f"{watcher.name}: blobTrigger {watcher.path}")
        for kind in DURABLE_TRIGGERS[:2]:
            lines.extend(f"{function_name(f)}: {kind}" for f in self.functions[kind])
        return lines

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then shut down gracefully."""
        keys = await load_keys(self.clients.blob_service(self.connection_string))
        app = application()
        if self.runtime is not None:
            self.runtime.add_routes(app.router, keys)
        HttpFrontend(self.http_functions, invoker=self.invoker, keys=keys).add_routes(app.router)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.shutdown_grace,
                               handle_signals=False)
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, self.host, self.port).start()
            except OSError as exc:
                raise ServeError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
            if self.runtime is not None:
                await self.runtime.start()
            for listener in self.queue_listeners:
                listener.start()
            for watcher in self.blob_watchers:
                watcher.start()
            write_state(self.port, url=self.url, keys=keys, script_root=self.script_root)
            log.info("devhost listening on %s\n  %s", self.url, "\n  ".join(self.describe()))
            await stop.wait()
            log.info("devhost stopping: letting running invocations finish (up to %gs)",
                     self.shutdown_grace)
        finally:
            remove_state(self.port)
            await asyncio.gather(
                *(listener.stop(self.shutdown_grace) for listener in self.queue_listeners),
                *(watcher.stop(self.shutdown_grace) for watcher in self.blob_watchers),
                runner.cleanup(),
            )
            if self.runtime is not None:
                await self.runtime.stop()
            self.invoker.shutdown(wait=False)
            await self.clients.close()
        log.info("devhost stopped")
