"""`batchfn studio`: the console's URL carries the key in its fragment, and nowhere else."""

from __future__ import annotations

import threading
import webbrowser
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from batchfn.cli import cli
from batchfn.cli.studio import studio_url

KEY = "k3y/with+odd=chars&more"


class _Studio(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200 if self.path == "/api/studio/" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    """A local server that serves /api/studio/ (and nothing else)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Studio)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _run(*args: str):
    return CliRunner().invoke(cli, ["studio", *args])


def test_url_holds_key_and_view_in_the_fragment_only():
    url = studio_url("https://app.example.net/", KEY, "job-1")
    parts = urlsplit(url)
    assert parts.path == "/api/studio/" and not parts.query
    assert parse_qs(parts.fragment) == {"key": [KEY], "view": ["/jobs/job-1"]}
    assert studio_url("http://h", None) == "http://h/api/studio/"


def test_opens_the_browser_and_never_prints_the_key(site, monkeypatch):
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    result = _run("--url", site, "--key", KEY, "--job", "j1")
    assert result.exit_code == 0, result.output
    assert parse_qs(urlsplit(opened[0]).fragment) == {"key": [KEY], "view": ["/jobs/j1"]}
    assert KEY not in result.output and f"{site}/api/studio/" in result.output


def test_no_browser_prints_the_url_with_the_key(site):
    result = _run("--url", site, "--key", KEY, "--no-browser")
    assert result.exit_code == 0
    assert result.stdout.strip() == studio_url(site, KEY)


def test_without_a_browser_it_says_what_to_do_without_the_key(site, monkeypatch):
    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    result = _run("--url", site, "--key", KEY)
    assert result.exit_code == 1
    assert "--no-browser" in result.output and KEY not in result.output


def test_a_target_that_does_not_serve_the_console_is_an_error(site):
    result = _run("--url", site + "/other", "--key", KEY, "--no-browser")
    assert result.exit_code == 1 and "answered 404" in result.output
    result = _run("--url", "http://127.0.0.1:9", "--key", KEY, "--no-browser")
    assert result.exit_code == 1 and "cannot reach" in result.output
