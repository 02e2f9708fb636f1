"""Fixture app for the durable runtime tests: orchestrators covering the replay protocol."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

# Attempts per key of the `flaky` activity (per process: the test runs it in-process or in
# one devhost process).
FLAKY_ATTEMPTS: dict[str, int] = {}
# Replays of the `nondeterministic` orchestrator so far (global state: exactly what
# orchestrator code must not depend on).
REPLAYS = {"count": 0}


@app.orchestration_trigger(context_name="context")
def pipeline(context: df.DurableOrchestrationContext):
    """Fan-out/fan-in, a timer, a retried activity next to a plain one, continue_as_new."""
    job = context.get_input()
    squares = yield context.task_all(
        [context.call_activity("square", i) for i in range(job["n"])])
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=1))
    retry = df.RetryOptions(first_retry_interval_in_milliseconds=100, max_number_of_attempts=3)
    flaky, plain = yield context.task_all([
        context.call_activity_with_retry("flaky", retry, f"{context.instance_id}/{job['round']}"),
        context.call_activity("square", 3),
    ])
    context.set_custom_status({"round": job["round"]})
    if job["round"] < 1:
        context.continue_as_new({**job, "round": job["round"] + 1, "total": sum(squares)})
        return None
    return {"total": sum(squares), "previous": job.get("total"), "flaky": flaky,
            "plain": plain, "round": job["round"]}


@app.orchestration_trigger(context_name="context")
def short_timers(context: df.DurableOrchestrationContext):
    """Three sub-second timers in a row (queue visibility only counts whole seconds)."""
    for _ in range(3):
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=0.3))
    return "done"


@app.orchestration_trigger(context_name="context")
def exhausted(context: df.DurableOrchestrationContext):
    """A retried activity that never succeeds: fails after max_number_of_attempts."""
    retry = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=2)
    yield context.call_activity_with_retry("boom", retry, "x")
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def nondeterministic(context: df.DurableOrchestrationContext):
    """Calls a different activity on every replay."""
    REPLAYS["count"] += 1
    name = "square" if REPLAYS["count"] == 1 else "double"
    first = yield context.call_activity(name, 2)
    second = yield context.call_activity("square", first)
    return second


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    """Waits for an external event (or a timeout), then runs a sub-orchestration."""
    context.set_custom_status("waiting")
    timeout = context.create_timer(context.current_utc_datetime + timedelta(seconds=60))
    event = context.wait_for_external_event("approve")
    winner = yield context.task_any([event, timeout])
    if winner is not event:
        return "timed out"
    timeout.cancel()
    context.set_custom_status("approved")
    result = yield context.call_sub_orchestrator("child", event.result)
    return {"approved_by": event.result, "child": result}


@app.orchestration_trigger(context_name="context")
def child(context: df.DurableOrchestrationContext):
    """A sub-orchestration: one activity."""
    doubled = yield context.call_activity("double", len(context.get_input()))
    return doubled


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext):
    """An activity failure without retry fails the orchestration."""
    yield context.call_activity("boom", "no retry")
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def slow_fan(context: df.DurableOrchestrationContext):
    """Activities slow enough to kill the host while they run."""
    results = yield context.task_all(
        [context.call_activity("slow", i) for i in range(context.get_input())])
    return sorted(results)


@app.activity_trigger(input_name="value")
def square(value: int) -> int:
    return value * value


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@app.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    FLAKY_ATTEMPTS[key] = FLAKY_ATTEMPTS.get(key, 0) + 1
    if FLAKY_ATTEMPTS[key] < 3:
        raise RuntimeError(f"flaky attempt {FLAKY_ATTEMPTS[key]}")
    return f"ok after {FLAKY_ATTEMPTS[key]}"


@app.activity_trigger(input_name="why")
def boom(why: str) -> str:
    raise ValueError(f"boom: {why}")


@app.activity_trigger(input_name="value")
def slow(value: int) -> int:
    marker_dir = os.environ.get("DURABLE_TEST_MARKERS")
    if marker_dir:
        Path(marker_dir, f"slow-{value}-{time.time_ns()}").write_text(json.dumps(value))
    time.sleep(1.5)
    return value


@app.route(route="start/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Start an orchestration with the request's JSON body as input."""
    body = req.get_body()
    instance_id = await client.start_new(req.route_params["name"], None,
                                         json.loads(body) if body else None)
    return client.create_check_status_response(req, instance_id)
