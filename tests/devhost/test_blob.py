"""Blob triggers served by a real devhost subprocess over a real Azurite."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from devhost.blobs import BlobPath
from devhost.config import ConfigError
from devhost.testing import RunningDevHost, running_devhost

APP = Path(__file__).parent / "apps" / "blob_app"


def next_report(queue: QueueClient, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for message in queue.receive_messages(max_messages=1):
                queue.delete_message(message)
                return json.loads(base64.b64decode(message.content))
        except ResourceNotFoundError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no report within {timeout}s")


def no_report(queue: QueueClient, seconds: float) -> bool:
    time.sleep(seconds)
    return queue.get_queue_properties().approximate_message_count == 0


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {"DROP_CONTAINER": f"drop{suffix}", "GRID_CONTAINER": f"grid{suffix}",
            "BAD_CONTAINER": f"bad{suffix}", "RESULTS_QUEUE": f"results{suffix}"}


@pytest.fixture(scope="module")
def service(storage_connection: str, names: dict[str, str]) -> BlobServiceClient:
    client = BlobServiceClient.from_connection_string(storage_connection)
    for setting in ("DROP_CONTAINER", "GRID_CONTAINER", "BAD_CONTAINER"):
        client.create_container(names[setting])
    return client


@pytest.fixture(scope="module")
def results(storage_connection: str, names: dict[str, str]) -> QueueClient:
    queue = QueueClient.from_connection_string(storage_connection, names["RESULTS_QUEUE"])
    queue.create_queue()
    return queue


@pytest.fixture(scope="module")
def host(storage_connection: str, names: dict[str, str], service: BlobServiceClient,
         results: QueueClient) -> Iterator[RunningDevHost]:
    with running_devhost(script_root=APP, connection_string=storage_connection,
                         env=names) as running:
        yield running


def test_fires_once_per_new_or_changed_blob_and_not_after_a_restart(
        host: RunningDevHost, service: BlobServiceClient, results: QueueClient,
        names: dict[str, str]) -> None:
    container = names["DROP_CONTAINER"]
    blob = service.get_blob_client(container, "folder/a.txt")
    blob.upload_blob(b"first")
    report = next_report(results)
    assert report == {"function": "dropped", "name": f"{container}/folder/a.txt",
                      "length": 5, "uri": blob.url, "content": "first"}
    copy = service.get_blob_client(f"{container}-copies", "folder/a.txt")
    assert copy.download_blob().readall() == b"first"
    assert no_report(results, 2.5)

    blob.upload_blob(b"second", overwrite=True)
    assert next_report(results)["content"] == "second"

    host.stop()
    host.start()
    assert no_report(results, 2.5)
    assert "function=dropped" not in host.logs().split("devhost listening")[-1]


def test_event_grid_source_is_served_by_the_scan(
        host: RunningDevHost, service: BlobServiceClient, results: QueueClient,
        names: dict[str, str]) -> None:
    container = names["GRID_CONTAINER"]
    service.get_blob_client(container, "in/skip.csv").upload_blob(b"no")
    service.get_blob_client(container, "in/doc.txt").upload_blob(b"grid")
    assert next_report(results) == {"function": "gridded", "content": "grid"}
    assert no_report(results, 2.0)


def test_failing_blob_goes_to_the_poison_queue_after_five_tries(
        host: RunningDevHost, service: BlobServiceClient, storage_connection: str,
        names: dict[str, str]) -> None:
    container = names["BAD_CONTAINER"]
    service.get_blob_client(container, "bad.bin").upload_blob(b"x")
    poison = QueueClient.from_connection_string(storage_connection,
                                                "webjobs-blobtrigger-poison")
    deadline = time.monotonic() + 30
    found = None
    while found is None and time.monotonic() < deadline:
        try:
            for message in poison.peek_messages(max_messages=32):
                document = json.loads(base64.b64decode(message.content))
                if document["ContainerName"] == container:
                    found = document
        except ResourceNotFoundError:
            pass
        time.sleep(0.2)
    assert found is not None and found["BlobName"] == "bad.bin"
    tries = [line for line in host.logs().splitlines()
             if "function=broken" in line and "outcome=Failed" in line]
    assert len(tries) == 5


def test_blob_path_patterns() -> None:
    path = BlobPath.parse("drop/in/{stem}.{ext}")
    assert (path.container, path.prefix) == ("drop", "in/")
    assert path.match("in/a.b.csv") == {"stem": "a", "ext": "b.csv"}
    assert path.match("other/a.csv") is None
    assert BlobPath.parse("drop/{name}").match("x/y/z") == {"name": "x/y/z"}
    for bad in ("{c}/{name}", "drop", "drop/{a}{a}"):
        with pytest.raises(ConfigError):
            BlobPath.parse(bad)
