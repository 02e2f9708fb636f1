"""Blob drop: a `<endpoint>/<folder>/_start` marker in "batchfn-drop" starts a job and gets
an answer beside it (see shared/control/blob_drop.py for the rule)."""

from __future__ import annotations

import asyncio
import logging

import azure.durable_functions as df
import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_types

from functions.orchestration import ensure_orchestration
from shared.contract.job_records import JobStatus
from shared.contract.layout import DROP_CONTAINER
from shared.control.blob_drop import process_marker
from shared.control.context import job_service

bp = df.Blueprint()
log = logging.getLogger("batchfn.drop")


# Event Grid source: Flex Consumption runs no polling blob triggers (devhost serves both).
# A BlobClient, not an InputStream: the host hands over a reference and downloads nothing;
# the marker is read here, size-capped.
@bp.blob_trigger(arg_name="marker", path=DROP_CONTAINER + "/{name}",
                 connection="AzureWebJobsStorage", source=func.BlobSource.EVENT_GRID)
@bp.durable_client_input(client_name="client")
async def blob_drop(marker: blob_types.BlobClient, client: df.DurableOrchestrationClient) -> None:
    """Start the job a dropped marker asks for (idempotent per marker name + ETag)."""
    outcome = await asyncio.to_thread(process_marker, job_service(), marker)
    if outcome is None:
        return
    if outcome.error is not None:
        # The drop is the user's to fix (the answer is in _error.json); retrying cannot help.
        log.warning("drop marker %s/%s refused: %s", DROP_CONTAINER, outcome.marker,
                    outcome.error.message)
        return
    job = outcome.job
    if job is not None and job.status == JobStatus.NOT_STARTED:
        await ensure_orchestration(client, job.id)
        log.info("drop marker %s started job %s", outcome.marker, job.id)
