"""Attempt logs against a real Azurite: failures at once, successes batched per job."""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.contract import layout
from shared.scoring.attempt_logs import APPEND_BLOCK_LIMIT, AttemptLogs, _blocks, entry_header
from shared.storage.account import StorageAccount


@pytest.fixture
def state(storage_connection, unique_name):
    container = StorageAccount(connection_string=storage_connection).blob_service() \
        .get_container_client(unique_name)
    container.create_container()
    return container


def _names(state, prefix: str) -> list[str]:
    return sorted(state.list_blob_names(name_starts_with=prefix))


def test_failed_attempt_log_is_written_at_once(state):
    logs = AttemptLogs(state, flush_seconds=60)
    logs.write_failed("job1", 3, 2, "Traceback ...\nValueError: boom\n")
    assert state.download_blob(layout.attempt_log("job1", 3, 2)).readall() == \
        b"Traceback ...\nValueError: boom\n"
    logs.close()


def test_successes_are_buffered_then_appended_in_order_to_one_blob_per_job(state):
    logs = AttemptLogs(state, flush_seconds=60, host="w1")
    logs.add_succeeded("job1", 0, 1, "batch of 10 files")
    logs.add_succeeded("job1", 1, 3, "second\n")
    logs.add_succeeded("job2", 0, 1, "other job\n")
    logs.add_succeeded("job1", 2, 1, "")  # nothing printed: nothing stored
    assert _names(state, "job1/") == []  # no round trip per mini-batch
    logs.flush()
    logs.add_succeeded("job1", 4, 1, "later\n")
    logs.close()
    assert _names(state, "job1/") == [layout.succeeded_log("job1", "w1")]
    text = state.download_blob(layout.succeeded_log("job1", "w1")).readall().decode()
    assert text == (entry_header(0, 1) + "batch of 10 files\n" + entry_header(1, 3)
                    + "second\n" + entry_header(4, 1) + "later\n")
    assert state.download_blob(layout.succeeded_log("job2", "w1")).readall().decode() == \
        entry_header(0, 1) + "other job\n"


def test_background_flush_within_the_interval(state):
    logs = AttemptLogs(state, flush_seconds=0.1, host="w2")
    logs.add_succeeded("job3", 7, 1, "printed\n")
    deadline = time.monotonic() + 10
    while not _names(state, "job3/") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _names(state, "job3/") == [layout.succeeded_log("job3", "w2")]
    logs.close()


def test_entries_survive_a_failed_flush(storage_connection, unique_name):
    missing = StorageAccount(connection_string=storage_connection).blob_service() \
        .get_container_client(unique_name)
    logs = AttemptLogs(missing, flush_seconds=60, host="w3")
    logs.add_succeeded("job4", 0, 1, "kept\n")
    logs.flush()  # the container does not exist: a warning, entries stay buffered
    with pytest.raises(ResourceNotFoundError):
        missing.get_blob_client(layout.succeeded_log("job4", "w3")).get_blob_properties()
    missing.create_container()
    logs.close()
    assert missing.download_blob(layout.succeeded_log("job4", "w3")).readall().decode() == \
        entry_header(0, 1) + "kept\n"


def test_workers_get_distinct_blobs(state):
    first, second = AttemptLogs(state), AttemptLogs(state)
    assert first.host != second.host
    first.close()
    second.close()


def test_blocks_respect_the_append_limit():
    big = b"x" * (APPEND_BLOCK_LIMIT + 10)
    blocks = _blocks([b"a\n", big, b"b\n"])
    assert all(len(block) <= APPEND_BLOCK_LIMIT for block in blocks)
    assert b"".join(blocks) == b"a\n" + big + b"b\n"
