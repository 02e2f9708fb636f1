"""DurableRuntime: runs orchestrations and activities from the task hub's queues.

Message-driven: the control queue says "instance X has new events"; for each instance with
messages, one episode at a time (an in-process lock, plus ETag-conditional record writes)
loads the record, admits the events, replays the orchestrator through its registered handle,
enqueues the resulting work, sends messages, commits the record and only then deletes the
messages it consumed. A host killed at any point leaves messages that reappear when their
lease ends; replaying them is harmless because completions are de-duplicated by task id and
external events by message id. Activities run at least once, as in Azure.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import secrets
import socket
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Awaitable
from typing import Any

from aiohttp import web
from azure.functions import meta
from azure.functions.durable_functions import (
    ActivityTriggerConverter,
    OrchestrationTriggerConverter,
)

from devhost.durable.actions import Decision, DecisionError, decision_from_failure, parse_decision
from devhost.durable.episode import Episode
from devhost.durable.history import EventType, new_event, parse_time, utcnow
from devhost.durable.http_api import (
    RPC_PREFIX,
    DurableHttpApi,
    ManagementUrls,
    rpc_token_check,
    system_key_check,
)
from devhost.durable.management import InstanceManager, KeyedLocks
from devhost.durable.records import ActivityWork, ControlMessage, MessageError
from devhost.durable.store import ConcurrencyError, Received, TaskHubStorage
from devhost.keys import KeyRing

log = logging.getLogger("devhost.durable")

_MAX_HELD_CONTROL = 512
MAX_RPC_BODY = 100 * 1024 * 1024  # orchestration inputs, as large as an HTTP request may be
_MAX_PARALLEL_EPISODES = 8
_FIRST_POLL_DELAY = 0.05
# A timer message shows up at most a second early (whole-second visibility); one that shows
# up this much early or less waits in memory, leased, for its exact fire time.
_TIMER_HOLD_SECONDS = 2.0


def _trigger_name(function: Any, trigger_type: str) -> str:
    """The parameter that receives a function's trigger (e.g. `context`)."""
    for raw in function.get_raw_bindings():
        binding = json.loads(raw) if isinstance(raw, str) else dict(raw)
        if binding.get("type") == trigger_type:
            name = str(binding["name"])
            break
    else:
        raise ValueError(f"function {function.get_function_name()} has no {trigger_type} "
                         f"binding")
    # df's orchestrator handle takes `context` whatever the binding is called.
    parameters = list(inspect.signature(function.get_user_function()).parameters)
    return name if name in parameters or len(parameters) != 1 else parameters[0]


class DurableRuntime:
    """The Durable Functions extension of devhost (see the module docstring)."""

    def __init__(self, *, connection_string: str, hub_name: str,
                 orchestrators: dict[str, Any], activities: dict[str, Any], invoker: Any,
                 base_url: str, max_concurrent_activities: int = 16,
                 lease_seconds: int = 10, max_poll_interval: float = 1.0,
                 stop_grace_seconds: float = 5.0) -> None:
        self.storage = TaskHubStorage(connection_string, hub_name)
        self.hub_name = self.storage.hub
        self.orchestrators = orchestrators
        self.activities = activities
        self.invoker = invoker
        self.max_concurrent_activities = max(1, max_concurrent_activities)
        self.lease_seconds = max(2, lease_seconds)
        self.max_poll_interval = max_poll_interval
        self.stop_grace_seconds = stop_grace_seconds
        self.base_url = base_url
        self.urls: ManagementUrls | None = None  # known once add_routes has the keys
        self._rpc_runner: web.AppRunner | None = None
        self._rpc_base_url = ""
        self.locks = KeyedLocks()
        self.manager = InstanceManager(self.storage, orchestrators, self.locks,
                                       self._wake_control)
        self._orchestrator_params = {name: _trigger_name(f, "orchestrationTrigger")
                                     for name, f in orchestrators.items()}
        self._activity_params = {name: _trigger_name(f, "activityTrigger")
                                 for name, f in activities.items()}
        self._control_wake = asyncio.Event()
        self._activity_wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._episode_slots = asyncio.Semaphore(_MAX_PARALLEL_EPISODES)
        self._pending: dict[str, list[Received]] = defaultdict(list)
        self._active_instances: set[str] = set()
        self._held: dict[str, tuple[Received, float]] = {}
        self._due_timers: dict[str, asyncio.TimerHandle] = {}
        self._running_activities = 0
        self._loops: list[asyncio.Task[None]] = []
        self._work: set[asyncio.Task[Any]] = set()

    # ---- the fixed interface -------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher, keys: KeyRing) -> None:
        """Serve the Durable HTTP API (start, status, events, terminate, purge) to callers
        with the system or master key of `keys`."""
        self.urls = ManagementUrls(self.base_url, self.hub_name, keys.system_key)
        DurableHttpApi(self.manager, self.urls).add_routes(router, system_key_check(keys))

    def client_binding(self, binding: dict[str, Any]) -> str:
        """The starter JSON the host passes for a `durableClient` binding."""
        if self.urls is None or not self._rpc_base_url:
            raise RuntimeError("the durable runtime serves no routes yet: add_routes, then start")
        hub = binding.get("taskHub") or self.hub_name
        if str(hub).lower() != self.hub_name:
            log.warning("durableClient %s asks for task hub %r; devhost serves only %r",
                        binding.get("name"), hub, self.hub_name)
        return json.dumps({
            "taskHubName": self.hub_name,
            "creationUrls": self.urls.creation(),
            "managementUrls": self.urls.for_instance("INSTANCEID"),
            "baseUrl": self.urls.base,
            "requiredQueryStringParameters": self.urls.query,
            "rpcBaseUrl": self._rpc_base_url,
            "httpBaseUrl": "",
            "maxGrpcMessageSizeInBytes": 0,
            "grpcHttpClientTimeout": "00:01:40",
        })

    async def start(self) -> None:
        """Create the hub's storage if needed, open the local RPC listener the app's durable
        clients call, and start processing (resumes what's queued)."""
        if self.urls is None:
            raise RuntimeError("add_routes first: the management URLs need the system key")
        await self.storage.open()
        await self._start_rpc()
        self._stopping.clear()
        self._loops = [asyncio.create_task(self._control_loop(), name="durable-control"),
                       asyncio.create_task(self._activity_loop(), name="durable-activities"),
                       asyncio.create_task(self._lease_loop(), name="durable-leases")]
        log.info("durable runtime started: hub=%s orchestrators=%s activities=%s",
                 self.hub_name, sorted(self.orchestrators), sorted(self.activities))

    async def stop(self) -> None:
        """Stop receiving; give running work a short grace; return the rest to the queues."""
        self._stopping.set()
        self._control_wake.set()
        self._activity_wake.set()
        for loop in self._loops:
            loop.cancel()
        for handle in self._due_timers.values():
            handle.cancel()
        self._due_timers.clear()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._work:
            _, unfinished = await asyncio.wait(set(self._work), timeout=self.stop_grace_seconds)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        # Whatever is still held was not finished: make it visible again right away.
        for received, _ in list(self._held.values()):
            with contextlib.suppress(Exception):
                await self.storage.renew(received, 0)
        self._held.clear()
        self._pending.clear()
        if self._rpc_runner is not None:
            await self._rpc_runner.cleanup()
            self._rpc_runner = None
        await self.storage.close()
        log.info("durable runtime stopped")

    async def _start_rpc(self) -> None:
        # Like the Functions host's local RPC endpoint: loopback, its own port. The app's
        # client sends no key, so a token in the path is the key (see http_api.py).
        token = secrets.token_urlsafe(32)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        host, port = listener.getsockname()[:2]
        prefix = f"{RPC_PREFIX}/{{token}}"
        urls = ManagementUrls(f"http://{host}:{port}", self.hub_name, None,
                              prefix=f"{RPC_PREFIX}/{token}")
        app = web.Application(client_max_size=MAX_RPC_BODY)
        DurableHttpApi(self.manager, urls).add_routes(app.router, rpc_token_check(token),
                                                      prefix=prefix)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, listener).start()
        self._rpc_runner = runner
        self._rpc_base_url = f"{urls.base}/"

    # ---- control queue: episodes ---------------------------------------------------------

    async def _control_loop(self) -> None:
        delay = _FIRST_POLL_DELAY
        while not self._stopping.is_set():
            room = _MAX_HELD_CONTROL - sum(len(v) for v in self._pending.values())
            self._control_wake.clear()
            received = []
            if room > 0:
                received = await self._receive(self.storage.control_queue, min(32, room))
            if not received:
                await self._idle(self._control_wake, delay)
                delay = min(delay * 2, self.max_poll_interval)
                continue
            delay = _FIRST_POLL_DELAY
            for message in received:
                self._dispatch_control(message)

    def _dispatch_control(self, received: Received) -> None:
        try:
            message = ControlMessage.from_dict(received.body)
        except MessageError as exc:
            log.error("dropping a malformed control message: %s", exc)
            self._spawn(self._complete(received))
            return
        if message.event_type is EventType.TIMER_FIRED:
            fire_at = parse_time(message.event["FireAt"])
            early = (fire_at - utcnow()).total_seconds()
            if early > _TIMER_HOLD_SECONDS:
                self._spawn(self._rearm_timer(received, message, fire_at))
                return
            if early > 0:
                # Still leased (and renewed) while it waits: a crash returns it to the queue.
                self._due_timers[received.message_id] = asyncio.get_running_loop().call_later(
                    early, self._timer_due, received)
                return
        self._pending[message.instance_id].append(received)
        if message.instance_id not in self._active_instances:
            self._active_instances.add(message.instance_id)
            self._spawn(self._instance_worker(message.instance_id))

    def _timer_due(self, received: Received) -> None:
        self._due_timers.pop(received.message_id, None)
        if not self._stopping.is_set():
            self._dispatch_control(received)

    async def _rearm_timer(self, received: Received, message: ControlMessage,
                           fire_at: Any) -> None:
        # Queue visibility reaches 7 days at most; a longer timer shows up early and waits again.
        await self.storage.send_control(message, visible_at=fire_at)
        await self._complete(received)

    async def _instance_worker(self, instance_id: str) -> None:
        try:
            while self._pending.get(instance_id):
                batch = self._pending.pop(instance_id)
                async with self._episode_slots:
                    try:
                        await self._run_episode(instance_id, batch)
                    except Exception:
                        # Storage trouble or a bug: the messages reappear when their lease ends.
                        log.exception("episode of instance %s failed; its %d messages will be "
                                      "retried", instance_id, len(batch))
                        self._release(batch)
        finally:
            self._active_instances.discard(instance_id)
            self._pending.pop(instance_id, None)

    async def _run_episode(self, instance_id: str, batch: list[Received]) -> None:
        started = time.perf_counter()
        messages = [ControlMessage.from_dict(r.body) for r in batch]
        async with self.locks.hold(instance_id):
            record, etag = await self.storage.load(instance_id)
            episode = Episode(record, messages, now=utcnow(), orchestrators=self.orchestrators,
                              activities=self.activities)
            if episode.admit():
                episode.apply(await self._replay(episode))
            # Send before commit: after a crash the episode re-runs from the old record and
            # sends again; receivers drop the duplicates.
            await self._gather(self.storage.send_activity(w) for w in episode.activities)
            await self._gather(self.storage.send_control(m, at) for m, at in episode.messages)
            if episode.changed and episode.record is not None:
                try:
                    await self.storage.save(episode.record, etag)
                except ConcurrencyError:
                    log.warning("episode instance=%s lost a write race; its %d events will be "
                                "retried", instance_id, len(batch))
                    await self._gather(self.storage.renew(r, 1) for r in batch)
                    self._release(batch)
                    return
        for _, visible_at in episode.messages:
            if visible_at is not None:
                delay = (visible_at - utcnow()).total_seconds()
                asyncio.get_running_loop().call_later(max(0.0, delay), self._wake_control)
        if episode.messages:
            self._wake_control()
        if episode.activities:
            self._activity_wake.set()
        # Woken first: deleting the consumed messages need not delay the next step.
        await self._gather(self._complete(r) for r in batch)
        name = episode.record.name if episode.record is not None else "?"
        log.info("episode instance=%s orchestrator=%s events=%d outcome=%s activities=%d "
                 "messages=%d duration_ms=%.1f", instance_id, name, episode.applied,
                 episode.outcome, len(episode.activities), len(episode.messages),
                 (time.perf_counter() - started) * 1000)

    async def _replay(self, episode: Episode) -> Decision:
        record = episode.record
        assert record is not None
        function = self.orchestrators[record.name]
        context = OrchestrationTriggerConverter.decode(
            meta.Datum(type="json", value=episode.orchestrator_input()), trigger_metadata=None)
        try:
            state = await self.invoker.invoke(
                function, {self._orchestrator_params[record.name]: context},
                detail=f"instance={record.instance_id} history={len(record.history)}")
            return parse_decision(state)
        except DecisionError as exc:
            return Decision(done=False, actions=(), error=str(exc))
        except Exception as exc:  # the orchestrator raised: the SDK attached its state
            return decision_from_failure(exc)

    # ---- work-item queue: activities -----------------------------------------------------

    async def _activity_loop(self) -> None:
        delay = _FIRST_POLL_DELAY
        while not self._stopping.is_set():
            room = self.max_concurrent_activities - self._running_activities
            self._activity_wake.clear()
            received = []
            if room > 0:
                received = await self._receive(self.storage.work_queue, min(32, room))
            if not received:
                await self._idle(self._activity_wake, delay if room > 0 else
                                 self.max_poll_interval)
                delay = min(delay * 2, self.max_poll_interval)
                continue
            delay = _FIRST_POLL_DELAY
            for message in received:
                self._running_activities += 1
                self._spawn(self._run_activity(message))

    async def _run_activity(self, received: Received) -> None:
        try:
            try:
                work = ActivityWork.from_dict(received.body)
            except MessageError as exc:
                log.error("dropping a malformed activity message: %s", exc)
                await self._complete(received)
                return
            event = await self._execute_activity(work)
            await self.storage.send_control(ControlMessage(
                uuid.uuid4().hex, work.instance_id, work.execution_id, event))
            self._wake_control()
            await self._complete(received)
        except Exception:
            log.exception("activity message %s failed; it will be retried", received.message_id)
            self._release([received])
        finally:
            self._running_activities -= 1
            self._activity_wake.set()

    async def _execute_activity(self, work: ActivityWork) -> dict[str, Any]:
        function = self.activities.get(work.name)
        if function is None:
            return new_event(EventType.TASK_FAILED, utcnow(), TaskScheduledId=work.task_id,
                             Name=work.name, Reason=f"The activity function '{work.name}' is "
                             f"not registered in this app", Details="")
        try:
            value = (None if work.input is None else ActivityTriggerConverter.decode(
                meta.Datum(type="json", value=work.input), trigger_metadata=None))
            result = await self.invoker.invoke(
                function, {self._activity_params[work.name]: value},
                detail=f"instance={work.instance_id} task={work.task_id}")
            encoded = ActivityTriggerConverter.encode(result, expected_type=None).value
        except Exception as exc:
            return new_event(
                EventType.TASK_FAILED, utcnow(), TaskScheduledId=work.task_id, Name=work.name,
                Reason=f"Activity function '{work.name}' failed: {type(exc).__name__}: {exc}",
                Details="".join(traceback.format_exception(exc)[-6:]))
        return new_event(EventType.TASK_COMPLETED, utcnow(), TaskScheduledId=work.task_id,
                         Name=work.name, Result=encoded)

    # ---- leases and plumbing ---------------------------------------------------------------

    async def _receive(self, queue: str, count: int) -> list[Received]:
        try:
            received = await self.storage.receive(queue, count, self.lease_seconds)
        except Exception:
            log.exception("receiving from %s failed; retrying", queue)
            await self._idle(self._stopping, self.max_poll_interval)
            return []
        now = time.monotonic()
        for message in received:
            self._held[message.message_id] = (message, now)
        return received

    async def _lease_loop(self) -> None:
        while not self._stopping.is_set():
            await self._idle(self._stopping, self.lease_seconds / 3)
            now = time.monotonic()
            due = [m for m, at in self._held.values() if now - at > self.lease_seconds / 2]
            for message in due:
                try:
                    await self.storage.renew(message, self.lease_seconds)
                    if message.message_id in self._held:
                        self._held[message.message_id] = (message, time.monotonic())
                except Exception as exc:
                    log.warning("could not renew the lease of message %s: %s",
                                message.message_id, exc)

    async def _complete(self, received: Received) -> None:
        self._release([received])
        try:
            await self.storage.complete(received)
        except Exception as exc:
            log.warning("could not delete message %s (it will be seen again): %s",
                        received.message_id, exc)

    def _release(self, batch: list[Received]) -> None:
        for message in batch:
            self._held.pop(message.message_id, None)

    def _wake_control(self) -> None:
        self._control_wake.set()

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._work.add(task)
        task.add_done_callback(self._work_done)

    def _work_done(self, task: asyncio.Task[Any]) -> None:
        self._work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("durable work failed; its messages will be retried",
                      exc_info=task.exception())

    @staticmethod
    async def _gather(coroutines: Any) -> None:
        await asyncio.gather(*coroutines)

    @staticmethod
    async def _idle(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
