"""API fuzzing: schemathesis against a devhost's /api/openapi.json, bounded in time.

Every phase runs (the schema's examples, the coverage phase's boundary and negative values,
random positive and negative requests, stateful sequences) against the real app on devhost
over an Azurite of its own, so what the fuzzer creates never meets another test. The run
must answer no 5xx at all, and every 4xx in the JSON error shape
`{"error": {"code": "...", "message": "..."}}` (save the HTTP server's own refusal of a
request line over its 8 KB limit, which no route sees: those are counted apart). The tally
(requests by status, operations) is printed and written to test-artifacts/api-fuzzing.json.

BATCHFN_FUZZ_SECONDS sets the time budget (default 45); BATCHFN_FUZZ_SEED replays a run.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from devhost.azurite import Azurite
from devhost.testing import running_devhost

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "test-artifacts" / "api-fuzzing.json"
FUZZ_SECONDS = int(os.environ.get("BATCHFN_FUZZ_SECONDS", "45"))
# aiohttp (devhost's server) reads request lines of up to 8,190 bytes, as Kestrel (the
# Functions host's) reads 8 KB: a longer line is refused by the server, in its own plain-text
# form, before any route is matched. Such answers are the front end's, not the app's.
REQUEST_LINE_LIMIT = 8190


def beyond_the_request_line_limit(uri: str) -> bool:
    """Whether a request for `uri` has a request line the HTTP server refuses unread."""
    parts = urlsplit(uri)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    # "METHOD target HTTP/1.1": the longest method the API uses is DELETE.
    return len(f"DELETE {target} HTTP/1.1".encode()) > REQUEST_LINE_LIMIT - 8


def is_error_shape(body: bytes) -> bool:
    """`{"error": {"code": str, "message": str, ...}}`."""
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(
        error.get("message"), str)


def interactions(report: Path) -> list[tuple[str, str, int, bytes]]:
    """(operation, request URI, status, body) of every request in an NDJSON report."""
    found = []
    with report.open() as lines:
        for line in lines:
            event = json.loads(line)
            finished = event.get("ScenarioFinished")
            if not finished:
                continue
            label = finished["recorder"]["label"]
            for interaction in finished["recorder"].get("interactions", {}).values():
                response = interaction.get("response")
                if response is None:  # the request itself failed (a network error)
                    found.append((label, interaction["request"]["uri"], 0, b""))
                    continue
                content = response.get("content") or {}
                body = (base64.b64decode(content["$base64"]) if "$base64" in content
                        else str(content.get("text", "")).encode())
                found.append((label, interaction["request"]["uri"], response["status_code"],
                              body))
    return found


@pytest.fixture
def fuzzed_host(tmp_path: Path):
    with Azurite(location=tmp_path / "azurite").start() as azurite:
        with running_devhost("function_app", script_root=REPO,
                             connection_string=azurite.connection_string,
                             env={"BATCHFN_WORK_DIR": str(tmp_path / "work")}) as host:
            yield host


def test_fuzzing_the_api_finds_no_server_error(fuzzed_host, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    reports = tmp_path / "reports"
    command = [sys.executable, "-m", "schemathesis.cli", "run",
               f"{fuzzed_host.url}/api/openapi.json",
               "--header", f"x-functions-key: {fuzzed_host.key}",
               "--checks", "not_a_server_error", "--max-time", str(FUZZ_SECONDS),
               # One worker: Python 3.11's ast.parse, which hypothesis calls while it builds
               # strategies, is not thread-safe ("AST constructor recursion depth mismatch").
               "--workers", "1", "--request-timeout", "30", "--no-color",
               "--report", "ndjson", "--report-dir", str(reports)]
    if os.environ.get("BATCHFN_FUZZ_SEED"):
        command += ["--seed", os.environ["BATCHFN_FUZZ_SEED"]]
    started = time.monotonic()
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                         timeout=FUZZ_SECONDS + 240)
    elapsed = time.monotonic() - started
    (report,) = reports.glob("*.ndjson")
    seen = interactions(report)
    statuses = Counter(status for _, _, status, _ in seen)
    server_errors = [(op, uri, status) for op, uri, status, _ in seen if status >= 500 or
                     status == 0]
    front_end = [uri for _, uri, status, body in seen
                 if status == 400 and not is_error_shape(body)
                 and beyond_the_request_line_limit(uri)]
    unshaped = [(op, uri, status, body[:200]) for op, uri, status, body in seen
                if 400 <= status < 500 and not is_error_shape(body) and uri not in front_end]
    tally: dict[str, Any] = {
        "requests": len(seen), "operations": len({op for op, _, _, _ in seen}),
        "by_status": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": len(server_errors), "4xx_not_json_error": len(unshaped),
        "request_line_too_long": len(front_end),
        "seconds": round(elapsed, 1), "load_average": round(os.getloadavg()[0], 2),
        "seed": next((line.split()[-1] for line in run.stdout.splitlines()
                      if line.strip().startswith("Seed:")), None),
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(tally, indent=2) + "\n")
    with capsys.disabled():
        print(f"\nAPI fuzzing: {tally['requests']} requests over {tally['operations']} "
              f"operations in {tally['seconds']} s (load {tally['load_average']}), by status "
              f"{tally['by_status']}; 5xx: {tally['server_errors']}, 4xx outside the JSON "
              f"error shape: {tally['4xx_not_json_error']}, request lines over the server's limit: "
              f"{tally['request_line_too_long']} (seed {tally['seed']})")
    assert not server_errors, (server_errors[:10], run.stdout[-6000:])
    assert not unshaped, unshaped[:10]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # Bounded and broad: every documented operation was called, several times on average (a
    # count, not a rate: how many requests fit the time budget depends on the machine's load).
    assert tally["operations"] >= 25 and tally["requests"] >= 3 * tally["operations"], tally
