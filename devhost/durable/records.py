"""What the durable runtime keeps in storage and sends through its queues.

- `InstanceRecord`: one orchestration instance — status fields for the client API plus the
  current execution's history and the bookkeeping the replay needs (sequence numbers handed
  out, scheduled actions, open tasks, retry state). Stored as one JSON blob, so an episode
  commits with one conditional write.
- `ControlMessage`: "instance X has a new event" (start, task result, timer, external event,
  terminate, sub-orchestration result), on the control queue; timers are control messages
  made visible at their fire time.
- `ActivityWork`: "run activity N of instance X", on the work-item queue.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from devhost.durable.history import EventType, describe_event

TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Terminated"})
RUNTIME_STATUSES = frozenset({"Pending", "Running", "ContinuedAsNew", *TERMINAL_STATUSES})


class MessageError(ValueError):
    """A queue message that is not one of ours."""


@dataclass(frozen=True)
class ParentRef:
    """The orchestration (and its task) that started a sub-orchestration."""

    instance_id: str
    execution_id: str
    task_id: int


@dataclass(frozen=True)
class ControlMessage:
    """One new event for one instance (execution None: whichever execution is current)."""

    message_id: str
    instance_id: str
    execution_id: str | None
    event: dict[str, Any]

    @property
    def event_type(self) -> EventType:
        return EventType(self.event["EventType"])

    def to_json(self) -> str:
        return json.dumps({"kind": "control", "id": self.message_id,
                           "instance": self.instance_id, "execution": self.execution_id,
                           "event": self.event})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlMessage:
        try:
            event = data["event"]
            EventType(int(event["EventType"]))
            return cls(message_id=str(data["id"]), instance_id=str(data["instance"]),
                       execution_id=data.get("execution"), event=event)
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"not a control message: {data!r:.200}") from exc


@dataclass(frozen=True)
class ActivityWork:
    """Run activity `name` with `input` (serialized JSON) as task `task_id` of an instance."""

    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input: str | None

    def to_json(self) -> str:
        return json.dumps({"kind": "activity", "instance": self.instance_id,
                           "execution": self.execution_id, "task": self.task_id,
                           "name": self.name, "input": self.input})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActivityWork:
        try:
            return cls(instance_id=str(data["instance"]), execution_id=str(data["execution"]),
                       task_id=int(data["task"]), name=str(data["name"]),
                       input=data.get("input"))
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"not an activity work item: {data!r:.200}") from exc


@dataclass
class InstanceRecord:
    """One orchestration instance, as stored (mutated only inside one episode)."""

    instance_id: str
    name: str
    execution_id: str
    status: str
    created: str
    updated: str
    input: str | None = None
    output: Any = None
    custom_status: Any = None
    parent: ParentRef | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    next_sequence: int = 0
    # Leaves the orchestrator yielded so far, in order: {"kind", "name", "id"}.
    scheduled: list[dict[str, Any]] = field(default_factory=list)
    # Task ids awaiting a completion: {"kind": activity|timer|sub, "name", "retry": id|None}.
    open_tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Retry state per with-retry action, keyed by its first task id.
    retries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Control message ids of the latest external events applied, across executions, oldest
    # first (a redelivery must not apply one again; the episode bounds the window).
    raised: list[str] = field(default_factory=list)
    # Events that arrived before the instance's start was processed.
    buffered: list[dict[str, Any]] = field(default_factory=list)

    @property
    def started(self) -> bool:
        return bool(self.history)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> InstanceRecord:
        data = json.loads(text)
        parent = data.pop("parent", None)
        return cls(**data, parent=ParentRef(**parent) if parent else None)

    def status_json(self, *, show_input: bool = True, show_history: bool = False,
                    show_history_output: bool = False) -> dict[str, Any]:
        """The instance as the Durable HTTP API's status query returns it."""
        body: dict[str, Any] = {
            "name": self.name, "instanceId": self.instance_id, "runtimeStatus": self.status,
            "input": decode_json(self.input) if show_input else None,
            "customStatus": self.custom_status, "output": self.output,
            "createdTime": self.created, "lastUpdatedTime": self.updated,
        }
        if show_history:
            body["historyEvents"] = [describe_event(e, with_output=show_history_output)
                                     for e in self.history]
        return body


def decode_json(text: str | None) -> Any:
    """A serialized JSON payload as a value (a payload that is not JSON stays a string)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
