"""Queue triggers served by a real devhost subprocess over a real Azurite."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from devhost.testing import RunningDevHost, running_devhost

APP = Path(__file__).parent / "apps" / "queue_app"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def wait_for_message(queue: QueueClient, timeout: float = 20.0) -> QueueMessage:
    """The next message on `queue` (deleted), waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for message in queue.receive_messages(max_messages=1):
                queue.delete_message(message)
                return message
        except ResourceNotFoundError:
            pass  # poison queues appear with their first message
        time.sleep(0.1)
    raise AssertionError(f"no message on {queue.queue_name} within {timeout}s")


def message_count(queue: QueueClient) -> int:
    return queue.get_queue_properties().approximate_message_count


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {f"{kind.upper()}_QUEUE": f"{kind}{suffix}"
            for kind in ("work", "results", "flaky", "doomed")}


@pytest.fixture(scope="module")
def queues(storage_connection: str, names: dict[str, str]) -> dict[str, QueueClient]:
    clients = {}
    for setting, name in names.items():
        kind = setting.removesuffix("_QUEUE").lower()
        clients[kind] = QueueClient.from_connection_string(storage_connection, name)
        clients[kind].create_queue()
        clients[f"{kind}-poison"] = QueueClient.from_connection_string(
            storage_connection, f"{name}-poison")
    return clients


@pytest.fixture(scope="module")
def host(storage_connection: str, names: dict[str, str],
         queues: dict[str, QueueClient]) -> Iterator[RunningDevHost]:
    with running_devhost(script_root=APP, connection_string=storage_connection,
                         env=names) as running:
        yield running


def test_message_arrives_with_its_properties_and_is_deleted(
        host: RunningDevHost, queues: dict[str, QueueClient]) -> None:
    sent = queues["work"].send_message(b64('{"job": 1}'))
    result = wait_for_message(queues["results"])
    report = json.loads(base64.b64decode(result.content))
    assert report["id"] == sent.id
    assert report["body"] == '{"job": 1}'
    assert report["dequeue_count"] == 1
    assert report["pop_receipt"] is True
    assert report["insertion_time"] < report["next_visible"]
    assert report["expiration_time"] > report["insertion_time"]
    deadline = time.monotonic() + 5
    while message_count(queues["work"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert message_count(queues["work"]) == 0


def test_failing_message_is_retried_with_its_dequeue_count(
        host: RunningDevHost, queues: dict[str, QueueClient]) -> None:
    started = time.monotonic()
    sent = queues["flaky"].send_message(b64("retry me"))
    report = json.loads(base64.b64decode(wait_for_message(queues["results"]).content))
    assert (report["id"], report["dequeue_count"]) == (sent.id, 2)
    # visibilityTimeout (1 s) passed between the failed try and the retry.
    assert time.monotonic() - started >= 1.0
    failed = [line for line in host.logs().splitlines() if "outcome=Failed" in line]
    assert any(f"message={sent.id} dequeue_count=1" in line for line in failed)


def test_poison_after_max_dequeue_count_keeps_the_original_body(
        host: RunningDevHost, queues: dict[str, QueueClient]) -> None:
    sent = queues["doomed"].send_message(b64("hopeless"))
    poisoned = wait_for_message(queues["doomed-poison"], timeout=30)
    assert poisoned.content == b64("hopeless")
    logs = host.logs()
    for count in (1, 2, 3):
        assert f"message={sent.id} dequeue_count={count}" in logs
    assert f"message={sent.id} dequeue_count=4" not in logs
    assert message_count(queues["doomed"]) == 0


def test_undecodable_message_goes_to_poison_without_invoking(
        host: RunningDevHost, queues: dict[str, QueueClient]) -> None:
    sent = queues["work"].send_message("not base64 at all!")
    poisoned = wait_for_message(queues["work-poison"])
    assert poisoned.content == "not base64 at all!"
    assert f"message={sent.id}" not in host.logs()
