"""Durable orchestrations through a real devhost process: client binding, kill and resume."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devhost.testing import RunningDevHost, running_devhost

APP_SOURCE = Path(__file__).parent / "apps" / "durable_app.py"


def call(url: str, *, method: str = "GET", body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_status(url: str, until: tuple[str, ...], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        _, status = call(url)
        if status and status.get("runtimeStatus") in until:
            return status
        assert time.monotonic() < deadline, f"still {status}"
        time.sleep(0.2)


@pytest.fixture
def script_root(tmp_path: Path, unique_name: str) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    shutil.copy(APP_SOURCE, root / "durable_app.py")
    (root / "host.json").write_text(json.dumps({
        "version": "2.0",
        "extensions": {"durableTask": {"hubName": unique_name}},
    }))
    return root


@pytest.fixture
def host(script_root: Path, storage_connection: str, tmp_path: Path) -> Iterator[RunningDevHost]:
    markers = tmp_path / "markers"
    markers.mkdir()
    with running_devhost("durable_app", script_root=script_root,
                         connection_string=storage_connection,
                         env={"DURABLE_TEST_MARKERS": str(markers)}) as running:
        yield running


def start(host: RunningDevHost, name: str, payload: Any) -> dict[str, str]:
    status, links = call(f"{host.url}/api/start/{name}?code={host.key}", method="POST",
                         body=json.dumps(payload).encode())
    assert status == 202, links
    return links


def test_http_starter_and_check_status_links(host: RunningDevHost) -> None:
    links = start(host, "approval", None)
    assert links["statusQueryGetUri"].startswith(host.url)
    wait_status(links["statusQueryGetUri"], ("Running",), 20)
    send = links["sendEventPostUri"].replace("{eventName}", "approve")
    assert call(send, method="POST", body=json.dumps("bob").encode())[0] == 202
    status = wait_status(links["statusQueryGetUri"], ("Completed", "Failed"), 30)
    assert status["output"] == {"approved_by": "bob", "child": 6}
    assert "episode instance=" in host.logs()


def test_killed_devhost_resumes_the_orchestration(host: RunningDevHost,
                                                  tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    links = start(host, "slow_fan", 3)
    deadline = time.monotonic() + 20
    while len(list(markers.iterdir())) < 3:
        assert time.monotonic() < deadline, host.logs()[-3000:]
        time.sleep(0.1)
    host.kill()  # mid-activity: their messages are leased by a dead process
    host.start()
    status = wait_status(links["statusQueryGetUri"], ("Completed", "Failed"), 45)
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == [0, 1, 2]
    # Activities are at-least-once: the interrupted ones ran again after the restart.
    assert len(list(markers.iterdir())) >= 6
