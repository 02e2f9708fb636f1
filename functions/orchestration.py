"""Durable orchestration of batch jobs: the orchestrator and its activities. Bindings only:
the logic is shared/control."""

from __future__ import annotations

import logging

import azure.durable_functions as df

from shared.control import finalize, planner
from shared.control.context import event_sink, job_store, recovery_settings, scoring_queue
from shared.control.orchestrator import (
    ADVANCE_ACTIVITY,
    FAIL_ACTIVITY,
    ORCHESTRATOR,
    PLAN_ACTIVITY,
    PUBLISH_ACTIVITY,
    FailRequest,
    run_job,
)

bp = df.Blueprint()
log = logging.getLogger("batchfn.orchestration")

# Activities are idempotent: a storage hiccup costs a retry, not the job.
ACTIVITY_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000,
                                 max_number_of_attempts=3)


def batch_job(context: df.DurableOrchestrationContext):
    """One instance per job (instance id = job id): shared.control.orchestrator.run_job.

    Registered below without rebinding the name, so tests replay this very generator
    function through the SDK's public handle (df.Orchestrator.create). Its name is the
    orchestrator's (ORCHESTRATOR): Durable clients start it by function name.
    """
    return (yield from run_job(context, ACTIVITY_RETRY))


bp.orchestration_trigger(context_name="context", orchestration=ORCHESTRATOR)(batch_job)


async def ensure_orchestration(client: df.DurableOrchestrationClient, job_id: str) -> None:
    """Start the job's orchestration unless an instance with its id exists (idempotent:
    start_new would replace a running instance)."""
    status = await client.get_status(job_id)
    if status is None or getattr(status, "runtime_status", None) is None:
        await client.start_new(ORCHESTRATOR, instance_id=job_id)


# Activities are called by function name, so each function is named as its activity.
@bp.activity_trigger(input_name="jobId", activity=PLAN_ACTIVITY)
def plan_job(jobId: str) -> dict:  # noqa: N803 - binding name
    """List the input, write manifests and ledgers, enqueue one message per mini-batch."""
    return planner.plan_job(job_store(), scoring_queue(), jobId, event_sink()).to_dict()


@bp.activity_trigger(input_name="jobId", activity=ADVANCE_ACTIVITY)
def advance_job(jobId: str) -> dict:  # noqa: N803 - binding name
    """Fold new completions into progress.json, re-send stalled and slow mini-batches;
    finalize (errors report, merged output, final status) when every mini-batch is done,
    the error threshold is exceeded, cancel was asked or the deadline has passed; record
    and deliver the job's lifecycle events."""
    return finalize.advance_job(job_store(), jobId, (scoring_queue(), recovery_settings()),
                                event_sink()).to_dict()


@bp.activity_trigger(input_name="request", activity=FAIL_ACTIVITY)
def fail_job(request: dict) -> dict:
    """End a job whose orchestration broke down (Failed with the reason)."""
    return finalize.fail_job(job_store(), FailRequest.from_dict(request),
                             event_sink()).to_dict()


@bp.activity_trigger(input_name="jobId", activity=PUBLISH_ACTIVITY)
def publish_job_events(jobId: str) -> dict:  # noqa: N803 - binding name
    """Deliver an ended job's lifecycle events that could not be delivered before."""
    return finalize.publish_job_events(job_store(), jobId, event_sink()).to_dict()
