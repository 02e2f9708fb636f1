"""Durable Task history events in the JSON shape the Python SDK replays.

The SDK (`azure.durable_functions.models.history.HistoryEvent`) reads `EventType` (an int),
`EventId`, `IsPlayed`, `Timestamp` and the per-type fields named below; the names follow the
Durable Task Framework so that histories read like the ones the real extension keeps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum
from typing import Any


class EventType(IntEnum):
    """`HistoryEventType` of the SDK (models/history/HistoryEventType.py)."""

    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_INSTANCE_CREATED = 7
    SUB_ORCHESTRATION_INSTANCE_COMPLETED = 8
    SUB_ORCHESTRATION_INSTANCE_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16
    GENERIC_EVENT = 17
    HISTORY_STATE = 18
    EXECUTION_SUSPENDED = 19
    EXECUTION_RESUMED = 20


# Events that resolve a task the orchestrator awaits, keyed to the field naming that task.
COMPLETION_ID_FIELD: dict[EventType, str] = {
    EventType.TASK_COMPLETED: "TaskScheduledId",
    EventType.TASK_FAILED: "TaskScheduledId",
    EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED: "TaskScheduledId",
    EventType.SUB_ORCHESTRATION_INSTANCE_FAILED: "TaskScheduledId",
    EventType.TIMER_FIRED: "TimerId",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """ISO 8601 with microseconds and a `Z`, the format the SDK parses and writes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse a timestamp written by `format_time` or by the SDK (`fireAt`)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def new_event(kind: EventType, moment: datetime, *, event_id: int = -1,
              **fields: Any) -> dict[str, Any]:
    """A history event dict; `fields` are the type's own (e.g. `Name`, `Result`)."""
    return {"EventType": int(kind), "EventId": event_id, "IsPlayed": False,
            "Timestamp": format_time(moment), **fields}


def completion_id(event: dict[str, Any]) -> int | None:
    """The task id an activity/timer/sub-orchestration completion event resolves, if any."""
    field = COMPLETION_ID_FIELD.get(EventType(event["EventType"]))
    return None if field is None else int(event[field])


def describe_event(event: dict[str, Any], *, with_output: bool) -> dict[str, Any]:
    """A history event as the status API shows it: type by name, payloads on request."""
    kind = EventType(event["EventType"])
    shown: dict[str, Any] = {"EventType": _pascal(kind.name), "EventId": event["EventId"],
                             "Timestamp": event["Timestamp"]}
    for key in ("Name", "TaskScheduledId", "TimerId", "FireAt", "InstanceId", "Reason",
                "OrchestrationStatus"):
        if event.get(key) is not None:
            shown[key] = event[key]
    if with_output:
        for key in ("Input", "Result", "Details"):
            if event.get(key) is not None:
                shown[key] = event[key]
    return shown


def _pascal(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))
