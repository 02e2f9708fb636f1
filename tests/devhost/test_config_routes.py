"""host.json parsing, route templates, keys and start-up refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devhost.config import ConfigError, HostConfig, QueueOptions, parse_timespan
from devhost.keys import KeyRing
from devhost.routes import RouteTemplate

REPO = Path(__file__).resolve().parents[2]


def test_timespans() -> None:
    assert parse_timespan("00:00:02", "x") == 2
    assert parse_timespan("1.02:03:04.5", "x") == 86400 + 7384.5
    for bad in ("2s", "00:61:00", "", "-1"):
        with pytest.raises(ConfigError):
            parse_timespan(bad, "x")


def test_host_json_sections_and_defaults() -> None:
    config = HostConfig.from_json({
        "functionTimeout": "-1",
        "extensions": {"http": {"routePrefix": "/v1/"}, "durableTask": {"hubName": "hub"},
                       "queues": {"BatchSize": 8, "maxPollingInterval": "00:00:00.5",
                                  "messageEncoding": "None"}},
    })
    assert (config.route_prefix, config.hub_name, config.function_timeout) == ("v1", "hub", None)
    assert config.queues == QueueOptions(max_polling_interval=0.5, batch_size=8,
                                         new_batch_threshold=4, message_encoding="none")
    assert HostConfig.from_json({}) == HostConfig()


@pytest.mark.parametrize("queues", [
    {"batchSize": 33}, {"batchSize": "16"}, {"maxDequeueCount": 0},
    {"maxPollingInterval": "00:00:00.05"}, {"messageEncoding": "utf8"},
])
def test_bad_queue_settings_are_refused(queues: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        HostConfig.from_json({"extensions": {"queues": queues}})


def test_app_settings_override_host_json(tmp_path: Path) -> None:
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"extensions": {"queues": {"batchSize": 16,
                                                               "maxPollingInterval": "00:00:02"}}}))
    config = HostConfig.load(host_json, {
        "AzureFunctionsJobHost__extensions__queues__batchSize": "1",
        # Names match case-insensitively, as in the Functions host; new sections are created.
        "azurefunctionsjobhost__Extensions__QUEUES__newBatchThreshold": " 3 ",
        "AzureFunctionsJobHost__extensions__durableTask__hubName": "other",
        "AzureFunctionsJobHost__functionTimeout": "00:10:00",
        "UNRELATED": "x",
    })
    assert config.queues == QueueOptions(max_polling_interval=2.0, batch_size=1,
                                         new_batch_threshold=3)
    assert (config.hub_name, config.function_timeout) == ("other", 600.0)
    assert HostConfig.load(tmp_path / "missing.json", {
        "AzureFunctionsJobHost__extensions__http__routePrefix": "v2"}).route_prefix == "v2"


@pytest.mark.parametrize("setting, value", [
    ("AzureFunctionsJobHost__extensions__queues__batchSize", "64"),
    ("AzureFunctionsJobHost__extensions__queues__batchSize", "many"),
    ("AzureFunctionsJobHost__extensions__queues____batchSize", "1"),
    ("AzureFunctionsJobHost__version__major", "2"),
])
def test_bad_host_json_overrides_are_refused(setting: str, value: str) -> None:
    with pytest.raises(ConfigError):
        HostConfig.load(REPO / "host.json", {setting: value})


def test_route_parameters_and_constraints() -> None:
    route = RouteTemplate.parse("items/{id:int:min(1)}/{*rest}", "api")
    assert route.match("/api/items/5") == {"id": "5"}
    assert route.match("/API/Items/5/a/b") == {"id": "5", "rest": "a/b"}
    assert route.match("/api/items/0") is None
    assert route.match("/api/items/x") is None
    assert route.match("/items/5") is None
    optional = RouteTemplate.parse("files/{name?}")
    assert optional.match("/files") == {}
    assert optional.match("/files/a") == {"name": "a"}
    default = RouteTemplate.parse("v/{kind=all}", "api")
    assert default.match("/api/v") == {"kind": "all"}
    complex_segment = RouteTemplate.parse("{stem}.{ext:alpha}", "")
    assert complex_segment.match("/report.csv") == {"stem": "report", "ext": "csv"}
    guid = RouteTemplate.parse("jobs/{id:guid}", "api")
    assert guid.match("/api/jobs/6f1c2d4e-0000-4000-8000-000000000000") is not None
    assert guid.match("/api/jobs/nope") is None


def test_literal_segments_take_precedence() -> None:
    routes = sorted([RouteTemplate.parse("items/{id}", "api"),
                     RouteTemplate.parse("items/{*rest}", "api"),
                     RouteTemplate.parse("items/special", "api")],
                    key=lambda r: r.precedence)
    assert [r.template for r in routes] == ["items/special", "items/{id}", "items/{*rest}"]


@pytest.mark.parametrize("template", ["a/{*rest}/b", "a/{id:nosuch}", "a//b", "a/{1x}"])
def test_bad_route_templates_are_refused(template: str) -> None:
    with pytest.raises(ConfigError):
        RouteTemplate.parse(template, "api")


def test_key_levels() -> None:
    keys = KeyRing(function_key="f", master_key="m")
    assert keys.allows("anonymous", None)
    assert keys.allows("function", "f") and keys.allows("function", "m")
    assert not keys.allows("function", None) and not keys.allows("function", "x")
    assert keys.allows("admin", "m") and not keys.allows("admin", "f")
    assert KeyRing.from_secrets(keys.to_secrets()) == keys


def run_devhost(script_root: Path, connection: str,
                extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AzureWebJobsStorage": connection, "PYTHONPATH": str(REPO),
           "DEVHOST_STATE_DIR": str(script_root / "state"), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "devhost", "--script-root", str(script_root),
                           "--port", "0"], env=env, capture_output=True, text=True, timeout=60)


def test_bad_host_json_stops_start_up_with_a_message(tmp_path: Path,
                                                     storage_connection: str) -> None:
    (tmp_path / "host.json").write_text(json.dumps(
        {"extensions": {"queues": {"batchSize": 64}}}))
    (tmp_path / "function_app.py").write_text("import azure.functions as func\n"
                                              "app = func.FunctionApp()\n")
    result = run_devhost(tmp_path, storage_connection)
    assert result.returncode == 2
    assert "queues.batchSize must be between 1 and 32" in result.stderr


def test_unsupported_binding_stops_start_up_with_a_message(tmp_path: Path,
                                                           storage_connection: str) -> None:
    (tmp_path / "function_app.py").write_text(
        "import azure.functions as func\n"
        "app = func.FunctionApp()\n"
        "@app.route(route='r')\n"
        "@app.table_input(arg_name='t', table_name='x', connection='AzureWebJobsStorage')\n"
        "def r(req: func.HttpRequest, t: str) -> str:\n"
        "    return t\n")
    result = run_devhost(tmp_path, storage_connection)
    assert result.returncode == 2
    assert "binding 't' (table)" in result.stderr


def test_an_app_that_fails_to_import_stops_start_up_with_its_message(
        tmp_path: Path, storage_connection: str) -> None:
    (tmp_path / "function_app.py").write_text("raise RuntimeError('no such role: x')\n")
    result = run_devhost(tmp_path, storage_connection)
    assert result.returncode == 2
    assert "cannot import app module 'function_app': RuntimeError: no such role: x" in (
        result.stderr)
