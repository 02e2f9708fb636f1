"""The job orchestrator (shared/control/orchestrator.py), tested two ways and with no host:

- driven as the plain generator it is, with a recording context: every decision and the
  typed payloads it sends and reads;
- replayed by the Durable SDK itself from recorded histories (the JSON the Functions host
  and devhost hand the registered handle), asserting on the actions it returns: first
  episode, replay after an activity, timers, the SDK's activity retry, continue-as-new and a
  failed activity.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import azure.durable_functions as df
import pytest

from devhost.durable.actions import REPLAY_SCHEMA, ActionKind, Decision, parse_decision
from devhost.durable.history import EventType, format_time, new_event
from functions.orchestration import ACTIVITY_RETRY, batch_job
from shared.control.orchestrator import (
    ADVANCE_ACTIVITY,
    FAIL_ACTIVITY,
    ORCHESTRATOR,
    PLAN_ACTIVITY,
    POLLS_PER_GENERATION,
    PUBLISH_ACTIVITY,
    PUBLISH_RETRY_SECONDS,
    FailRequest,
    InvalidOrchestrationData,
    JobEnd,
    OrchestrationState,
    PlanResult,
    PublishResult,
    StepResult,
    run_job,
)

JOB = "job-1"
START = datetime(2024, 1, 1, tzinfo=UTC)
WAITING = StepResult(ended=False, done=0, total=2)
NEAR_END = StepResult(ended=False, done=1, total=2, near_end=True)
DONE = StepResult(ended=True, done=2, total=2, status="Completed")


# ----- driven: the generator with a recording context ----------------------------------

class RecordingContext:
    instance_id = JOB
    current_utc_datetime = START

    def __init__(self, state=None):
        self.state = state
        self.continued_with = None

    def get_input(self):
        return self.state

    def call_activity(self, name, input_=None):
        return ("activity", name, input_)

    def call_activity_with_retry(self, name, retry_options, input_=None):
        assert retry_options == "retry"
        return ("activity", name, input_)

    def create_timer(self, fire_at):
        return ("timer", (fire_at - self.current_utc_datetime).total_seconds(), None)

    def continue_as_new(self, state):
        self.continued_with = state


def _drive(context, answers):
    """Run the generator, answering activities from `answers[name]` (typed results, turned
    into the JSON the host would hand back); timers fire at once."""
    steps = []
    generator = run_job(context, "retry")
    value = None
    error = None
    try:
        while True:
            step = generator.throw(error) if error else generator.send(value)
            steps.append(step)
            if step[0] == "timer":
                value, error = None, None
                continue
            answer = answers[step[1]].pop(0)
            if isinstance(answer, Exception):
                error, value = answer, None
            else:  # a typed result as the host hands it back, or a raw (malformed) one
                error, value = None, answer if isinstance(answer, dict) else answer.to_dict()
    except StopIteration as stop:
        return steps, stop.value


def _names(steps):
    return [s[1] if s[0] == "activity" else f"timer:{s[1]}" for s in steps]


def test_plan_check_wait_then_finalize():
    steps, result = _drive(RecordingContext(), {
        PLAN_ACTIVITY: [PlanResult(ok=True, inputs=20, batches=2)],
        ADVANCE_ACTIVITY: [WAITING, WAITING, DONE],
    })
    # The first check follows planning at once (it watches the ledger if the job is small).
    assert _names(steps) == [PLAN_ACTIVITY, ADVANCE_ACTIVITY, "timer:0.25", ADVANCE_ACTIVITY,
                             "timer:0.5", ADVANCE_ACTIVITY]
    assert steps[0][2] == JOB  # activities take the job id
    assert JobEnd.from_dict(result) == JobEnd("Completed")


def test_a_job_planned_at_invoke_starts_with_its_first_check():
    steps, result = _drive(RecordingContext(OrchestrationState(planned=True).to_dict()), {
        ADVANCE_ACTIVITY: [DONE]})
    assert _names(steps) == [ADVANCE_ACTIVITY]
    assert result == JobEnd("Completed").to_dict()


def test_a_check_near_the_end_is_followed_by_the_next_without_a_timer():
    steps, result = _drive(RecordingContext({"planned": True, "polls": 9}), {
        ADVANCE_ACTIVITY: [WAITING, NEAR_END, NEAR_END, DONE]})
    assert _names(steps) == [ADVANCE_ACTIVITY, "timer:2.0", ADVANCE_ACTIVITY, ADVANCE_ACTIVITY,
                             ADVANCE_ACTIVITY]
    assert result == JobEnd("Completed").to_dict()


def test_a_failed_plan_ends_without_polling():
    steps, result = _drive(RecordingContext(), {
        PLAN_ACTIVITY: [PlanResult(ok=False, reason="input container 'x' does not exist")]})
    assert len(steps) == 1
    assert result == JobEnd("Failed", "input container 'x' does not exist").to_dict()


def test_continues_as_new_after_a_generation_of_polls():
    context = RecordingContext({"planned": True, "polls": 7})
    steps, _ = _drive(context, {ADVANCE_ACTIVITY: [WAITING] * POLLS_PER_GENERATION})
    assert steps[0][1] == ADVANCE_ACTIVITY  # no replanning after continue_as_new
    assert context.continued_with == {"planned": True, "polls": 7 + POLLS_PER_GENERATION}


def test_an_activity_failing_every_retry_fails_the_job():
    steps, result = _drive(RecordingContext(), {
        PLAN_ACTIVITY: [PlanResult(ok=True)],
        ADVANCE_ACTIVITY: [RuntimeError("storage down")],
        FAIL_ACTIVITY: [JobEnd("Failed", "internal error: storage down")],
    })
    request = FailRequest.from_dict(steps[-1][2])
    assert steps[-1][1] == FAIL_ACTIVITY and request.job == JOB
    assert "storage down" in request.reason
    assert result == JobEnd("Failed", "internal error: storage down").to_dict()


def test_events_not_delivered_at_the_end_are_tried_again_after_waits():
    pending_end = StepResult(ended=True, done=2, total=2, status="Completed",
                             events_pending=True)
    steps, result = _drive(RecordingContext({"planned": True, "polls": 9}), {
        ADVANCE_ACTIVITY: [pending_end],
        PUBLISH_ACTIVITY: [RuntimeError("activity host gone"), PublishResult(pending=True),
                           PublishResult(pending=False)],
    })
    assert _names(steps) == [ADVANCE_ACTIVITY, "timer:5.0", PUBLISH_ACTIVITY, "timer:30.0",
                             PUBLISH_ACTIVITY, "timer:120.0", PUBLISH_ACTIVITY]
    assert steps[2][2] == JOB
    # The job's end stands whatever becomes of its events.
    assert JobEnd.from_dict(result) == JobEnd("Completed", events_pending=True)


def test_events_that_never_go_out_stop_being_tried():
    failed_plan = PlanResult(ok=False, reason="no input", events_pending=True)
    steps, result = _drive(RecordingContext(), {
        PLAN_ACTIVITY: [failed_plan],
        PUBLISH_ACTIVITY: [PublishResult(pending=True)] * len(PUBLISH_RETRY_SECONDS),
    })
    assert _names(steps).count(PUBLISH_ACTIVITY) == len(PUBLISH_RETRY_SECONDS)
    assert JobEnd.from_dict(result).status == "Failed"


@pytest.mark.parametrize(("kind", "data"), [
    (OrchestrationState, {"planned": "yes"}),
    (OrchestrationState, {"polls": -1}),
    (OrchestrationState, [True, 0]),
    (PlanResult, {"ok": True, "batches": 1.5}),
    (PlanResult, None),
    (StepResult, {"ended": True, "status": 3}),
    (StepResult, {"ended": False, "near_end": 1}),
    (FailRequest, {"job": "", "reason": "x"}),
    (JobEnd, {"reason": "no status"}),
])
def test_payloads_that_are_not_their_type_are_refused(kind, data):
    with pytest.raises(InvalidOrchestrationData):
        kind.from_dict(data)


def test_a_malformed_activity_result_fails_the_job_with_the_reason():
    steps, result = _drive(RecordingContext(), {
        PLAN_ACTIVITY: [PlanResult(ok=True, batches=0)],
        ADVANCE_ACTIVITY: [{"ended": "maybe"}],
        FAIL_ACTIVITY: [JobEnd("Failed", "internal error")],
    })
    assert _names(steps) == [PLAN_ACTIVITY, ADVANCE_ACTIVITY, FAIL_ACTIVITY]
    assert "StepResult.ended must be true or false" in steps[-1][2]["reason"]


# ----- replayed: the Durable SDK on recorded histories ----------------------------------

HANDLE = df.Orchestrator.create(batch_job)


class History:
    """A recorded orchestration history, built event by event as the host records it."""

    def __init__(self, state=None):
        self.now = START
        self.input = None if state is None else json.dumps(state)
        self.events = [new_event(EventType.ORCHESTRATOR_STARTED, self.now),
                       new_event(EventType.EXECUTION_STARTED, self.now, Name="batch_job",
                                 Input=self.input, Version="")]
        self.next_id = 0

    def episode(self):
        """A new episode begins: time moves on a little."""
        self.now += timedelta(milliseconds=50)
        self.events.append(new_event(EventType.ORCHESTRATOR_STARTED, self.now))

    def scheduled(self, name, input_):
        self.events.append(new_event(EventType.TASK_SCHEDULED, self.now,
                                     event_id=self._id(), Name=name,
                                     Input=json.dumps(input_)))
        return self.next_id - 1

    def completed(self, task, result):
        self.events.append(new_event(EventType.TASK_COMPLETED, self.now,
                                     TaskScheduledId=task, Result=json.dumps(result)))

    def failed(self, task, reason):
        self.events.append(new_event(EventType.TASK_FAILED, self.now, TaskScheduledId=task,
                                     Reason=reason, Details=reason))

    def timer(self, fire_at):
        self.events.append(new_event(EventType.TIMER_CREATED, self.now, event_id=self._id(),
                                     FireAt=format_time(fire_at)))
        return self.next_id - 1, fire_at

    def fired(self, timer):
        task, fire_at = timer
        self.events.append(new_event(EventType.TIMER_FIRED, fire_at, TimerId=task,
                                     FireAt=format_time(fire_at)))

    def replay(self) -> Decision:
        """The SDK's decision for this history, its actions flattened as devhost reads
        them (replay schema V3, as devhost and the Functions host ask for)."""
        context = {"history": self.events, "instanceId": JOB, "isReplaying": False,
                   "parentInstanceId": None, "input": self.input,
                   "upperSchemaVersion": REPLAY_SCHEMA}
        return parse_decision(HANDLE(json.dumps(context)))

    def _id(self):
        self.next_id += 1
        return self.next_id - 1


def _kinds(decision: Decision) -> list[tuple[str, str]]:
    """The decision's leaf actions: (kind, activity or event name)."""
    return [(action.kind.name.lower(), action.name) for action in decision.actions]


def test_the_registered_function_is_named_as_clients_start_it():
    assert batch_job.__name__ == ORCHESTRATOR


def test_the_first_episode_schedules_planning_with_retries():
    decision = History().replay()
    assert not decision.done
    assert _kinds(decision) == [("call_activity_with_retry", PLAN_ACTIVITY)]
    assert json.loads(decision.actions[0].input) == JOB
    assert decision.actions[0].retry.max_attempts == ACTIVITY_RETRY.max_number_of_attempts


def _planned_and_waiting(history):
    plan = history.scheduled(PLAN_ACTIVITY, JOB)
    history.episode()
    history.completed(plan, PlanResult(ok=True, inputs=20, batches=2).to_dict())
    check = history.scheduled(ADVANCE_ACTIVITY, JOB)
    history.episode()
    history.completed(check, WAITING.to_dict())
    return history.timer(history.now + timedelta(seconds=0.25))


def test_replay_after_planning_checks_at_once():
    history = History()
    plan = history.scheduled(PLAN_ACTIVITY, JOB)
    history.episode()
    history.completed(plan, PlanResult(ok=True, inputs=20, batches=2).to_dict())
    decision = history.replay()
    assert not decision.done
    # The plan call is in the history: only the new check is decided.
    assert _kinds(decision)[-1] == ("call_activity_with_retry", ADVANCE_ACTIVITY)


def test_replay_of_a_job_planned_at_invoke_starts_with_a_check():
    decision = History({"planned": True, "polls": 0}).replay()
    assert _kinds(decision) == [("call_activity_with_retry", ADVANCE_ACTIVITY)]


def test_a_waiting_check_is_followed_by_a_timer():
    history = History()
    timer_at = _planned_and_waiting(history)[1]
    history.events.pop()  # the timer is what the replay decides
    history.next_id -= 1
    decision = history.replay()
    timer = next(a for a in decision.actions if a.kind is ActionKind.CREATE_TIMER)
    assert timer.fire_at == timer_at


def test_a_fired_timer_checks_progress_and_a_finished_check_completes_the_job():
    history = History()
    timer = _planned_and_waiting(history)
    history.episode()
    history.fired(timer)
    decision = history.replay()
    assert not decision.done
    assert _kinds(decision)[-1] == ("call_activity_with_retry", ADVANCE_ACTIVITY)
    check = history.scheduled(ADVANCE_ACTIVITY, JOB)
    history.episode()
    history.completed(check, DONE.to_dict())
    decision = history.replay()
    assert decision.done and JobEnd.from_dict(decision.output) == JobEnd("Completed")


def test_a_check_near_the_end_is_replayed_into_the_next_check():
    history = History({"planned": True, "polls": 0})
    check = history.scheduled(ADVANCE_ACTIVITY, JOB)
    history.episode()
    history.completed(check, NEAR_END.to_dict())
    decision = history.replay()
    assert _kinds(decision)[-1] == ("call_activity_with_retry", ADVANCE_ACTIVITY)


def test_retried_attempts_that_all_fail_fail_the_job_with_the_reason():
    # The host runs the retry policy (devhost's Episode records the retry timers and the
    # attempts as below); the orchestrator sees the failure once every attempt failed.
    history = History()
    attempt = history.scheduled(PLAN_ACTIVITY, JOB)
    history.episode()
    history.failed(attempt, "storage down")
    assert _kinds(history.replay()) == [("call_activity_with_retry", PLAN_ACTIVITY)]
    for _ in range(ACTIVITY_RETRY.max_number_of_attempts - 1):
        retry_timer = history.timer(history.now + timedelta(seconds=1))
        history.episode()
        history.fired(retry_timer)
        attempt = history.scheduled(PLAN_ACTIVITY, JOB)
        history.episode()
        history.failed(attempt, "storage down")
    # After its last attempt the SDK still waits on one timer, which fires at once.
    history.fired(history.timer(history.now))
    decision = history.replay()
    assert not decision.done
    assert _kinds(decision)[-1] == ("call_activity", FAIL_ACTIVITY)
    request = FailRequest.from_dict(json.loads(decision.actions[-1].input))
    assert request.job == JOB and "storage down" in request.reason


def test_a_generation_of_checks_continues_as_new_with_its_state():
    history = History({"planned": True, "polls": 0})
    for _ in range(POLLS_PER_GENERATION):
        check = history.scheduled(ADVANCE_ACTIVITY, JOB)
        history.episode()
        history.completed(check, WAITING.to_dict())
        timer = history.timer(history.now + timedelta(seconds=0.25))
        history.episode()
        history.fired(timer)
    decision = history.replay()
    assert decision.done and decision.continue_as_new is not None
    state = json.loads(decision.continue_as_new.input)
    assert OrchestrationState.from_dict(state) == OrchestrationState(True, POLLS_PER_GENERATION)
