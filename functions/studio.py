"""batchfn studio: the web console's static files, served by the app under `/api/studio/`.

The files are public (anonymous) and hold no data: everything the console shows comes from
the API, which asks for the function key. Only the files found in the `studio/` folder when
the app starts are served — no part of a request path ever reaches the file system — each
with a Content-Security-Policy that allows no inline script or style and no other origin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import azure.functions as func

from functions.http_edge import json_response
from shared.contract.errors import NotFound

bp = func.Blueprint()

STUDIO_DIR = Path(__file__).resolve().parent.parent / "studio"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True)
class StaticFile:
    """One file of the console, read once."""

    body: bytes
    content_type: str
    etag: str


@cache
def studio_files() -> dict[str, StaticFile]:
    """Every servable file of the studio folder by its path relative to it ('js/main.js')."""
    files = {}
    for path in sorted(STUDIO_DIR.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[path.relative_to(STUDIO_DIR).as_posix()] = StaticFile(body, content_type, etag)
    return files


@bp.route(route="studio/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def studio(req: func.HttpRequest) -> func.HttpResponse:
    """A file of the console; the console itself (index.html) at `/api/studio/`."""
    path = req.route_params.get("path") or ""
    if not path:
        if not urlsplit(req.url).path.endswith("/"):
            # The page's relative links need the trailing slash.
            return func.HttpResponse(status_code=308, headers={**SECURITY_HEADERS,
                                                               "Location": "studio/"})
        path = "index.html"
    found = studio_files().get(path)
    if found is None:
        missing = NotFound(f"batchfn studio has no file {path[:200]!r}", code="file_not_found")
        return json_response(missing.to_dict(), status=404, headers=SECURITY_HEADERS)
    headers = {**SECURITY_HEADERS, "ETag": found.etag, "Cache-Control": "no-cache"}
    if req.headers.get("If-None-Match") == found.etag:
        return func.HttpResponse(status_code=304, headers=headers)
    return func.HttpResponse(found.body, status_code=200, headers={
        **headers, "Content-Type": found.content_type})


OPENAPI_PATHS = {
    "/studio/{path}": {"get": {
        "summary": "batchfn studio, the web console (static files; /api/studio/ opens it)",
        "operationId": "studio", "security": [],
        "parameters": [{"name": "path", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The file"},
                      "308": {"description": "Redirect to /api/studio/"},
                      "404": {"description": "No such file"}}}},
}
