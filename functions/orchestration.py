"""Durable orchestration of a batch job: plan → wait (timer or worker hint) → check/finalize.

The orchestrator is deterministic: every decision comes from activity results, history
events and `current_utc_datetime`. Between checks it waits on a durable timer or on the
`SHARD_FULL_EVENT`, whichever comes first. Scoring hosts have no Durable client: when a
ledger shard may be complete they put a hint on the "shard-hints" queue, and
`relay_shard_hint` (a control-app queue trigger) raises the event. The orchestrator
continues as new every few polls, and after each event, so its history stays small and
every generation waits on a fresh event task.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

from shared.jobs import finalize, monitor, planner
from shared.jobs.context import job_store
from shared.jobs.messages import InvalidMessage, minibatch_queue
from shared.jobs.progress import poll_delay
from shared.layout import SHARD_HINT_QUEUE

bp = df.Blueprint()
log = logging.getLogger("batchfn.orchestration")

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
        check_first = True
        if not state.get("planned"):
            planned = yield context.call_activity_with_retry("plan_job", ACTIVITY_RETRY, job_id)
            if not planned.get("ok"):
                return planned
            state = {"planned": True, "polls": 0}
            check_first = not planned.get("batches")  # nothing can be scored yet
        # One event task per generation: the SDK keeps an event that arrived while nothing
        # waited and would hand it to every later waiter of that name in this history.
        shard_full = context.wait_for_external_event(monitor.SHARD_FULL_EVENT)
        for _ in range(POLLS_PER_GENERATION):
            if check_first:
                step = yield context.call_activity_with_retry("advance_job", ACTIVITY_RETRY,
                                                              job_id)
                if step["action"] == finalize.FINALIZED:
                    return {"status": step["status"], "reason": step["reason"]}
                if shard_full.is_completed:
                    break  # the hint is spent: the next generation waits on a new one
            check_first = True
            delay = poll_delay(state["polls"])
            state = {**state, "polls": state["polls"] + 1}
            timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
            yield context.task_any([timer, shard_full])
            if not timer.is_completed:
                timer.cancel()
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


@bp.queue_trigger(arg_name="msg", queue_name=SHARD_HINT_QUEUE, connection="AzureWebJobsStorage")
@bp.durable_client_input(client_name="client")
async def relay_shard_hint(msg: func.QueueMessage, client: df.DurableOrchestrationClient) -> None:
    """Raise a scoring host's shard-full hint as the event its job's orchestration waits for.

    Never fails: a hint for an orchestration that has ended (or a lost one) changes nothing,
    since the orchestrator's timer checks anyway.
    """
    try:
        hint = monitor.ShardHint.decode(msg.get_body())
    except InvalidMessage as exc:
        log.error("dropping a message that is not a shard hint: %s", exc)
        return
    try:
        await client.raise_event(hint.job, monitor.SHARD_FULL_EVENT)
    except Exception as exc:  # noqa: BLE001 - e.g. the job already finished: nothing to wake
        log.info("job %s: shard-full hint not raised (%s)", hint.job, exc)


# Activities are called by function name, so each function is named as its activity.
@bp.activity_trigger(input_name="jobId")
def plan_job(jobId: str) -> dict:  # noqa: N803 - binding name
    """List the input, write manifests and ledgers, enqueue one message per mini-batch."""
    store = job_store()
    return planner.plan_job(store, minibatch_queue(store.account), jobId)


@bp.activity_trigger(input_name="jobId")
def advance_job(jobId: str) -> dict:  # noqa: N803 - binding name
    """Fold new completions into progress.json; finalize (errors report, merged output,
    final status) when every mini-batch is done, the error threshold is exceeded or cancel
    was asked."""
    return finalize.advance_job(job_store(), jobId)


@bp.activity_trigger(input_name="request")
def fail_job(request: dict) -> dict:
    """End a job whose orchestration broke down (Failed with the reason)."""
    return finalize.fail_job(job_store(), request["job"], request["reason"])
