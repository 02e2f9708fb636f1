"""Durable orchestration of a batch job: plan → poll progress on durable timers → finalize.

The orchestrator is deterministic: every decision comes from activity results and
`current_utc_datetime`. It continues as new every few polls so its history stays small.
"""

from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df

from shared.jobs import finalize, monitor, planner
from shared.jobs.context import job_store
from shared.jobs.messages import minibatch_queue
from shared.jobs.progress import poll_delay

bp = df.Blueprint()

ORCHESTRATOR = "batch_job"
POLLS_PER_GENERATION = 20  # then continue_as_new: replay cost stays bounded
# Activities are idempotent: a storage hiccup costs a retry, not the job.
ACTIVITY_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000,
                                 max_number_of_attempts=3)


@bp.orchestration_trigger(context_name="context", orchestration=ORCHESTRATOR)
def batch_job(context: df.DurableOrchestrationContext):
    """One instance per job (instance id = job id)."""
    job_id = context.instance_id
    state = context.get_input() or {}
    try:
        if not state.get("planned"):
            planned = yield context.call_activity_with_retry("plan_job", ACTIVITY_RETRY, job_id)
            if not planned.get("ok"):
                return planned
            state = {"planned": True, "polls": 0}
        for _ in range(POLLS_PER_GENERATION):
            decision = yield context.call_activity_with_retry("check_progress", ACTIVITY_RETRY,
                                                              job_id)
            if decision["action"] == monitor.FINALIZE:
                result = yield context.call_activity_with_retry(
                    "finalize_job", ACTIVITY_RETRY,
                    {"job": job_id, "outcome": decision["outcome"]})
                return result
            delay = poll_delay(state["polls"])
            state = {**state, "polls": state["polls"] + 1}
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
    except Exception as exc:  # noqa: BLE001 - an activity failed on every retry
        # Never leave a job hanging in a non-final status: fail it with the reason.
        result = yield context.call_activity(
            "fail_job", {"job": job_id, "reason": f"internal error: {exc}"[:1000]})
        return result
    context.continue_as_new(state)
    return None


async def ensure_orchestration(client: df.DurableOrchestrationClient, job_id: str) -> None:
    """Start the job's orchestration unless an instance with its id exists (idempotent:
    start_new would replace a running instance)."""
    status = await client.get_status(job_id)
    if status is None or getattr(status, "runtime_status", None) is None:
        await client.start_new(ORCHESTRATOR, instance_id=job_id)


# Activities are called by function name, so each function is named as its activity.
@bp.activity_trigger(input_name="jobId")
def plan_job(jobId: str) -> dict:  # noqa: N803 - binding name
    """List the input, write manifests and ledgers, enqueue one message per mini-batch."""
    store = job_store()
    return planner.plan_job(store, minibatch_queue(store.account), jobId)


@bp.activity_trigger(input_name="jobId")
def check_progress(jobId: str) -> dict:  # noqa: N803 - binding name
    """Fold new completions into progress.json and say whether to finalize."""
    return monitor.check_progress(job_store(), jobId)


@bp.activity_trigger(input_name="request")
def finalize_job(request: dict) -> dict:
    """Write the errors report and merge the output; set the final status."""
    return finalize.finalize_job(job_store(), request["job"], request["outcome"])



@bp.activity_trigger(input_name="request")
def fail_job(request: dict) -> dict:
    """End a job whose orchestration broke down (Failed with the reason)."""
    return finalize.fail_job(job_store(), request["job"], request["reason"])
