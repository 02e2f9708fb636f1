"""Queue triggers with the Functions host's semantics.

Polling backs off from 100 ms to `maxPollingInterval` while the queue is empty; a new
batch of `batchSize` is fetched whenever no more than `newBatchThreshold` messages are
running. Each message is received with a lease (10 minutes) renewed at half-time while
its function runs; it is deleted on success, made visible again after
`visibilityTimeout` on failure, and copied to `<queue>-poison` (original text) and deleted
once its dequeue count reaches `maxDequeueCount`. A message stops counting against
`newBatchThreshold` when its function returns: the delete (or update) that settles it runs
meanwhile, so it never holds up the next receive.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.functions import queue as func_queue
from azure.storage.queue import QueueMessage as SdkMessage

from devhost.bindings import FunctionBindings, expand_settings, json_properties
from devhost.config import QueueOptions
from devhost.connections import StorageClients
from devhost.invoker import Invoker

log = logging.getLogger("devhost.queues")

MIN_POLLING_INTERVAL = 0.1
# The Functions host's lease, which no setting changes: a killed host's messages come back
# after it, unless the app recovers them sooner itself.
DEFAULT_LEASE = 600.0


def next_polling_delay(previous: float, maximum: float) -> float:
    """Randomized exponential back-off from 100 ms up to `maximum`."""
    grown = max(MIN_POLLING_INTERVAL, previous * 2) * random.uniform(0.8, 1.2)
    return min(maximum, max(MIN_POLLING_INTERVAL, grown))


def decode_body(content: str, encoding: str) -> bytes:
    """The message text as bytes: base64-decoded unless messageEncoding is 'none'."""
    if encoding == "none":
        return content.encode("utf-8")
    return base64.b64decode(content, validate=True)


@dataclass
class _InFlight:
    """A received message while its function runs."""

    message: SdkMessage
    pop_receipt: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    renewal: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None
    settled: bool = False


class QueueListener:
    """Polls one queue for one function and runs its messages."""

    def __init__(self, bindings: FunctionBindings, *, clients: StorageClients,
                 invoker: Invoker, options: QueueOptions, connection: str,
                 lease: float | None = None) -> None:
        self.bindings = bindings
        self.name = bindings.name
        self.queue_name = expand_settings(bindings.trigger["queueName"]).lower()
        self.poison_name = f"{self.queue_name}-poison"
        self._parameter = bindings.trigger["name"]
        self._annotation = bindings.annotation(self._parameter)
        self._clients = clients
        self._invoker = invoker
        self._options = options
        self._connection = connection
        self._lease = lease or DEFAULT_LEASE
        self._queue = clients.queue(connection, self.queue_name)
        self._running: dict[str, _InFlight] = {}  # functions running
        self._settling: set[asyncio.Task[None]] = set()  # returned, being deleted or updated
        self._slot = asyncio.Event()
        self._stopping = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling (on the running event loop)."""
        self._poller = asyncio.create_task(self._poll(), name=f"queue:{self.name}")

    async def stop(self, grace: float) -> None:
        """Stop polling; let running messages finish for `grace` s, then return the rest."""
        self._stopping.set()
        if self._poller is not None:
            await self._poller
        tasks = [entry.task for entry in self._running.values() if entry.task is not None]
        tasks += self._settling
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for entry in list(self._running.values()):
            if entry.task is not None and not entry.task.done():
                entry.task.cancel()
                await asyncio.gather(entry.task, return_exceptions=True)
                await self._release(entry)

    async def _poll(self) -> None:
        delay = 0.0
        threshold = self._options.new_batch_threshold
        while not self._stopping.is_set():
            if len(self._running) > threshold:
                self._slot.clear()
                await _wait_either(self._slot, self._stopping)
                continue
            try:
                messages = await self._receive()
            except AzureError as exc:
                log.warning("queue=%s receive failed: %s", self.queue_name, exc)
                messages = []
            if messages:
                delay = 0.0
                for message in messages:
                    self._spawn(message)
                continue
            delay = next_polling_delay(delay, self._options.max_polling_interval)
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass

    async def _receive(self) -> list[SdkMessage]:
        pages = self._queue.receive_messages(
            messages_per_page=self._options.batch_size,
            visibility_timeout=math.ceil(self._lease),
        ).by_page()
        try:
            page = await pages.__anext__()
        except StopAsyncIteration:
            return []
        except ResourceNotFoundError:
            # The host treats a queue that does not exist yet as an empty one.
            return []
        return [message async for message in page]

    def _spawn(self, message: SdkMessage) -> None:
        entry = _InFlight(message=message, pop_receipt=message.pop_receipt)
        self._running[message.id] = entry
        entry.renewal = asyncio.get_running_loop().call_later(
            self._lease / 2, self._schedule_renewal, entry)
        entry.task = asyncio.create_task(self._process(entry))
        self._settling.add(entry.task)
        entry.task.add_done_callback(self._settling.discard)
        entry.task.add_done_callback(lambda _: self._finished(message.id))

    def _finished(self, message_id: str) -> None:
        self._running.pop(message_id, None)
        self._slot.set()

    def _schedule_renewal(self, entry: _InFlight) -> None:
        asyncio.create_task(self._renew(entry))

    async def _renew(self, entry: _InFlight) -> None:
        async with entry.lock:
            if entry.settled:
                return
            try:
                updated = await self._queue.update_message(
                    entry.message.id, pop_receipt=entry.pop_receipt,
                    visibility_timeout=math.ceil(self._lease))
            except AzureError as exc:
                log.warning("queue=%s id=%s lease renewal failed: %s",
                            self.queue_name, entry.message.id, exc)
                return
            entry.pop_receipt = updated.pop_receipt
            entry.renewal = asyncio.get_running_loop().call_later(
                self._lease / 2, self._schedule_renewal, entry)

    async def _settle(self, entry: _InFlight) -> None:
        """Stop renewing: from here on the pop receipt does not change."""
        async with entry.lock:
            entry.settled = True
            if entry.renewal is not None:
                entry.renewal.cancel()

    async def _process(self, entry: _InFlight) -> None:
        message = entry.message
        try:
            await self._try(entry)
        except AzureError as exc:
            log.warning("queue=%s id=%s could not be settled (%s); it will be delivered "
                        "again when its lease ends", self.queue_name, message.id, exc)

    async def _try(self, entry: _InFlight) -> None:
        message = entry.message
        count = message.dequeue_count or 1
        try:
            body = decode_body(message.content, self._options.message_encoding)
        except (binascii.Error, ValueError):
            await self._settle(entry)
            log.error("queue=%s id=%s is not valid base64 (messageEncoding=base64); "
                      "moving it to %s", self.queue_name, message.id, self.poison_name)
            await self._poison(entry)
            return
        if count > self._options.max_dequeue_count:
            await self._settle(entry)
            await self._poison(entry)
            return
        succeeded = await self._run(entry, body, count)
        self._finished(message.id)  # its slot is free: the delete below need not hold it
        await self._settle(entry)
        if succeeded:
            await self._queue.delete_message(message.id, entry.pop_receipt)
        elif count >= self._options.max_dequeue_count:
            await self._poison(entry)
        else:
            await self._queue.update_message(
                message.id, pop_receipt=entry.pop_receipt,
                visibility_timeout=math.ceil(self._options.visibility_timeout))

    async def _run(self, entry: _InFlight, body: bytes, count: int) -> bool:
        message = entry.message
        data: dict[str, Any] = {
            **json_properties(body),
            "QueueTrigger": body.decode("utf-8", errors="replace"),
            "Id": message.id, "DequeueCount": count, "PopReceipt": entry.pop_receipt,
            "InsertionTime": message.inserted_on, "ExpirationTime": message.expires_on,
            "NextVisibleTime": message.next_visible_on,
        }
        return await self.bindings.run_trigger(
            self._invoker, data, self._parameter,
            self._argument(message, body, count, entry.pop_receipt),
            detail=f"queue={self.queue_name} message={message.id} dequeue_count={count}")

    def _argument(self, message: SdkMessage, body: bytes, count: int, receipt: str) -> Any:
        if self._annotation is bytes:
            return body
        if self._annotation is str:
            return body.decode("utf-8")
        return func_queue.QueueMessage(
            id=message.id, body=body, dequeue_count=count, pop_receipt=receipt,
            expiration_time=message.expires_on, insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
        )

    async def _poison(self, entry: _InFlight) -> None:
        message = entry.message
        poison = await self._clients.ensure_queue(self._connection, self.poison_name)
        await poison.send_message(message.content)
        await self._queue.delete_message(message.id, entry.pop_receipt)
        log.warning("queue=%s id=%s moved to %s after %s tries", self.queue_name, message.id,
                    self.poison_name, message.dequeue_count)

    async def _release(self, entry: _InFlight) -> None:
        """Make an unfinished message visible again at once (shutdown)."""
        await self._settle(entry)
        try:
            await self._queue.update_message(entry.message.id, pop_receipt=entry.pop_receipt,
                                             visibility_timeout=0)
            log.info("queue=%s id=%s returned to the queue at shutdown",
                     self.queue_name, entry.message.id)
        except AzureError as exc:
            log.warning("queue=%s id=%s could not be returned (%s); it reappears when its "
                        "lease ends", self.queue_name, entry.message.id, exc)


async def _wait_either(first: asyncio.Event, second: asyncio.Event) -> None:
    waiters = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        waiter.cancel()
