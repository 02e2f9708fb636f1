"""The Azurite launcher: a location is never served by two Azurites."""

from __future__ import annotations

from pathlib import Path

import psutil
from azure.storage.queue import QueueServiceClient

from devhost.azurite import Azurite


def test_an_orphaned_azurite_is_taken_over_and_stopped(tmp_path: Path) -> None:
    orphan = Azurite(location=tmp_path).start()
    assert orphan.process is not None
    pid = orphan.process.pid
    # A new host (the old one was killed without stopping it) reuses it.
    successor = Azurite(location=tmp_path).start()
    assert successor.adopted_pid == pid and successor.process is None
    assert successor.connection_string == orphan.connection_string
    service = QueueServiceClient.from_connection_string(successor.connection_string)
    service.create_queue("adopted")
    successor.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "azurite.json").exists()
    orphan.stop()


def test_a_stale_record_starts_a_fresh_azurite(tmp_path: Path) -> None:
    (tmp_path / "azurite.json").write_text(
        '{"pid": 999999, "blob_port": 1, "queue_port": 2, "table_port": 3}')
    with Azurite(location=tmp_path) as azurite:
        assert azurite.process is not None and azurite.adopted_pid is None
