"""One orchestration episode, without I/O: admit new events, then apply the replay's decision.

This is the part of the Durable extension (and the Durable Task Framework below it) that sits
on the other side of the replay protocol: it owns the history, hands out task sequence
numbers exactly as the Python SDK counts them, runs the retry policy of `call_*_with_retry`,
and detects non-deterministic orchestrators.

Sequence numbers: the SDK numbers every task when it is first yielded (depth-first through
`task_all`/`task_any`), and a with-retry task also numbers the timer it waits on after each
failure and each re-scheduled attempt, at the moment it replays that failure or timer event.
The SDK sends only the leaves it yielded (never the retry timers), so this module keeps the
count itself: per episode it puts the retry events that take a number (an attempt's failure,
a retry timer with attempts left) first among the new events — none of them can resume the
user code — and then the SDK numbers newly yielded leaves after them, in yield order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from devhost.durable.actions import (
    REPLAY_SCHEMA,
    UNSUPPORTED,
    Action,
    ActionKind,
    Decision,
    RetryPolicy,
)
from devhost.durable.history import (
    COMPLETION_ID_FIELD,
    EventType,
    completion_id,
    format_time,
    new_event,
)
from devhost.durable.records import ActivityWork, ControlMessage, InstanceRecord, ParentRef

_FAILURES = {EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_INSTANCE_FAILED}
_TASK_EVENTS = {
    "activity": {EventType.TASK_COMPLETED, EventType.TASK_FAILED},
    "timer": {EventType.TIMER_FIRED},
    "sub": {EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED,
            EventType.SUB_ORCHESTRATION_INSTANCE_FAILED},
}
_ACTIVITY_KINDS = {ActionKind.CALL_ACTIVITY, ActionKind.CALL_ACTIVITY_WITH_RETRY}
_SUB_KINDS = {ActionKind.CALL_SUB_ORCHESTRATOR, ActionKind.CALL_SUB_ORCHESTRATOR_WITH_RETRY}
# The message ids of applied external events that a record keeps: the latest ones, across
# executions, since a redelivered event can reach the execution after the one it was applied
# to (continue-as-new). A window, not all of them: the record is written on every episode and
# an eternal orchestration would grow it forever; 1,000 of devhost's ids are ~35 KB of JSON.
# Copies come from one episode whose deletes were lost and reappear a lease (10 s) later or
# when the host starts again; the runtime holds at most 512 control messages, so that episode
# applied at most 512 events, and the window still holds all of them after about 500 newer
# ones, however many executions those spanned.
REMEMBERED_EVENT_IDS = 1000


def execution_id_after(instance_id: str, execution_id: str, salt: str = "") -> str:
    """A deterministic execution id, so that a re-run episode sends the same messages."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{instance_id}/{execution_id}/{salt}").hex


class Episode:
    """Admit a batch of control messages for one instance and, after replay, apply the result.

    Outputs: `record` (None when the instance is unknown and nothing created it),
    `activities` to enqueue, `messages` (control messages, with the time they become
    visible or None), `changed` (whether `record` must be saved) and `outcome` for the log.
    """

    def __init__(self, record: InstanceRecord | None, incoming: list[ControlMessage], *,
                 now: datetime, orchestrators: Collection[str], activities: Collection[str]):
        self.record = record
        self.incoming = incoming
        self.now = now
        self.orchestrators = orchestrators
        self.known_activities = activities
        self.activities: list[ActivityWork] = []
        self.messages: list[tuple[ControlMessage, datetime | None]] = []
        self.changed = False
        self.applied = 0
        self.outcome = "no-op"

    # ---- before the replay -------------------------------------------------------------

    def admit(self) -> bool:
        """Filter and order the new events into the history; True when a replay is needed."""
        start = None
        for message in self.incoming:
            if message.event_type is EventType.EXECUTION_STARTED:
                start = self._admit_start(message) or start
        record = self.record
        if record is None:
            self.outcome = "dropped: unknown instance"
            return False
        if start is None and record.terminal:
            if not self.changed:
                self.outcome = f"dropped: instance is {record.status}"
            return False
        terminate = next((m for m in self.incoming
                          if m.event_type is EventType.EXECUTION_TERMINATED
                          and m.execution_id in (None, record.execution_id)), None)
        if terminate is not None:
            self._terminate(str(terminate.event.get("Input") or ""))
            return False
        admitted = self._admit_events(record)
        if start is None and not record.started:
            # Events before the start (e.g. raise_event right after start_new) wait for it.
            record.buffered.extend(event for event, _ in admitted)
            self.changed = bool(admitted)
            self.outcome = "buffered until start"
            return False
        new_events = ([(start, None), *((e, None) for e in record.buffered), *admitted]
                      if start is not None else admitted)
        if not new_events:
            self.outcome = "dropped: duplicate or stale events"
            return False
        record.buffered = []
        for event in record.history:
            event["IsPlayed"] = True
        record.history.append(new_event(EventType.ORCHESTRATOR_STARTED, self.now))
        for event, retry_key in new_events:
            record.history.append({**event, "IsPlayed": False})
            if retry_key is not None:
                self._after_retry_event(event, retry_key)
        record.status = "Running"
        self.applied = len(new_events)
        self.changed = True
        return True

    def orchestrator_input(self) -> str:
        """The orchestration trigger's JSON: the history the handle replays."""
        record = self._require_record()
        return json.dumps({
            "history": record.history,
            "instanceId": record.instance_id,
            "isReplaying": False,
            "parentInstanceId": record.parent.instance_id if record.parent else None,
            "input": record.input,
            "upperSchemaVersion": REPLAY_SCHEMA,
        })

    # ---- after the replay --------------------------------------------------------------

    def apply(self, decision: Decision) -> None:
        """Turn the orchestrator's decision into history, status and outgoing work."""
        record = self._require_record()
        record.custom_status = decision.custom_status
        mismatch = self._nondeterminism(decision)
        if mismatch:
            self._fail(mismatch)
            return
        if decision.error is not None:
            self._fail(f"Orchestrator function '{record.name}' failed: {decision.error}")
            return
        new_actions = decision.actions[len(record.scheduled):]
        unsupported = next((a for a in new_actions if a.kind in UNSUPPORTED), None)
        if unsupported is not None:
            self._fail(f"Orchestrator function '{record.name}' uses "
                       f"{UNSUPPORTED[unsupported.kind]}, which devhost does not support")
            return
        continued = decision.continue_as_new
        if decision.done and continued is None:
            self._complete(decision.output)
            return
        for action in new_actions:
            self._schedule(action)
        if continued is not None:
            self._continue_as_new(continued)
            return
        record.history.append(new_event(EventType.ORCHESTRATOR_COMPLETED, self.now))
        record.updated = format_time(self.now)
        self.outcome = "Running"

    # ---- admission -----------------------------------------------------------------------

    def _admit_start(self, message: ControlMessage) -> dict[str, Any] | None:
        event = message.event
        parent = _parent_of(event)
        execution = message.execution_id or uuid.uuid4().hex
        record = self.record
        accept = (record is None
                  or (record.execution_id == execution and not record.started)
                  or (parent is not None and record.terminal))
        if not accept:
            if parent is not None and record is not None and record.execution_id != execution:
                self._notify_parent_failed(parent, f"an orchestration with instance id "
                                           f"'{message.instance_id}' is already {record.status}")
            return None
        created = (record.created if record is not None and record.execution_id == execution
                   else format_time(self.now))
        self.record = InstanceRecord(
            instance_id=message.instance_id, name=str(event.get("Name") or ""),
            execution_id=execution, status="Running", created=created,
            updated=format_time(self.now), input=event.get("Input"), parent=parent,
            custom_status=record.custom_status if record is not None else None,
            raised=record.raised if record is not None else [],
            buffered=record.buffered if record is not None and not record.started else [],
        )
        self.changed = True
        if self.record.name not in self.orchestrators:
            self.record.history.append(new_event(EventType.ORCHESTRATOR_STARTED, self.now))
            self.record.history.append({**event, "IsPlayed": False})
            self._fail(f"The orchestrator function '{self.record.name}' is not registered "
                       f"in this app")
            return None
        return {**event, "Timestamp": format_time(self.now)}

    def _admit_events(self, record: InstanceRecord) -> list[tuple[dict[str, Any], str | None]]:
        """New events worth applying, those that take a sequence number first."""
        first: list[tuple[dict[str, Any], str | None]] = []
        rest: list[tuple[dict[str, Any], str | None]] = []
        for message in self.incoming:
            kind = message.event_type
            if message.execution_id not in (None, record.execution_id):
                continue
            if kind is EventType.EVENT_RAISED:
                if message.message_id in record.raised:
                    continue
                record.raised.append(message.message_id)
                rest.append((message.event, None))
            elif kind in COMPLETION_ID_FIELD:
                task_key = str(completion_id(message.event))
                task = record.open_tasks.get(task_key)
                if task is None or kind not in _TASK_EVENTS[task["kind"]]:
                    continue  # a duplicate (at-least-once delivery) or a stale result
                if task["kind"] == "activity" and message.event.get("Name") not in (
                        None, task["name"]):
                    continue
                del record.open_tasks[task_key]
                (first if self._takes_number(task, kind) else rest).append(
                    (message.event, task["retry"]))
        del record.raised[:-REMEMBERED_EVENT_IDS]
        return first + rest

    def _takes_number(self, task: dict[str, Any], kind: EventType) -> bool:
        if task["retry"] is None:
            return False
        if kind in _FAILURES:
            return True
        state = self._require_record().retries[task["retry"]]
        return kind is EventType.TIMER_FIRED and state["attempts"] < state["max_attempts"]

    def _after_retry_event(self, event: dict[str, Any], retry_key: str) -> None:
        """Run the retry policy: a failed attempt gets a timer, its timer the next attempt."""
        state = self._require_record().retries[retry_key]
        kind = EventType(event["EventType"])
        if kind in _FAILURES:
            policy = RetryPolicy.from_json(state["policy"])
            # After the last attempt the SDK still waits on one timer (DTFx does the same);
            # it has nothing left to wait for, so it fires at once.
            delay = (policy.delay(state["attempts"]) if state["attempts"] < policy.max_attempts
                     else timedelta(0))
            self._schedule_timer(self._allocate(), self.now + delay, retry_key)
        elif kind is EventType.TIMER_FIRED and state["attempts"] < state["max_attempts"]:
            state["attempts"] += 1
            task_id = self._allocate()
            if state["kind"] == "activity":
                self._schedule_activity(task_id, state["name"], state["input"], retry_key)
            else:
                self._schedule_sub(task_id, state["name"], state["input"], state["instance"],
                                   retry_key, attempt=state["attempts"])

    # ---- determinism -------------------------------------------------------------------

    def _nondeterminism(self, decision: Decision) -> str | None:
        record = self._require_record()
        for index, (action, past) in enumerate(zip(decision.actions, record.scheduled,
                                                   strict=False)):
            if int(action.kind) != past["kind"] or action.name != past["name"]:
                return (f"Non-deterministic workflow detected: orchestration '{record.name}' "
                        f"previously scheduled {_describe(past)} as action #{index}, but this "
                        f"replay scheduled {action.describe()} there instead. Orchestrator code "
                        f"must be deterministic (no clocks, random values, I/O or changing "
                        f"globals); was the code changed while this instance was running?")
        if len(decision.actions) < len(record.scheduled) and decision.error is None:
            past = record.scheduled[len(decision.actions)]
            return (f"Non-deterministic workflow detected: orchestration '{record.name}' "
                    f"previously scheduled {_describe(past)} as action "
                    f"#{len(decision.actions)}, but this replay did not schedule it. "
                    f"Orchestrator code must be deterministic.")
        return None

    # ---- scheduling --------------------------------------------------------------------

    def _allocate(self) -> int:
        record = self._require_record()
        task_id = record.next_sequence
        record.next_sequence += 1
        return task_id

    def _schedule(self, action: Action) -> None:
        record = self._require_record()
        task_id = self._allocate() if action.takes_sequence_number else None
        record.scheduled.append({"kind": int(action.kind), "name": action.name, "id": task_id})
        if task_id is None or action.kind is ActionKind.CONTINUE_AS_NEW:
            return
        retry_key = None
        if action.kind in _ACTIVITY_KINDS | _SUB_KINDS:
            child = action.instance_id or f"{record.instance_id}:{task_id}"
            if action.retry is not None:
                retry_key = str(task_id)
                record.retries[retry_key] = {
                    "kind": "activity" if action.kind in _ACTIVITY_KINDS else "sub",
                    "name": action.name, "input": action.input, "instance": child,
                    "attempts": 1, "max_attempts": action.retry.max_attempts,
                    "policy": action.retry.to_json()}
            if action.kind in _ACTIVITY_KINDS:
                self._schedule_activity(task_id, action.name, action.input, retry_key)
            else:
                self._schedule_sub(task_id, action.name, action.input, child, retry_key,
                                   attempt=1)
        elif action.kind is ActionKind.CREATE_TIMER:
            self._schedule_timer(task_id, action.fire_at or self.now, None)

    def _schedule_activity(self, task_id: int, name: str, payload: str | None,
                           retry_key: str | None) -> None:
        record = self._require_record()
        record.history.append(new_event(EventType.TASK_SCHEDULED, self.now, event_id=task_id,
                                        Name=name, Input=payload))
        record.open_tasks[str(task_id)] = {"kind": "activity", "name": name, "retry": retry_key}
        if name in self.known_activities:
            self.activities.append(ActivityWork(record.instance_id, record.execution_id,
                                                task_id, name, payload))
        else:
            self._send_self(new_event(
                EventType.TASK_FAILED, self.now, TaskScheduledId=task_id, Name=name,
                Reason=f"The activity function '{name}' is not registered in this app",
                Details=""))

    def _schedule_timer(self, task_id: int, fire_at: datetime, retry_key: str | None) -> None:
        record = self._require_record()
        fire_text = format_time(fire_at)
        record.history.append(new_event(EventType.TIMER_CREATED, self.now, event_id=task_id,
                                        FireAt=fire_text))
        record.open_tasks[str(task_id)] = {"kind": "timer", "name": "", "retry": retry_key}
        self._send_self(new_event(EventType.TIMER_FIRED, self.now, TimerId=task_id,
                                  FireAt=fire_text), visible_at=fire_at)

    def _schedule_sub(self, task_id: int, name: str, payload: str | None, child: str,
                      retry_key: str | None, *, attempt: int) -> None:
        record = self._require_record()
        record.history.append(new_event(
            EventType.SUB_ORCHESTRATION_INSTANCE_CREATED, self.now, event_id=task_id,
            Name=name, Input=payload, InstanceId=child))
        record.open_tasks[str(task_id)] = {"kind": "sub", "name": name, "retry": retry_key}
        if name not in self.orchestrators:
            self._send_self(new_event(
                EventType.SUB_ORCHESTRATION_INSTANCE_FAILED, self.now, TaskScheduledId=task_id,
                Reason=f"The orchestrator function '{name}' is not registered in this app",
                Details=""))
            return
        parent = {"InstanceId": record.instance_id, "ExecutionId": record.execution_id,
                  "TaskScheduledId": task_id}
        execution = execution_id_after(child, record.execution_id, f"{task_id}/{attempt}")
        self.messages.append((ControlMessage(
            uuid.uuid4().hex, child, execution,
            new_event(EventType.EXECUTION_STARTED, self.now, Name=name, Input=payload,
                      Version="", ParentInstance=parent)), None))

    # ---- endings -----------------------------------------------------------------------

    def _complete(self, output: Any) -> None:
        record = self._require_record()
        result = json.dumps(output)
        self._finish("Completed", output, new_event(
            EventType.EXECUTION_COMPLETED, self.now, OrchestrationStatus="Completed",
            Result=result))
        if record.parent is not None:
            self._notify_parent(record.parent, new_event(
                EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED, self.now,
                TaskScheduledId=record.parent.task_id, Result=result))

    def _fail(self, message: str) -> None:
        record = self._require_record()
        self._finish("Failed", message, new_event(
            EventType.EXECUTION_COMPLETED, self.now, OrchestrationStatus="Failed",
            Result=message))
        if record.parent is not None:
            self._notify_parent_failed(record.parent, message)

    def _terminate(self, reason: str) -> None:
        record = self._require_record()
        record.history.append(new_event(EventType.ORCHESTRATOR_STARTED, self.now))
        self._finish("Terminated", reason, new_event(
            EventType.EXECUTION_TERMINATED, self.now, Input=reason))
        if record.parent is not None:
            self._notify_parent_failed(
                record.parent, f"Sub-orchestration '{record.instance_id}' was terminated: "
                               f"{reason}")

    def _finish(self, status: str, output: Any, final_event: dict[str, Any]) -> None:
        record = self._require_record()
        record.history.append(final_event)
        record.history.append(new_event(EventType.ORCHESTRATOR_COMPLETED, self.now))
        record.status = status
        record.output = output
        record.open_tasks = {}
        record.updated = format_time(self.now)
        self.changed = True
        self.outcome = status

    def _continue_as_new(self, action: Action) -> None:
        record = self._require_record()
        execution = execution_id_after(record.instance_id, record.execution_id)
        parent = record.parent
        start = new_event(EventType.EXECUTION_STARTED, self.now, Name=record.name,
                          Input=action.input, Version="")
        if parent is not None:
            start["ParentInstance"] = {"InstanceId": parent.instance_id,
                                       "ExecutionId": parent.execution_id,
                                       "TaskScheduledId": parent.task_id}
        record.execution_id = execution
        record.status = "ContinuedAsNew"
        record.input = action.input
        record.output = None
        record.history = []
        record.next_sequence = 0
        record.scheduled = []
        record.open_tasks = {}
        record.retries = {}
        record.updated = format_time(self.now)
        self.messages.append((ControlMessage(uuid.uuid4().hex, record.instance_id, execution,
                                             start), None))
        self.outcome = "ContinuedAsNew"

    # ---- messages ----------------------------------------------------------------------

    def _send_self(self, event: dict[str, Any], visible_at: datetime | None = None) -> None:
        record = self._require_record()
        self.messages.append((ControlMessage(uuid.uuid4().hex, record.instance_id,
                                             record.execution_id, event), visible_at))

    def _notify_parent(self, parent: ParentRef, event: dict[str, Any]) -> None:
        self.messages.append((ControlMessage(uuid.uuid4().hex, parent.instance_id,
                                             parent.execution_id, event), None))

    def _notify_parent_failed(self, parent: ParentRef, reason: str) -> None:
        self._notify_parent(parent, new_event(
            EventType.SUB_ORCHESTRATION_INSTANCE_FAILED, self.now,
            TaskScheduledId=parent.task_id, Reason=reason, Details=""))

    def _require_record(self) -> InstanceRecord:
        if self.record is None:
            raise RuntimeError("episode has no instance record")
        return self.record


def _parent_of(event: dict[str, Any]) -> ParentRef | None:
    parent = event.get("ParentInstance")
    if not isinstance(parent, dict):
        return None
    return ParentRef(instance_id=str(parent["InstanceId"]),
                     execution_id=str(parent["ExecutionId"]),
                     task_id=int(parent["TaskScheduledId"]))


def _describe(past: dict[str, Any]) -> str:
    return Action(kind=ActionKind(past["kind"]), name=past["name"]).describe() + (
        f" (task {past['id']})" if past["id"] is not None else "")
