"""storage.blob_records against a real Azurite: create-only writes, conditional updates with
bounded retries, one 409 when they run out; contract.timestamps' one format."""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, replace

import pytest
from azure.storage.blob import ContainerClient

from shared.contract.errors import Busy, NotFound, http_status
from shared.contract.timestamps import format_time, parse_time, utc_now
from shared.storage.blob_records import BlobRecords


@dataclass(frozen=True)
class Counter:
    name: str
    value: int = 0


@pytest.fixture
def container(storage_connection: str, unique_name: str) -> ContainerClient:
    # Not created: the first create makes it.
    return ContainerClient.from_connection_string(storage_connection, unique_name)


def records(container: ContainerClient, attempts: int = 10) -> BlobRecords[Counter]:
    return BlobRecords(container, load=lambda d: Counter(**d), dump=asdict, what="counter",
                       attempts=attempts)


def missing() -> NotFound:
    return NotFound("no such counter")


def test_create_is_create_only_and_makes_the_container(container):
    store = records(container)
    assert store.read("c.json") is None and store.list("") == []
    assert store.create("c.json", Counter("c", 1))
    assert not store.create("c.json", Counter("c", 2))
    assert store.read("c.json") == Counter("c", 1)
    assert store.create("sub/d.json", Counter("d"))
    assert store.list("") == [Counter("c", 1)]  # direct children only
    assert store.delete("c.json") and not store.delete("c.json")


def test_concurrent_updates_lose_nothing(container):
    store = records(container, attempts=50)
    store.create("c.json", Counter("c"))
    barrier = threading.Barrier(8)

    def bump() -> None:
        barrier.wait()
        for _ in range(5):
            store.update("c.json", lambda c: replace(c, value=c.value + 1), missing=missing)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.read("c.json").value == 40


def test_a_record_that_keeps_changing_ends_in_one_409(container):
    store = records(container, attempts=3)
    other = records(container)
    store.create("c.json", Counter("c"))
    tries = []

    def change(current: Counter) -> Counter:
        tries.append(current.value)
        # Someone else writes between our read and our write, every time.
        other.update("c.json", lambda c: replace(c, value=c.value + 1), missing=missing)
        return replace(current, value=-1)

    with pytest.raises(Busy) as busy:
        store.update("c.json", change, missing=missing)
    assert http_status(busy.value) == 409 and busy.value.code == "busy"
    assert len(tries) == 3 and store.read("c.json").value == 3
    with pytest.raises(NotFound):
        store.update("gone.json", change, missing=missing)
    # An unchanged record is not written.
    etag = store.read_versioned("c.json")[1]
    assert store.update("c.json", lambda c: None, missing=missing) == Counter("c", 3)
    assert store.read_versioned("c.json")[1] == etag


def test_put_creates_then_replaces(container):
    store = records(container)
    first, created = store.put("p.json", lambda current: Counter("p", 1))
    assert created and first == Counter("p", 1)
    second, created = store.put("p.json", lambda current: replace(current, value=current.value
                                                                  + 1))
    assert not created and second == Counter("p", 2) == store.read("p.json")


def test_one_timestamp_format():
    now = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now)
    assert format_time(parse_time(now)) == now
    # Records written before the format was one still read.
    assert format_time(parse_time("2025-01-31T12:00:00+00:00")) == "2025-01-31T12:00:00.000Z"
