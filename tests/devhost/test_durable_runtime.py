"""DurableRuntime in-process over a real Azurite, driven by the real DurableOrchestrationClient.

Each test serves the runtime's HTTP API on its own aiohttp server; a minimal invoker of our
Invoker interface calls the registered functions (devhost's own Invoker is exercised by the
devhost-process tests in test_durable_devhost.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import azure.durable_functions as df
import azure.functions as func
import psutil
import pytest
from aiohttp import web
from azure.durable_functions.models.utils import http_utils

from devhost.azurite import free_port
from devhost.durable import DurableRuntime
from devhost.durable.history import parse_time
from devhost.keys import KEY_HEADER, KeyRing

APPS = Path(__file__).parent / "apps"
KEYS = KeyRing(function_key="function-key", master_key="master-key")


def _load_app() -> Any:
    spec = importlib.util.spec_from_file_location("durable_app", APPS / "durable_app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["durable_app"] = module
    spec.loader.exec_module(module)
    return module


APP = _load_app()
FUNCTIONS = {f.get_function_name(): f for f in APP.app.get_functions()}


def _of_type(kind: str) -> dict[str, Any]:
    return {name: f for name, f in FUNCTIONS.items()
            if any(json.loads(b)["type"] == kind for b in f.get_raw_bindings())}


class DirectInvoker:
    """The Invoker interface, minus logging: coroutines awaited, plain functions in threads."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def invoke(self, function: Any, kwargs: dict[str, Any], *, detail: str = "") -> Any:
        self.calls.append(function.get_function_name())
        target = function.get_user_function()
        if inspect.iscoroutinefunction(target):
            return await target(**kwargs)
        return await asyncio.to_thread(target, **kwargs)


class Harness:
    """A runtime serving its HTTP API, plus a real client from its starter JSON."""

    def __init__(self, runtime: DurableRuntime, url: str) -> None:
        self.runtime = runtime
        self.url = url
        self.client = df.DurableOrchestrationClient(
            runtime.client_binding({"type": "durableClient", "name": "client"}))

    async def wait(self, instance_id: str, timeout: float = 30.0,
                   until: Callable[[Any], bool] | None = None) -> Any:
        """Poll get_status until a terminal status (or `until`)."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.client.get_status(instance_id, show_history=True,
                                                  show_history_output=True)
            value = status.runtime_status.value if status.runtime_status else None
            if until(status) if until else value in ("Completed", "Failed", "Terminated"):
                return status
            assert time.monotonic() < deadline, f"{instance_id} still {value}"
            await asyncio.sleep(0.1)


@asynccontextmanager
async def serving(connection: str, hub: str, **options: Any) -> AsyncIterator[Harness]:
    port = free_port()
    runtime = DurableRuntime(connection_string=connection, hub_name=hub,
                             orchestrators=_of_type("orchestrationTrigger"),
                             activities=_of_type("activityTrigger"), invoker=DirectInvoker(),
                             base_url=f"http://127.0.0.1:{port}", **options)
    app = web.Application()
    runtime.add_routes(app.router, KEYS)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await runtime.start()
    try:
        yield Harness(runtime, f"http://127.0.0.1:{port}")
    finally:
        await runtime.stop()
        await runner.cleanup()
        # The SDK keeps one aiohttp session per process, bound to this test's event loop.
        await http_utils._close_session()


def run(coroutine_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coroutine_fn())


def test_fan_out_timer_retry_and_continue_as_new(storage_connection: str,
                                                 unique_name: str) -> None:
    async def scenario() -> None:
        async with serving(storage_connection, unique_name) as hub:
            started = time.monotonic()
            instance = await hub.client.start_new("pipeline", None, {"n": 20, "round": 0})
            status = await hub.wait(instance)
            assert status.runtime_status.value == "Completed", status.output
            assert status.output == {"total": 2470, "previous": 2470, "flaky": "ok after 3",
                                     "plain": 9, "round": 1}
            assert status.custom_status == {"round": 1}
            assert status.input_ == {"n": 20, "round": 1, "total": 2470}
            # Two rounds, each waiting on a 1 s timer.
            assert time.monotonic() - started >= 2.0
            kinds = [e["EventType"] for e in status.historyEvents]
            assert kinds.count("TaskFailed") == 2 and kinds.count("TimerFired") == 3
            assert kinds[-2:] == ["ExecutionCompleted", "OrchestratorCompleted"]
    run(scenario)


def test_sub_second_timers_fire_on_time(storage_connection: str, unique_name: str) -> None:
    async def scenario() -> None:
        async with serving(storage_connection, unique_name) as hub:
            instance = await hub.client.start_new("short_timers", None, None)
            status = await hub.wait(instance)
            assert status.output == "done"
            events = status.historyEvents
            fired = [i for i, e in enumerate(events) if e["EventType"] == "TimerFired"]
            assert len(fired) == 3
            for index in fired:
                # The episode that admitted the timer started after its fire time, and well
                # before the whole second a queue-visibility timer would take.
                episode = next(e for e in reversed(events[:index])
                               if e["EventType"] == "OrchestratorStarted")
                late = parse_time(episode["Timestamp"]) - parse_time(events[index]["FireAt"])
                assert 0 <= late.total_seconds() < 0.7, late
    run(scenario)


def test_fan_out_replays_in_batches(storage_connection: str, unique_name: str) -> None:
    async def scenario() -> None:
        async with serving(storage_connection, unique_name,
                           max_concurrent_activities=32) as hub:
            invoker = hub.runtime.invoker
            instance = await hub.client.start_new("pipeline", None, {"n": 200, "round": 1})
            status = await hub.wait(instance, timeout=60)
            assert status.output["total"] == sum(i * i for i in range(200))
            # Completions are applied in batches: far fewer replays than activities.
            assert invoker.calls.count("pipeline") < 60
    run(scenario)


def test_retries_exhausted_fail_the_orchestration(storage_connection: str,
                                                  unique_name: str) -> None:
    async def scenario() -> None:
        async with serving(storage_connection, unique_name) as hub:
            status = await hub.wait(await hub.client.start_new("exhausted"))
            assert status.runtime_status.value == "Failed"
            assert "Orchestrator function 'exhausted' failed" in status.output
            assert "boom: x" in status.output
            kinds = [e["EventType"] for e in status.historyEvents]
            assert kinds.count("TaskScheduled") == 2 and kinds.count("TaskFailed") == 2

            status = await hub.wait(await hub.client.start_new("failing"))
            assert status.runtime_status.value == "Failed"
            assert "ValueError: boom: no retry" in status.output
    run(scenario)


def test_nondeterministic_orchestrator_fails_with_clear_error(storage_connection: str,
                                                              unique_name: str) -> None:
    async def scenario() -> None:
        APP.REPLAYS["count"] = 0
        async with serving(storage_connection, unique_name) as hub:
            status = await hub.wait(await hub.client.start_new("nondeterministic"))
            assert status.runtime_status.value == "Failed"
            assert status.output.startswith("Non-deterministic workflow detected")
            assert "activity 'square'" in status.output and "activity 'double'" in status.output
    run(scenario)


def test_external_event_sub_orchestration_and_custom_status(storage_connection: str,
                                                            unique_name: str) -> None:
    async def scenario() -> None:
        async with serving(storage_connection, unique_name) as hub:
            instance = await hub.client.start_new("approval", "order-1")
            assert instance == "order-1"
            status = await hub.wait(instance, until=lambda s: s.custom_status == "waiting")
            assert status.runtime_status.value == "Running"
            await hub.client.raise_event(instance, "approve", "alice")
            status = await hub.wait(instance)
            assert status.runtime_status.value == "Completed", status.output
            assert status.output == {"approved_by": "alice", "child": 10}
            assert status.custom_status == "approved"
            child = await hub.client.get_status("order-1:1")
            assert child.runtime_status.value == "Completed" and child.output == 10
            listed = await hub.client.get_status_by(
                runtime_status=[df.OrchestrationRuntimeStatus.Completed])
            assert {s.instance_id for s in listed} == {"order-1", "order-1:1"}
            # The same id may be started again once the first run is over.
            assert await hub.client.start_new("approval", "order-1") == "order-1"
    run(scenario)


def test_terminate_purge_and_check_status_response(storage_connection: str,
                                                   unique_name: str) -> None:
    async def scenario() -> None:
        async with serving(storage_connection, unique_name) as hub:
            instance = await hub.client.start_new("approval")
            request = func.HttpRequest("POST", "http://example.test:9999/api/start/approval",
                                       body=b"")
            response = hub.client.create_check_status_response(request, instance)
            assert response.status_code == 202
            links = json.loads(response.get_body())
            assert links["id"] == instance
            local = links["statusQueryGetUri"].replace("http://example.test:9999", hub.url)
            async with aiohttp.ClientSession() as session:
                async with session.get(local) as reply:
                    assert reply.status == 202
                    assert (await reply.json())["instanceId"] == instance

            await hub.wait(instance, until=lambda s: s.custom_status == "waiting")
            await hub.client.terminate(instance, "no longer needed")
            status = await hub.wait(instance)
            assert status.runtime_status.value == "Terminated"
            assert status.output == "no longer needed"
            with pytest.raises(Exception, match="is gone"):
                await hub.client.raise_event(instance, "approve", "late")
            result = await hub.client.purge_instance_history(instance)
            assert result.instances_deleted == 1
            assert not await hub.client.get_status(instance)
            assert (await hub.client.purge_instance_history(instance)).instances_deleted == 0
    run(scenario)


def test_bad_requests_get_clear_4xx(storage_connection: str, unique_name: str) -> None:
    async def scenario() -> None:
        async with serving(storage_connection, unique_name) as hub:
            with pytest.raises(Exception, match="doesn't exist"):
                await hub.client.start_new("no_such_orchestrator")
            with pytest.raises(Exception, match="No instance with ID"):
                await hub.client.raise_event("missing", "approve", 1)
            with pytest.raises(Exception, match="No instance with ID"):
                await hub.client.terminate("missing", "why")
            base = f"{hub.url}/runtime/webhooks/durabletask"
            async with aiohttp.ClientSession(headers={KEY_HEADER: KEYS.system_key}) as session:
                async with session.post(f"{base}/orchestrators/approval",
                                        data=b"{not json") as reply:
                    assert reply.status == 400
                    assert "not JSON" in (await reply.json())["error"]["message"]
                async with session.get(f"{base}/instances/missing") as reply:
                    assert reply.status == 404
                async with session.get(f"{base}/instances/?runtimeStatus=Sleeping") as reply:
                    assert reply.status == 400
                instance = await hub.client.start_new("approval", "dup")
                async with session.post(f"{base}/orchestrators/approval/dup") as reply:
                    assert reply.status == 409
                async with session.post(f"{base}/orchestrators/approval/a%23b") as reply:
                    assert reply.status == 400
                async with session.post(f"{base}/instances/dup/rewind") as reply:
                    assert reply.status == 501
            await hub.client.terminate(instance, "done")
    run(scenario)


def test_the_http_api_needs_the_system_or_master_key(storage_connection: str,
                                                     unique_name: str) -> None:
    async def scenario() -> None:
        async with serving(storage_connection, unique_name) as hub:
            instance = await hub.client.start_new("approval")
            await hub.wait(instance, until=lambda s: s.custom_status == "waiting")
            base = f"{hub.url}/runtime/webhooks/durabletask"
            attempts = [("GET", f"{base}/instances"), ("GET", f"{base}/instances/{instance}"),
                        ("POST", f"{base}/instances/{instance}/terminate?reason=x"),
                        ("POST", f"{base}/instances/{instance}/raiseEvent/approve"),
                        ("DELETE", f"{base}/instances/{instance}"),
                        ("DELETE", f"{base}/instances/?instanceIdPrefix="),
                        ("POST", f"{base}/orchestrators/approval")]
            async with aiohttp.ClientSession() as session:
                for key in (None, "", KEYS.function_key, "wrong"):
                    for method, url in attempts:
                        headers = {KEY_HEADER: key} if key is not None else {}
                        async with session.request(method, url, headers=headers) as reply:
                            assert reply.status == 401, (method, url, key)
                            assert (await reply.json())["error"]["code"] == "Unauthorized"
                for key in (KEYS.system_key, KEYS.master_key):
                    async with session.get(f"{base}/instances/{instance}?code={key}") as reply:
                        assert reply.status == 202
            status = await hub.client.get_status(instance)
            assert status.runtime_status.value == "Running"  # nothing above touched it
            # The app's own client calls a loopback listener of its own, with a token in the
            # path as its key (the client sends none).
            rpc = json.loads(hub.runtime.client_binding({}))["rpcBaseUrl"]
            assert rpc.startswith("http://127.0.0.1:") and not rpc.startswith(hub.url)
            assert len(rpc.rstrip("/").rsplit("/", 1)[-1]) >= 40
            # The management URLs users get carry the system key, never the master key.
            links = json.loads(hub.runtime.client_binding({}))["managementUrls"]
            assert f"code={KEYS.system_key}" in links["statusQueryGetUri"]
            assert KEYS.master_key not in json.dumps(links)
            await hub.client.terminate(instance, "done")
    run(scenario)


# What a scoring script (any process of any local user) can do with the ports the host
# listens on: it knows the routes of the Durable extension, not the host's keys or token.
PROBE = """
import json, sys, urllib.request, urllib.error
instance, answers = sys.argv[1], []
for port in json.loads(sys.argv[2]):
    for method, path in [("GET", "/durabletask/instances"),
                         ("GET", f"/durabletask/instances/{instance}"),
                         ("POST", f"/durabletask/instances/{instance}/terminate?reason=x"),
                         ("DELETE", f"/durabletask/instances/{instance}"),
                         ("POST", "/durabletask/orchestrators/approval"),
                         ("GET", f"/durabletask/durabletask/instances/{instance}"),
                         ("GET", f"/runtime/webhooks/durabletask/instances/{instance}")]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                status, headers, body = reply.status, dict(reply.headers), reply.read()
        except urllib.error.HTTPError as error:
            status, headers, body = error.code, dict(error.headers), error.read()
        answers.append([port, method, path, status, json.dumps(headers), body.decode()])
print(json.dumps(answers))
"""


def test_a_local_process_cannot_use_the_rpc_port(storage_connection: str,
                                                 unique_name: str) -> None:
    async def scenario() -> None:
        async with serving(storage_connection, unique_name) as hub:
            instance = await hub.client.start_new("approval")
            await hub.wait(instance, until=lambda s: s.custom_status == "waiting")
            ports = sorted({c.laddr.port for c in psutil.Process().net_connections("tcp")
                            if c.status == psutil.CONN_LISTEN and c.laddr.ip == "127.0.0.1"})
            rpc_port = int(json.loads(hub.runtime.client_binding({}))["rpcBaseUrl"]
                           .split(":")[2].split("/")[0])
            assert rpc_port in ports
            probe = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PROBE, instance, json.dumps(ports),
                env={"PATH": "/usr/bin:/bin"}, stdout=asyncio.subprocess.PIPE)
            output, _ = await probe.communicate()
            answers = json.loads(output)
            assert {port for port, *_ in answers} == set(ports)
            for port, method, path, status, headers, body in answers:
                assert status in (401, 404, 405), (port, method, path, status, body)
                for secret in (KEYS.system_key, KEYS.master_key, KEYS.function_key):
                    assert secret not in headers and secret not in body, (port, path)
            status = await hub.client.get_status(instance)
            assert status.runtime_status.value == "Running"  # nothing above touched it
            # What the listener answers its own client carries no key either.
            async with aiohttp.ClientSession() as session:
                rpc = json.loads(hub.runtime.client_binding({}))["rpcBaseUrl"]
                async with session.get(f"{rpc}instances/{instance}") as reply:
                    assert reply.status == 202
                    assert KEYS.system_key not in reply.headers["Location"]
                    assert reply.headers["Location"].startswith(rpc)
                async with session.post(f"{rpc}orchestrators/approval") as reply:
                    assert reply.status == 202
                    assert KEYS.system_key not in await reply.text()
            await hub.client.terminate(instance, "done")
    run(scenario)


def test_running_orchestration_resumes_after_abrupt_stop(storage_connection: str,
                                                         unique_name: str) -> None:
    async def scenario() -> None:
        async with serving(storage_connection, unique_name, lease_seconds=2) as hub:
            instance = await hub.client.start_new("slow_fan", None, 4)
            await hub.wait(instance, until=lambda s: s.runtime_status.value == "Running")
            await asyncio.sleep(0.5)  # activities are running now
            # Simulate a crash: drop everything without returning messages to the queues.
            runtime = hub.runtime
            for task in [*runtime._loops, *runtime._work]:
                task.cancel()
            runtime._held.clear()
        async with serving(storage_connection, unique_name, lease_seconds=2) as hub:
            status = await hub.wait(instance, timeout=30)
            assert status.runtime_status.value == "Completed", status.output
            assert status.output == [0, 1, 2, 3]
    run(scenario)
