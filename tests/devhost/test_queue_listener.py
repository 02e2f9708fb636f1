"""QueueListener in-process over a real Azurite: encoding, lease renewal, shutdown, limits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

from devhost.bindings import FunctionBindings
from devhost.config import QueueOptions
from devhost.connections import StorageClients, resolve_connection
from devhost.invoker import Invoker
from devhost.queues import QueueListener, next_polling_delay


@pytest.fixture
def queue(storage_connection: str, unique_name: str,
          monkeypatch: pytest.MonkeyPatch) -> QueueClient:
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    monkeypatch.setenv("LISTENER_QUEUE", unique_name)
    client = QueueClient.from_connection_string(storage_connection, unique_name)
    client.create_queue()
    return client


def one_function(handler: Callable[..., Any]) -> Any:
    """Register `handler` as the only queue-triggered function of a fresh app."""
    app = func.FunctionApp()
    app.queue_trigger(arg_name="body", queue_name="%LISTENER_QUEUE%",
                      connection="AzureWebJobsStorage")(handler)
    [function] = app.get_functions()
    return function


async def run_listener(function: Any, options: QueueOptions, until: Callable[[], bool],
                       *, lease: float | None = None, grace: float = 5.0,
                       timeout: float = 20.0) -> None:
    """Serve `function` until `until()` holds, then stop the listener with `grace`."""
    clients = StorageClients()
    invoker = Invoker()
    bindings = FunctionBindings(function, clients=clients,
                                message_encoding=options.message_encoding)
    listener = QueueListener(bindings, clients=clients, invoker=invoker, options=options,
                             connection=resolve_connection(None), lease=lease)
    listener.start()
    deadline = time.monotonic() + timeout
    try:
        while not until():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.05)
    finally:
        await listener.stop(grace)
        invoker.shutdown(wait=False)
        await clients.close()


def test_message_encoding_none_passes_the_text_as_is(queue: QueueClient) -> None:
    seen: list[str] = []

    def handler(body: str) -> None:
        seen.append(body)

    queue.send_message("plain {text}")
    asyncio.run(run_listener(one_function(handler),
                             QueueOptions(message_encoding="none", max_polling_interval=0.2),
                             lambda: bool(seen)))
    assert seen == ["plain {text}"]


def test_lease_is_renewed_while_the_function_runs(queue: QueueClient) -> None:
    calls: list[bytes] = []
    hidden: list[bool] = []

    def handler(body: bytes) -> None:
        calls.append(body)
        time.sleep(3.0)
        # Past the 2 s lease: only renewal keeps the message hidden from others.
        hidden.append(not list(queue.peek_messages()))

    queue.send_message("YWJj")
    asyncio.run(run_listener(one_function(handler), QueueOptions(max_polling_interval=0.2),
                             lambda: bool(hidden), lease=2.0))
    assert calls == [b"abc"]
    assert hidden == [True]
    time.sleep(0.3)
    assert queue.get_queue_properties().approximate_message_count == 0


def test_shutdown_returns_unfinished_messages_at_once(queue: QueueClient) -> None:
    started = threading.Event()
    release = threading.Event()

    def handler(body: bytes) -> None:
        started.set()
        release.wait(10)

    queue.send_message("c2xvdw==")
    try:
        asyncio.run(run_listener(one_function(handler), QueueOptions(max_polling_interval=0.2),
                                 started.is_set, grace=0.2))
        [message] = list(queue.peek_messages())
        assert (message.content, message.dequeue_count) == ("c2xvdw==", 1)
    finally:
        release.set()


def test_concurrency_is_batch_size_plus_threshold(queue: QueueClient) -> None:
    lock = threading.Lock()
    running = [0]
    peak = [0]
    done: list[str] = []

    def handler(body: str) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(float(body))
        with lock:
            running[0] -= 1
            done.append(body)

    # A short and a long one per batch: when the short one ends, one runs (= threshold),
    # so the next batch of two joins it.
    for _ in range(4):
        queue.send_message("0.1")
        queue.send_message("0.6")
    options = QueueOptions(batch_size=2, new_batch_threshold=1, max_polling_interval=0.2,
                           message_encoding="none")
    asyncio.run(run_listener(one_function(handler), options, lambda: len(done) == 8))
    assert peak[0] == 3
    assert sorted(done) == ["0.1"] * 4 + ["0.6"] * 4


def test_polling_backs_off_from_100ms_to_the_maximum() -> None:
    delay, delays = 0.0, []
    for _ in range(12):
        delay = next_polling_delay(delay, 2.0)
        delays.append(delay)
    assert 0.1 <= delays[0] <= 0.12
    assert delays[-1] == 2.0
    assert all(0.1 <= d <= 2.0 for d in delays)
