"""The orchestrator handle's answer: `{"isDone", "actions", "output", "error", "customStatus"}`.

devhost asks for replay schema V3 (`upperSchemaVersion: 2`): `actions` is `[[a1, a2, ...]]`,
one entry per task the orchestrator yielded, in order; `task_all`/`task_any` (and
`call_*_with_retry`) appear as compound WhenAll (12) / WhenAny (11) actions with
`compoundActions`. The runtime needs only the leaves, flattened depth-first: that is the
order in which the SDK hands out task sequence numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from devhost.durable.history import parse_time

REPLAY_SCHEMA = 2  # ReplaySchema.V3 in azure.durable_functions.models.ReplaySchema
_OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"


class ActionKind(IntEnum):
    """`ActionType` of the SDK (models/actions/ActionType.py)."""

    CALL_ACTIVITY = 0
    CALL_ACTIVITY_WITH_RETRY = 1
    CALL_SUB_ORCHESTRATOR = 2
    CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
    CONTINUE_AS_NEW = 4
    CREATE_TIMER = 5
    WAIT_FOR_EXTERNAL_EVENT = 6
    CALL_ENTITY = 7
    CALL_HTTP = 8
    SIGNAL_ENTITY = 9
    WHEN_ANY = 11
    WHEN_ALL = 12


# Kinds devhost does not run; an orchestrator using them fails with a clear message.
UNSUPPORTED = {ActionKind.CALL_ENTITY: "durable entities (call_entity)",
               ActionKind.SIGNAL_ENTITY: "durable entities (signal_entity)",
               ActionKind.CALL_HTTP: "durable HTTP (call_http)"}
_COMPOUND = {ActionKind.WHEN_ANY, ActionKind.WHEN_ALL}


class DecisionError(ValueError):
    """The orchestrator handle returned something that is not an orchestrator state."""


@dataclass(frozen=True)
class RetryPolicy:
    """RetryOptions as the SDK serializes them (interval in milliseconds)."""

    first_interval_ms: float
    max_attempts: int
    backoff_coefficient: float = 1.0
    max_interval_ms: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetryPolicy:
        try:
            return cls(
                first_interval_ms=float(data["firstRetryIntervalInMilliseconds"]),
                max_attempts=int(data["maxNumberOfAttempts"]),
                backoff_coefficient=float(data.get("backoffCoefficient") or 1.0),
                max_interval_ms=(float(data["maxRetryIntervalInMilliseconds"])
                                 if data.get("maxRetryIntervalInMilliseconds") else None),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DecisionError(f"invalid retryOptions {data!r}") from exc

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"firstRetryIntervalInMilliseconds": self.first_interval_ms,
                                "maxNumberOfAttempts": self.max_attempts,
                                "backoffCoefficient": self.backoff_coefficient}
        if self.max_interval_ms is not None:
            data["maxRetryIntervalInMilliseconds"] = self.max_interval_ms
        return data

    def delay(self, failed_attempts: int) -> timedelta:
        """Wait before the next attempt after `failed_attempts` failures (DTFx's formula)."""
        millis = self.first_interval_ms * self.backoff_coefficient ** (failed_attempts - 1)
        if self.max_interval_ms is not None:
            millis = min(millis, self.max_interval_ms)
        return timedelta(milliseconds=millis)


@dataclass(frozen=True)
class Action:
    """One leaf action: something to schedule, wait for or do."""

    kind: ActionKind
    name: str = ""
    input: str | None = None
    fire_at: datetime | None = None
    instance_id: str | None = None
    retry: RetryPolicy | None = None

    @property
    def takes_sequence_number(self) -> bool:
        """Whether the SDK gives this action's task the next sequence number."""
        return self.kind is not ActionKind.WAIT_FOR_EXTERNAL_EVENT

    def describe(self) -> str:
        labels = {ActionKind.CALL_ACTIVITY: "activity", ActionKind.CALL_ACTIVITY_WITH_RETRY:
                  "activity (with retry)", ActionKind.CALL_SUB_ORCHESTRATOR: "sub-orchestration",
                  ActionKind.CALL_SUB_ORCHESTRATOR_WITH_RETRY: "sub-orchestration (with retry)",
                  ActionKind.CREATE_TIMER: "timer", ActionKind.CONTINUE_AS_NEW: "continue_as_new",
                  ActionKind.WAIT_FOR_EXTERNAL_EVENT: "wait for external event"}
        label = labels.get(self.kind, self.kind.name.lower())
        return f"{label} '{self.name}'" if self.name else label


@dataclass(frozen=True)
class Decision:
    """What one replay of the orchestrator decided."""

    done: bool
    actions: tuple[Action, ...]
    output: Any = None
    error: str | None = None
    custom_status: Any = None

    @property
    def continue_as_new(self) -> Action | None:
        return next((a for a in self.actions if a.kind is ActionKind.CONTINUE_AS_NEW), None)


def parse_decision(text: str) -> Decision:
    """Parse the JSON string the orchestrator handle returned."""
    try:
        state = json.loads(text)
        groups = state["actions"]
    except (TypeError, ValueError, KeyError) as exc:
        raise DecisionError(f"orchestrator returned no orchestrator state: {text!r:.200}") from exc
    if not isinstance(groups, list):
        raise DecisionError("orchestrator state 'actions' is not a list")
    leaves: list[Action] = []
    for group in groups:
        for action in group if isinstance(group, list) else [group]:
            _flatten(action, leaves)
    return Decision(done=bool(state.get("isDone")), actions=tuple(leaves),
                    output=state.get("output"), error=state.get("error"),
                    custom_status=state.get("customStatus"))


def decision_from_failure(exc: BaseException) -> Decision:
    """The state the SDK attaches to the exception an orchestrator raised.

    The SDK raises `Exception(f"{error}\\n\\n$OutOfProcData$:{state_json}")`; without the
    marker (an error outside the user code) the whole message is the error.
    """
    message = str(exc)
    if _OUT_OF_PROC_MARKER in message:
        head, _, state = message.partition(_OUT_OF_PROC_MARKER)
        try:
            decision = parse_decision(state)
        except DecisionError:
            return Decision(done=False, actions=(), error=head)
        return Decision(done=False, actions=decision.actions, error=decision.error or head,
                        custom_status=decision.custom_status)
    return Decision(done=False, actions=(), error=f"{type(exc).__name__}: {message}")


def _flatten(data: Any, into: list[Action]) -> None:
    if not isinstance(data, dict) or "actionType" not in data:
        raise DecisionError(f"not an action: {data!r:.200}")
    try:
        kind = ActionKind(int(data["actionType"]))
    except ValueError as exc:
        raise DecisionError(f"unknown actionType {data['actionType']!r}") from exc
    if kind in _COMPOUND:
        for child in data.get("compoundActions") or []:
            _flatten(child, into)
        return
    retry = data.get("retryOptions")
    if kind is ActionKind.WAIT_FOR_EXTERNAL_EVENT:
        name = data.get("externalEventName") or ""
    else:
        name = data.get("functionName") or ""
    into.append(Action(
        kind=kind,
        name=str(name),
        input=data.get("input"),
        fire_at=parse_time(data["fireAt"]) if data.get("fireAt") else None,
        instance_id=data.get("instanceId"),
        retry=RetryPolicy.from_json(retry) if isinstance(retry, dict) else None,
    ))
