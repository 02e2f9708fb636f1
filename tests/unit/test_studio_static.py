"""The studio blueprint serves the console's files, and nothing else, with a strict policy."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

import functions.studio as studio_module
from functions.studio import CONTENT_SECURITY_POLICY, studio_files

serve = studio_module.studio._function.get_user_function()
BASE = "http://localhost:7071/api/studio/"


def _get(path: str, url: str | None = None, headers: dict[str, str] | None = None):
    request = func.HttpRequest("GET", url or BASE + path, headers=headers or {},
                               route_params={"path": path} if path else {}, body=b"")
    return serve(request)


def test_the_console_and_its_modules_are_served_with_the_policy():
    page = _get("")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="js/main.js">' in page.get_body()
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    for path in ("js/main.js", "js/views/job.js", "studio.css", "favicon.svg"):
        answer = _get(path)
        assert answer.status_code == 200, path
        assert answer.get_body() == (studio_module.STUDIO_DIR / path).read_bytes()
    assert _get("js/api.js").headers["Content-Type"] == "text/javascript; charset=utf-8"


def test_every_script_is_an_es_module_file_and_nothing_inline():
    files = studio_files()
    html = files["index.html"].body.decode()
    assert html.count("<script") == 1 and "style=" not in html
    assert all(path.endswith((".html", ".js", ".css", ".svg")) for path in files)
    for path, file in files.items():
        if path.endswith(".js"):
            assert b"innerHTML" not in file.body and b"insertAdjacentHTML" not in file.body, path
            assert b"eval(" not in file.body, path


def test_without_a_trailing_slash_it_redirects_to_the_console():
    answer = _get("", url="http://localhost:7071/api/studio")
    assert answer.status_code == 308 and answer.headers["Location"] == "studio/"


def test_an_unchanged_file_answers_304():
    first = _get("js/main.js")
    again = _get("js/main.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.get_body() == b""


@pytest.mark.parametrize("path", ["../function_app.py", "js/../../host.json", "/etc/passwd",
                                  "nope.js", "js", "JS/MAIN.JS", "index.html/", "%2e%2e/host.json"])
def test_anything_else_is_not_found(path):
    answer = _get(path)
    assert answer.status_code == 404
    assert answer.mimetype == "application/json"  # the API's JSON error, like every 4xx
    assert json.loads(answer.get_body())["error"]["code"] == "file_not_found"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
