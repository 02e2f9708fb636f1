"""Blob drop: a `<endpoint>/<folder>/_start` marker in "batchfn-drop" starts a job (see
shared/jobs/drop.py for the rule)."""

from __future__ import annotations

import logging

import azure.durable_functions as df
import azure.functions as func

from functions.orchestration import ensure_orchestration
from shared.errors import BatchfnError
from shared.jobs.context import job_service
from shared.jobs.drop import DROP_CONTAINER, is_marker, start_from_marker
from shared.jobs.model import JobStatus

bp = df.Blueprint()
log = logging.getLogger("batchfn.drop")


# Event Grid source: Flex Consumption runs no polling blob triggers (devhost serves both).
@bp.blob_trigger(arg_name="blob", path=DROP_CONTAINER + "/{name}",
                 connection="AzureWebJobsStorage", source=func.BlobSource.EVENT_GRID)
@bp.durable_client_input(client_name="client")
async def blob_drop(blob: func.InputStream, client: df.DurableOrchestrationClient) -> None:
    """Start the job a dropped marker asks for (idempotent per marker name + ETag)."""
    name = blob.name or ""
    if name.startswith(DROP_CONTAINER + "/"):
        name = name[len(DROP_CONTAINER) + 1:]
    if not is_marker(name):
        return
    service = job_service()
    marker = service.store.service.get_blob_client(DROP_CONTAINER, name)
    etag = marker.get_blob_properties().etag
    try:
        started = start_from_marker(service, name, etag, blob.read())
    except BatchfnError as exc:
        # Bad markers are the user's to fix; retrying cannot help, so log and finish.
        log.error("drop marker %s/%s refused: %s", DROP_CONTAINER, name, exc.message)
        return
    if started is None:
        return
    job, _ = started
    if job.status == JobStatus.NOT_STARTED:
        await ensure_orchestration(client, job.id)
    log.info("drop marker %s started job %s", name, job.id)

