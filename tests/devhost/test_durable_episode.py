"""The pure orchestration executor, `devhost.durable.episode.Episode`, fed recorded events.

No storage, Azurite, host or threads: each test drives one instance episode by episode with
hand-built control messages at fixed times, and the real Python Durable SDK (the handle that
`azure.durable_functions.Orchestrator.create` returns) replays the history and decides, as it
does under the runtime. The record travels between episodes through its JSON, as it does
through storage. Tests assert on what an episode hands back: activity work, control messages
(timers with the time they become visible), the record's history, status and output.

Covered: a new instance, completions (and their duplicates), durable timers, with-retry
activities (sequence numbers included), continue-as-new, external events, sub-orchestrations,
termination, failures and non-determinism detection.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
from azure.functions import meta
from azure.functions.durable_functions import OrchestrationTriggerConverter

from devhost.durable.actions import (
    REPLAY_SCHEMA,
    Decision,
    DecisionError,
    decision_from_failure,
    parse_decision,
)
from devhost.durable.episode import REMEMBERED_EVENT_IDS, Episode, execution_id_after
from devhost.durable.history import EventType, format_time, new_event
from devhost.durable.records import ActivityWork, ControlMessage, InstanceRecord
from devhost.durable.runtime import _MAX_HELD_CONTROL

E = EventType
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
INSTANCE = "order-1"
EXECUTION = "exec-1"
ACTIVITIES = frozenset({"square", "double", "flaky", "tick"})

Orchestrator = Callable[[df.DurableOrchestrationContext], Generator[Any, Any, Any]]


# ---- control messages --------------------------------------------------------------------

def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def start(name: str, payload: Any = None, *, execution: str = EXECUTION,
          message_id: str = "start") -> ControlMessage:
    return ControlMessage(message_id, INSTANCE, execution, new_event(
        E.EXECUTION_STARTED, T0, Name=name, Input=json.dumps(payload), Version=""))


def completed(task_id: int, name: str, result: Any, *, message_id: str | None = None,
              execution: str | None = EXECUTION, instance: str = INSTANCE) -> ControlMessage:
    return ControlMessage(message_id or f"done-{task_id}", instance, execution, new_event(
        E.TASK_COMPLETED, T0, TaskScheduledId=task_id, Name=name, Result=json.dumps(result)))


def failed(task_id: int, name: str, reason: str) -> ControlMessage:
    return ControlMessage(f"failed-{task_id}", INSTANCE, EXECUTION, new_event(
        E.TASK_FAILED, T0, TaskScheduledId=task_id, Name=name, Reason=reason, Details=""))


def raised(name: str, payload: Any, *, message_id: str) -> ControlMessage:
    # As the client API sends it: for whichever execution is current.
    return ControlMessage(message_id, INSTANCE, None, new_event(
        E.EVENT_RAISED, T0, Name=name, Input=json.dumps(payload)))


def terminate(reason: str) -> ControlMessage:
    return ControlMessage("terminate", INSTANCE, None,
                          new_event(E.EXECUTION_TERMINATED, T0, Input=reason))


# ---- driving episodes ----------------------------------------------------------------------

def replay(orchestrator: Orchestrator, episode: Episode) -> Decision:
    """What DurableRuntime._replay does, minus the invoker: the SDK's handle decides."""
    handle = df.Orchestrator.create(orchestrator)
    context = OrchestrationTriggerConverter.decode(
        meta.Datum(type="json", value=episode.orchestrator_input()), trigger_metadata=None)
    try:
        return parse_decision(handle(context))
    except DecisionError as exc:
        return Decision(done=False, actions=(), error=str(exc))
    except Exception as exc:  # the SDK raises with the orchestrator's state attached
        return decision_from_failure(exc)


class Instance:
    """One instance, its record kept as JSON between episodes as storage keeps it."""

    def __init__(self, orchestrator: Orchestrator, *, instance_id: str = INSTANCE,
                 registered: Collection[str] = (),
                 record: InstanceRecord | None = None) -> None:
        self.functions = {orchestrator.__name__: orchestrator}
        self.instance_id = instance_id
        self.registered = {orchestrator.__name__, *registered}
        self.stored = record.to_json() if record is not None else None
        self.episodes = 0

    def run(self, *incoming: ControlMessage, now: datetime) -> Episode:
        loaded = InstanceRecord.from_json(self.stored) if self.stored else None
        episode = Episode(loaded, list(incoming), now=now, orchestrators=self.registered,
                          activities=ACTIVITIES)
        if episode.admit():
            assert episode.record is not None
            episode.apply(replay(self.functions[episode.record.name], episode))
        # As the runtime does: only a changed record is written back.
        if episode.changed and episode.record is not None:
            self.stored = episode.record.to_json()
        self.episodes += 1
        return episode

    @property
    def record(self) -> InstanceRecord:
        assert self.stored is not None
        return InstanceRecord.from_json(self.stored)


def kinds(history: list[dict[str, Any]]) -> list[EventType]:
    return [EventType(event["EventType"]) for event in history]


def only(events: list[dict[str, Any]], kind: EventType) -> list[dict[str, Any]]:
    return [event for event in events if event["EventType"] == kind]


def timer_messages(episode: Episode) -> list[tuple[ControlMessage, datetime | None]]:
    return [(m, when) for m, when in episode.messages if m.event_type is E.TIMER_FIRED]


# ---- orchestrators under test --------------------------------------------------------------

def square_then_double(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    squared = yield ctx.call_activity("square", ctx.get_input())
    doubled = yield ctx.call_activity("double", squared)
    return doubled


def nap(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(minutes=5))
    return f"woke at {format_time(ctx.current_utc_datetime)}"


def retrying(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    options = df.RetryOptions(first_retry_interval_in_milliseconds=1000,
                              max_number_of_attempts=ctx.get_input())
    try:
        result = yield ctx.call_activity_with_retry("flaky", options, "payload")
    except Exception as exc:  # the orchestrator sees the last attempt's failure
        return f"gave up: {exc}"
    return f"got {result}"


def race_with_retry(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    options = df.RetryOptions(first_retry_interval_in_milliseconds=1000,
                              max_number_of_attempts=3)
    flaky = ctx.call_activity_with_retry("flaky", options, "payload")
    square = ctx.call_activity("square", 4)
    winner = yield ctx.task_any([flaky, square])
    doubled = yield ctx.call_activity("double", winner.result)
    return doubled


def rounds(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    n = ctx.get_input()
    if n == 0:
        yield ctx.call_activity("tick", n)
        ctx.continue_as_new(n + 1)
        return None
    note = yield ctx.wait_for_external_event("note")
    return {"round": n, "note": note}


def inbox(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    n = ctx.get_input()
    note = yield ctx.wait_for_external_event("note")
    if n == 0:
        ctx.continue_as_new(n + 1)
        return None
    return {"round": n, "note": note}


def approval(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    approved = ctx.wait_for_external_event("approve")
    deadline = ctx.create_timer(ctx.current_utc_datetime + timedelta(hours=1))
    winner = yield ctx.task_any([approved, deadline])
    if winner == approved:
        deadline.cancel()
        return {"approved_by": approved.result}
    return "timed out"


def two_votes(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    first = yield ctx.wait_for_external_event("vote")
    second = yield ctx.wait_for_external_event("vote")
    return [first, second]


def parent(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    child = yield ctx.call_sub_orchestrator("child", 5)
    return {"child": child}


def child(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    squared = yield ctx.call_activity("square", ctx.get_input())
    return squared


def calls_missing_activity(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    yield ctx.call_activity("missing", None)
    return "unreachable"


def raises(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    yield ctx.call_activity("square", 2)
    raise ValueError("boom after square")


# ---- a new instance ------------------------------------------------------------------------

def test_a_start_creates_the_instance_and_schedules_its_first_activity() -> None:
    instance = Instance(square_then_double)

    episode = instance.run(start("square_then_double", 3), now=T0)

    assert episode.activities == [ActivityWork(INSTANCE, EXECUTION, 0, "square", "3")]
    assert episode.messages == []
    assert (episode.outcome, episode.applied, episode.changed) == ("Running", 1, True)
    record = instance.record
    assert (record.name, record.status, record.input) == ("square_then_double", "Running", "3")
    assert record.created == record.updated == format_time(T0)
    assert kinds(record.history) == [E.ORCHESTRATOR_STARTED, E.EXECUTION_STARTED,
                                     E.TASK_SCHEDULED, E.ORCHESTRATOR_COMPLETED]
    scheduled = record.history[2]
    assert (scheduled["EventId"], scheduled["Name"], scheduled["Input"]) == (0, "square", "3")
    assert record.open_tasks == {"0": {"kind": "activity", "name": "square", "retry": None}}
    assert record.next_sequence == 1


def test_the_replay_input_is_the_shape_the_sdk_handle_reads() -> None:
    instance = Instance(square_then_double)
    instance.run(start("square_then_double", 3), now=T0)
    episode = Episode(instance.record, [completed(0, "square", 9)], now=at(1),
                      orchestrators={"square_then_double"}, activities=ACTIVITIES)
    assert episode.admit()

    context = json.loads(episode.orchestrator_input())

    assert context["instanceId"] == INSTANCE and context["input"] == "3"
    assert context["upperSchemaVersion"] == REPLAY_SCHEMA and context["parentInstanceId"] is None
    # The SDK tells replayed events from new ones by IsPlayed and the last OrchestratorStarted.
    history = context["history"]
    assert [e["IsPlayed"] for e in history] == [True] * 4 + [False, False]
    assert kinds(history)[-2:] == [E.ORCHESTRATOR_STARTED, E.TASK_COMPLETED]


def test_an_unregistered_orchestrator_fails_at_start() -> None:
    instance = Instance(square_then_double)

    episode = instance.run(start("nobody_registered_this"), now=T0)

    assert episode.outcome == "Failed" and episode.activities == []
    assert instance.record.output == ("The orchestrator function 'nobody_registered_this' is "
                                      "not registered in this app")


def test_an_unregistered_activity_fails_through_a_message_to_itself() -> None:
    instance = Instance(calls_missing_activity)

    first = instance.run(start("calls_missing_activity"), now=T0)

    assert first.activities == []
    [(failure, visible_at)] = first.messages
    assert failure.event_type is E.TASK_FAILED and visible_at is None
    second = instance.run(failure, now=at(1))
    assert second.outcome == "Failed"
    assert "The activity function 'missing' is not registered" in instance.record.output


# ---- replay: completions -------------------------------------------------------------------

def test_a_completion_resumes_the_orchestrator_at_its_next_step() -> None:
    instance = Instance(square_then_double)
    instance.run(start("square_then_double", 3), now=T0)

    episode = instance.run(completed(0, "square", 9), now=at(1))

    assert episode.activities == [ActivityWork(INSTANCE, EXECUTION, 1, "double", "9")]
    history = instance.record.history
    assert kinds(history)[4:] == [E.ORCHESTRATOR_STARTED, E.TASK_COMPLETED, E.TASK_SCHEDULED,
                                  E.ORCHESTRATOR_COMPLETED]
    assert history[4]["Timestamp"] == format_time(at(1))
    assert instance.record.open_tasks == {
        "1": {"kind": "activity", "name": "double", "retry": None}}

    final = instance.run(completed(1, "double", 18), now=at(2))

    assert (final.outcome, final.activities) == ("Completed", [])
    record = instance.record
    assert (record.status, record.output, record.open_tasks) == ("Completed", 18, {})
    assert kinds(record.history)[-2:] == [E.EXECUTION_COMPLETED, E.ORCHESTRATOR_COMPLETED]
    assert record.history[-2]["Result"] == "18"


def test_redelivered_completions_are_not_admitted_twice() -> None:
    instance = Instance(square_then_double)
    instance.run(start("square_then_double", 3), now=T0)
    instance.run(completed(0, "square", 9), now=at(1))
    before = instance.stored

    # At-least-once delivery: the same message again, alone, changes nothing at all.
    alone = instance.run(completed(0, "square", 9), now=at(2))

    assert (alone.outcome, alone.changed, alone.activities) == (
        "dropped: duplicate or stale events", False, [])
    assert instance.stored == before

    # In a batch with a new result (twice, by different messages), only the new one counts.
    batch = instance.run(completed(0, "square", 9, message_id="again"),
                         completed(1, "double", 18),
                         completed(1, "double", 18, message_id="copy"), now=at(3))

    assert batch.applied == 1 and batch.outcome == "Completed"
    assert len(only(instance.record.history, E.TASK_COMPLETED)) == 2
    assert instance.record.output == 18

    late = instance.run(completed(1, "double", 18), now=at(4))
    assert (late.outcome, late.changed) == ("dropped: instance is Completed", False)


def test_stale_completions_are_dropped() -> None:
    instance = Instance(square_then_double)
    instance.run(start("square_then_double", 3), now=T0)
    stale = [
        completed(0, "double", 9, message_id="wrong-name"),
        completed(0, "square", 9, message_id="old-execution", execution="exec-0"),
        completed(7, "square", 9, message_id="unknown-task"),
        # A timer result for a task id that is an activity.
        ControlMessage("wrong-kind", INSTANCE, EXECUTION,
                       new_event(E.TIMER_FIRED, T0, TimerId=0, FireAt=format_time(T0))),
    ]

    episode = instance.run(*stale, now=at(1))

    assert (episode.outcome, episode.changed) == ("dropped: duplicate or stale events", False)
    assert instance.record.open_tasks == {
        "0": {"kind": "activity", "name": "square", "retry": None}}


def test_an_orchestrator_exception_fails_the_instance_with_its_message() -> None:
    instance = Instance(raises)
    instance.run(start("raises"), now=T0)

    episode = instance.run(completed(0, "square", 4), now=at(1))

    assert episode.outcome == "Failed"
    assert instance.record.output == "Orchestrator function 'raises' failed: boom after square"


def test_terminate_ends_the_instance_and_later_results_are_dropped() -> None:
    instance = Instance(square_then_double)
    instance.run(start("square_then_double", 3), now=T0)

    # A result arriving with the termination is not applied: terminate wins.
    episode = instance.run(completed(0, "square", 9), terminate("no longer needed"),
                           now=at(1))

    assert (episode.outcome, episode.activities) == ("Terminated", [])
    record = instance.record
    assert (record.status, record.output, record.open_tasks) == (
        "Terminated", "no longer needed", {})
    assert kinds(record.history)[-3:] == [E.ORCHESTRATOR_STARTED, E.EXECUTION_TERMINATED,
                                          E.ORCHESTRATOR_COMPLETED]
    late = instance.run(completed(0, "square", 9, message_id="late"), now=at(2))
    assert late.outcome == "dropped: instance is Terminated"


# ---- durable timers ------------------------------------------------------------------------

def test_a_timer_is_a_message_visible_at_its_fire_time_that_resumes_the_orchestrator() -> None:
    instance = Instance(nap)

    first = instance.run(start("nap"), now=T0)

    fire_at = T0 + timedelta(minutes=5)
    [(timer, visible_at)] = first.messages
    assert visible_at == fire_at and first.activities == []
    assert (timer.instance_id, timer.execution_id) == (INSTANCE, EXECUTION)
    assert timer.event_type is E.TIMER_FIRED
    assert (timer.event["TimerId"], timer.event["FireAt"]) == (0, format_time(fire_at))
    created = only(instance.record.history, E.TIMER_CREATED)
    assert [(e["EventId"], e["FireAt"]) for e in created] == [(0, format_time(fire_at))]
    assert instance.record.open_tasks == {"0": {"kind": "timer", "name": "", "retry": None}}

    second = instance.run(timer, now=fire_at)

    assert second.outcome == "Completed"
    # The orchestrator's clock is the episode's: the one that admitted the timer.
    assert instance.record.output == f"woke at {format_time(fire_at)}"


# ---- retries -------------------------------------------------------------------------------

def test_a_failed_attempt_waits_on_a_retry_timer_then_runs_the_activity_again() -> None:
    instance = Instance(retrying)
    first = instance.run(start("retrying", 3), now=T0)
    assert first.activities == [ActivityWork(INSTANCE, EXECUTION, 0, "flaky", '"payload"')]

    after_failure = instance.run(failed(0, "flaky", "flaky failed: try again"), now=at(10))

    # The failure takes sequence number 1 for its timer; nothing runs until the timer fires.
    assert after_failure.activities == [] and after_failure.outcome == "Running"
    [(timer, visible_at)] = timer_messages(after_failure)
    assert timer.event["TimerId"] == 1 and visible_at == at(11)
    assert instance.record.retries["0"]["attempts"] == 1

    after_timer = instance.run(timer, now=at(11))

    assert after_timer.activities == [ActivityWork(INSTANCE, EXECUTION, 2, "flaky", '"payload"')]
    assert instance.record.retries["0"]["attempts"] == 2

    done = instance.run(completed(2, "flaky", "ok"), now=at(12))

    assert done.outcome == "Completed" and instance.record.output == "got ok"
    assert kinds(instance.record.history).count(E.TASK_SCHEDULED) == 2


def test_after_the_last_failed_attempt_the_orchestrator_sees_the_failure() -> None:
    instance = Instance(retrying)
    instance.run(start("retrying", 2), now=T0)
    instance.run(failed(0, "flaky", "attempt 1 failed"), now=at(10))
    instance.run(ControlMessage("timer-1", INSTANCE, EXECUTION, new_event(
        E.TIMER_FIRED, T0, TimerId=1, FireAt=format_time(at(11)))), now=at(11))

    last = instance.run(failed(2, "flaky", "attempt 2 failed"), now=at(20))

    # As DTFx, the SDK still waits on one more timer; devhost makes it due at once.
    assert last.activities == []
    [(timer, visible_at)] = timer_messages(last)
    assert timer.event["TimerId"] == 3 and visible_at == at(20)
    assert instance.record.status == "Running"

    gave_up = instance.run(timer, now=at(20))

    assert gave_up.outcome == "Completed" and gave_up.activities == []
    assert instance.record.output.startswith("gave up: attempt 2 failed")
    history = kinds(instance.record.history)
    assert (history.count(E.TASK_SCHEDULED), history.count(E.TASK_FAILED),
            history.count(E.TIMER_CREATED)) == (2, 2, 2)


def test_retry_events_take_sequence_numbers_before_newly_yielded_tasks() -> None:
    instance = Instance(race_with_retry)
    first = instance.run(start("race_with_retry"), now=T0)
    # Depth-first through task_any: the with-retry activity first.
    assert [(w.task_id, w.name) for w in first.activities] == [(0, "flaky"), (1, "square")]

    # The winner's result arrives before the failure, yet the SDK numbers the retry timer
    # first (it replays the history in order, and the episode puts the failure first).
    episode = instance.run(completed(1, "square", 16), failed(0, "flaky", "nope"), now=at(1))

    assert [(w.task_id, w.name, w.input) for w in episode.activities] == [(3, "double", "16")]
    assert [m.event["TimerId"] for m, _ in timer_messages(episode)] == [2]
    assert kinds(instance.record.history)[-5:] == [
        E.TASK_FAILED, E.TIMER_CREATED, E.TASK_COMPLETED, E.TASK_SCHEDULED,
        E.ORCHESTRATOR_COMPLETED]

    # Had the numbers disagreed, this result would resolve the SDK's retry timer instead.
    done = instance.run(completed(3, "double", 32), now=at(2))

    assert done.outcome == "Completed" and instance.record.output == 32


# ---- continue-as-new -----------------------------------------------------------------------

def test_continue_as_new_restarts_with_the_new_input_and_a_fresh_history() -> None:
    instance = Instance(rounds)
    instance.run(start("rounds", 0), now=T0)

    # An event the old execution never waited for arrives with the result that ends it.
    episode = instance.run(completed(0, "tick", None), raised("note", "early", message_id="n1"),
                           now=at(1))

    new_execution = execution_id_after(INSTANCE, EXECUTION)
    assert episode.outcome == "ContinuedAsNew" and episode.activities == []
    record = instance.record
    assert (record.status, record.input, record.execution_id) == (
        "ContinuedAsNew", "1", new_execution)
    assert (record.history, record.scheduled, record.open_tasks) == ([], [], {})
    # The event's id outlives the execution it was applied to: a redelivery is a duplicate.
    assert record.raised == ["n1"]
    assert record.next_sequence == 0
    [(restart, visible_at)] = episode.messages
    assert visible_at is None and restart.event_type is E.EXECUTION_STARTED
    assert (restart.instance_id, restart.execution_id) == (INSTANCE, new_execution)
    assert (restart.event["Name"], restart.event["Input"]) == ("rounds", "1")
    assert "ParentInstance" not in restart.event

    restarted = instance.run(restart, now=at(2))

    assert restarted.outcome == "Running"
    record = instance.record
    assert record.created == format_time(T0)  # still the same instance
    assert kinds(record.history) == [E.ORCHESTRATOR_STARTED, E.EXECUTION_STARTED,
                                     E.ORCHESTRATOR_COMPLETED]
    # Documented: events the old execution did not consume are dropped with it.
    assert only(record.history, E.EVENT_RAISED) == []

    # A start sent again (the continuing episode re-ran after a crash) is a duplicate.
    again = instance.run(restart, now=at(3))
    assert (again.outcome, again.changed) == ("dropped: duplicate or stale events", False)
    # So is a late result for the old execution.
    stale = instance.run(completed(0, "tick", None, message_id="late"), now=at(3))
    assert (stale.outcome, stale.changed) == ("dropped: duplicate or stale events", False)

    done = instance.run(raised("note", "hello", message_id="n2"), now=at(4))

    assert done.outcome == "Completed"
    assert instance.record.output == {"round": 1, "note": "hello"}


def test_events_raised_between_continue_as_new_and_the_new_start_are_carried_over() -> None:
    instance = Instance(rounds)
    instance.run(start("rounds", 0), now=T0)
    [(restart, _)] = instance.run(completed(0, "tick", None), now=at(1)).messages

    waiting = instance.run(raised("note", "in between", message_id="n1"), now=at(2))

    assert (waiting.outcome, waiting.changed) == ("buffered until start", True)
    assert [e["Input"] for e in instance.record.buffered] == ['"in between"']

    episode = instance.run(restart, now=at(3))

    assert episode.outcome == "Completed"
    assert instance.record.output == {"round": 1, "note": "in between"}
    assert instance.record.buffered == []


def test_a_consumed_event_redelivered_after_continue_as_new_is_dropped() -> None:
    instance = Instance(inbox)
    instance.run(start("inbox", 0), now=T0)
    note = raised("note", "once", message_id="n1")
    [(restart, _)] = instance.run(note, now=at(1)).messages
    instance.run(restart, now=at(2))

    redelivered = instance.run(note, now=at(3))

    # The new execution must still be waiting for a note of its own.
    assert redelivered.outcome == "dropped: duplicate or stale events"
    assert instance.record.status == "Running"


# ---- external events -----------------------------------------------------------------------

def test_an_external_event_wins_a_task_any_against_a_timer() -> None:
    instance = Instance(approval)
    first = instance.run(start("approval"), now=T0)

    # Waiting for an event takes no sequence number: the timer is task 0.
    [(timer, visible_at)] = first.messages
    assert timer.event["TimerId"] == 0 and visible_at == T0 + timedelta(hours=1)
    assert [(s["kind"], s["name"], s["id"]) for s in instance.record.scheduled] == [
        (6, "approve", None), (5, "", 0)]

    episode = instance.run(raised("approve", "alice", message_id="ev-1"), now=at(30))

    assert episode.outcome == "Completed"
    assert instance.record.output == {"approved_by": "alice"}
    assert instance.record.raised == ["ev-1"]

    late_timer = instance.run(timer, now=T0 + timedelta(hours=1))
    assert (late_timer.outcome, late_timer.changed) == ("dropped: instance is Completed", False)


def test_the_timer_wins_a_task_any_when_no_event_comes() -> None:
    instance = Instance(approval)
    [(timer, visible_at)] = instance.run(start("approval"), now=T0).messages

    episode = instance.run(timer, now=visible_at)

    assert episode.outcome == "Completed" and instance.record.output == "timed out"
    late = instance.run(raised("approve", "bob", message_id="ev-late"), now=visible_at)
    assert late.outcome == "dropped: instance is Completed"


def test_a_redelivered_event_is_applied_once() -> None:
    instance = Instance(two_votes)
    instance.run(start("two_votes"), now=T0)
    first = raised("vote", "yes", message_id="v1")
    instance.run(first, now=at(1))

    again = instance.run(first, now=at(2))

    assert (again.outcome, again.changed) == ("dropped: duplicate or stale events", False)
    done = instance.run(raised("vote", "no", message_id="v2"), now=at(3))
    assert done.outcome == "Completed" and instance.record.output == ["yes", "no"]


def test_an_event_raised_before_the_first_episode_is_applied_with_the_start() -> None:
    # What InstanceManager.start saves before the start message is processed.
    pending = InstanceRecord(instance_id=INSTANCE, name="approval", execution_id=EXECUTION,
                             status="Pending", created=format_time(T0),
                             updated=format_time(T0), input="null")
    instance = Instance(approval, record=pending)

    early = instance.run(raised("approve", "carol", message_id="ev-1"), now=T0)

    assert (early.outcome, instance.record.status) == ("buffered until start", "Pending")

    episode = instance.run(start("approval"), now=at(1))

    assert episode.outcome == "Completed"
    assert instance.record.output == {"approved_by": "carol"}
    assert kinds(instance.record.history)[:3] == [E.ORCHESTRATOR_STARTED, E.EXECUTION_STARTED,
                                                  E.EVENT_RAISED]


def test_a_buffered_event_redelivered_with_the_start_is_applied_once() -> None:
    pending = InstanceRecord(instance_id=INSTANCE, name="two_votes", execution_id=EXECUTION,
                             status="Pending", created=format_time(T0),
                             updated=format_time(T0), input="null")
    instance = Instance(two_votes, record=pending)
    vote = raised("vote", "yes", message_id="v1")
    instance.run(vote, now=T0)

    # Buffered, saved, then redelivered before its delete: it counts as one vote.
    instance.run(start("two_votes"), vote, now=at(1))

    assert instance.record.status == "Running"
    assert len(only(instance.record.history, E.EVENT_RAISED)) == 1


def test_the_remembered_event_ids_are_a_bounded_window_of_the_latest() -> None:
    # Every event of one episode (the copies a lost delete brings back) fits in the window.
    assert REMEMBERED_EVENT_IDS > _MAX_HELD_CONTROL
    instance = Instance(two_votes)
    instance.run(start("two_votes"), now=T0)
    full = instance.record
    full.raised = [f"old-{n}" for n in range(REMEMBERED_EVENT_IDS)]
    instance = Instance(two_votes, record=full)

    instance.run(raised("vote", "yes", message_id="v1"), now=at(1))

    # The record is written on every episode: the oldest id makes room for the newest.
    remembered = instance.record.raised
    assert len(remembered) == REMEMBERED_EVENT_IDS
    assert (remembered[0], remembered[-1]) == ("old-1", "v1")
    again = instance.run(raised("vote", "yes", message_id="old-1"), now=at(2))
    assert (again.outcome, again.changed) == ("dropped: duplicate or stale events", False)


# ---- sub-orchestrations --------------------------------------------------------------------

def test_a_sub_orchestration_starts_by_message_and_reports_back_to_its_parent() -> None:
    outer = Instance(parent, registered={"child"})
    first = outer.run(start("parent"), now=T0)

    [(child_start, _)] = first.messages
    assert child_start.event_type is E.EXECUTION_STARTED
    assert child_start.instance_id == f"{INSTANCE}:0"
    assert child_start.event["ParentInstance"] == {
        "InstanceId": INSTANCE, "ExecutionId": EXECUTION, "TaskScheduledId": 0}
    inner = Instance(child, instance_id=child_start.instance_id)
    inner.run(child_start, now=at(1))
    assert inner.record.parent is not None and inner.record.parent.task_id == 0

    finished = inner.run(completed(0, "square", 25, instance=inner.instance_id,
                                   execution=child_start.execution_id), now=at(2))

    [(report, _)] = finished.messages
    assert (report.instance_id, report.execution_id) == (INSTANCE, EXECUTION)
    assert report.event_type is E.SUB_ORCHESTRATION_INSTANCE_COMPLETED
    done = outer.run(report, now=at(3))
    assert done.outcome == "Completed" and outer.record.output == {"child": 25}


# ---- non-determinism -----------------------------------------------------------------------

def test_a_replay_that_schedules_a_different_action_fails_as_non_deterministic() -> None:
    activity = ["square"]

    def fickle(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        result = yield ctx.call_activity(activity[0], 1)
        return result

    instance = Instance(fickle)
    instance.run(start("fickle"), now=T0)
    activity[0] = "double"  # the code changed while the instance was running

    episode = instance.run(completed(0, "square", 1), now=at(1))

    assert episode.outcome == "Failed" and episode.activities == []
    output = instance.record.output
    assert output.startswith("Non-deterministic workflow detected: orchestration 'fickle'")
    assert "activity 'square' (task 0) as action #0" in output
    assert "scheduled activity 'double' there instead" in output
    assert instance.record.open_tasks == {}


def test_a_replay_that_drops_a_scheduled_action_fails_as_non_deterministic() -> None:
    skip = [False]

    def forgetful(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
        if not skip[0]:
            yield ctx.call_activity("square", 1)
        return "done"

    instance = Instance(forgetful)
    instance.run(start("forgetful"), now=T0)
    skip[0] = True

    episode = instance.run(completed(0, "square", 1), now=at(1))

    assert episode.outcome == "Failed"
    assert "previously scheduled activity 'square' (task 0) as action #0, but this replay " \
           "did not schedule it" in instance.record.output
