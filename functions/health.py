"""Liveness: answers without touching storage, so a host that is up says so at once."""

import json

import azure.functions as func

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Report that the app is loaded and serving."""
    return func.HttpResponse(
        json.dumps({"status": "ok", "service": "batchfn"}),
        mimetype="application/json",
    )
