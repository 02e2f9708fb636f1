"""`GET /api/openapi.json`: the OpenAPI 3 document, merged from every HTTP blueprint.

Each blueprint module in `functions/` that serves HTTP exposes `OPENAPI_PATHS` (OpenAPI
path items keyed by route, relative to the `/api` server URL) and may expose
`OPENAPI_SCHEMAS` (component schemas). `operation()` and `path_param()` build the common
parts. The document declares what the handlers accept — name patterns, lengths, number
ranges, request bodies — and the error answers, so that an API fuzzer generates requests
that reach the handlers (tests/e2e/test_api_fuzzing.py).
`python -m functions.openapi --update-docs docs/http-api.md` rewrites the route reference
between the markers of that file (`--markdown` prints it).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import azure.functions as func

import functions
from functions.http_edge import api_errors, json_response

bp = func.Blueprint()

HTTP_METHODS = ("get", "put", "post", "patch", "delete")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "details": {}},
    }},
}
_ERROR_TEXT = {400: "Invalid request", 401: "No valid function key", 404: "Not found",
               409: "Conflict (or busy: changed concurrently, try again)",
               412: "Precondition failed", 413: "Payload too large", 422: "Unprocessable"}

_BASE_PATHS: dict[str, Any] = {
    # health.py predates the fragments; its one route is documented here.
    "/health": {"get": {"summary": "Liveness of the app", "operationId": "health",
                        "security": [],
                        "responses": {"200": {"description": "The app is up"}}}},
    "/openapi.json": {"get": {"summary": "This OpenAPI document", "operationId": "openapi",
                              "security": [],
                              "responses": {"200": {"description": "OpenAPI 3 document"}}}},
}


def path_param(name: str, description: str, schema: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """A required path parameter (a string unless `schema` says more)."""
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


def name_schema(pattern: str, max_length: int) -> dict[str, Any]:
    """A string matching `pattern` (a whole-string regular expression)."""
    return {"type": "string", "pattern": f"^{pattern}$", "maxLength": max_length}


def query_param(name: str, description: str, schema: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def operation(summary: str, operation_id: str, *, responses: dict[int, str],
              parameters: Iterable[dict[str, Any]] = (), body: str | None = None,
              result: dict[str, Any] | None = None, errors: Iterable[int] = (400, 404),
              description: str | None = None, body_required: bool = True) -> dict[str, Any]:
    """An operation object: JSON request `body` (schema name), success `responses`, errors
    (401, no valid key, is added: every operation built here needs a function key)."""
    op: dict[str, Any] = {"summary": summary, "operationId": operation_id}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = list(parameters)
    if body:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}
    answers: dict[str, Any] = {}
    for status, text in responses.items():
        answers[str(status)] = {"description": text}
        if result is not None:
            answers[str(status)]["content"] = {"application/json": {"schema": result}}
    for status in sorted({*errors, 401}):
        answers[str(status)] = {"description": _ERROR_TEXT[status], "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op["responses"] = answers
    return op


def build_document() -> dict[str, Any]:
    """Merge the fragments of all blueprint modules into one OpenAPI 3 document."""
    paths: dict[str, dict[str, Any]] = {k: dict(v) for k, v in _BASE_PATHS.items()}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for module_info in pkgutil.iter_modules(functions.__path__):
        module = importlib.import_module(f"functions.{module_info.name}")
        for path, item in getattr(module, "OPENAPI_PATHS", {}).items():
            merged = paths.setdefault(path, {})
            clash = set(merged) & set(item)
            if clash:
                raise ValueError(f"{module.__name__} documents {path} {sorted(clash)} twice")
            merged.update(item)
        schemas.update(getattr(module, "OPENAPI_SCHEMAS", {}))
    return {
        "openapi": "3.0.3",
        "info": {"title": "batchfn", "version": "1.0",
                 "description": "Azure ML batch endpoints as an Azure Functions app."},
        "servers": [{"url": "/api"}],
        "security": [{"functionKey": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"functionKey": {"type": "apiKey", "in": "header",
                                                "name": "x-functions-key"}},
        },
    }


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api_errors
def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3 document of this app."""
    return json_response(build_document())


def render_markdown(document: dict[str, Any]) -> str:
    """The route reference of docs/http-api.md, one row per operation."""
    lines = ["| Method | Path | Summary | Success | Errors |", "|---|---|---|---|---|"]
    for path, item in document["paths"].items():
        for method in HTTP_METHODS:
            if method not in item:
                continue
            op = item[method]
            codes = sorted(op.get("responses", {}))
            ok = ", ".join(c for c in codes if c.startswith("2"))
            bad = ", ".join(c for c in codes if not c.startswith("2"))
            lines.append(f"| {method.upper()} | `/api{path}` | {op.get('summary', '')} | "
                         f"{ok} | {bad} |")
    return "\n".join(lines) + "\n"


DOCS_BEGIN = "<!-- routes: generated by `python -m functions.openapi --update-docs` -->"
DOCS_END = "<!-- end of generated routes -->"


def update_docs(path: Path, document: dict[str, Any]) -> None:
    """Replace the generated route table between the markers of a markdown file."""
    text = path.read_text(encoding="utf-8")
    before, found, rest = text.partition(DOCS_BEGIN)
    _, found_end, after = rest.partition(DOCS_END)
    if not found or not found_end:
        raise SystemExit(f"{path} lacks the markers {DOCS_BEGIN!r} ... {DOCS_END!r}")
    table = render_markdown(document)
    path.write_text(f"{before}{DOCS_BEGIN}\n{table}{DOCS_END}{after}", encoding="utf-8")


def main(argv: list[str]) -> None:
    """Print the document (JSON), the route table (--markdown), or --update-docs FILE."""
    document = build_document()
    if "--update-docs" in argv:
        update_docs(Path(argv[argv.index("--update-docs") + 1]), document)
    elif "--markdown" in argv:
        sys.stdout.write(render_markdown(document))
    else:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
