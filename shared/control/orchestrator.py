"""A batch job's orchestration: plan → check → wait (a durable timer), until it ends.

`run_job` is a plain generator over a Durable-shaped context (`JobContext`), so the logic is
tested by driving it, and by the Durable SDK replaying recorded histories, with no host.
It is deterministic: every decision comes from activity results, history events and
`current_utc_datetime`. A small job is planned in the invoke request itself and starts
here with `planned` set (no planning activity). Each check (the advance activity) watches
the ledger for a moment of its own when the job may end soon (control/monitor.py), so the
end of a job is seen within a ledger poll of its last append rather than at the next timer.
It continues as new every POLLS_PER_GENERATION checks, so its history stays small.

What crosses the orchestrator ↔ activity boundary is typed: frozen dataclasses with
`to_dict`/`from_dict`, checked where they are read (`from_dict` raises
`InvalidOrchestrationData` for anything else).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

ORCHESTRATOR = "batch_job"
PLAN_ACTIVITY = "plan_job"
ADVANCE_ACTIVITY = "advance_job"
FAIL_ACTIVITY = "fail_job"
PUBLISH_ACTIVITY = "publish_job_events"
POLLS_PER_GENERATION = 20  # then continue_as_new: replay cost stays bounded
MAX_REASON = 1000  # characters of a failure reason the orchestrator records
# After a job ended with lifecycle events not delivered (the sink failed), delivery is tried
# again after these waits; the job's status is final meanwhile, nothing waits on them.
PUBLISH_RETRY_SECONDS = (5.0, 30.0, 120.0, 600.0, 1800.0)


class InvalidOrchestrationData(ValueError):
    """An orchestrator or activity payload that is not what its type requires."""


class JobContext(Protocol):
    """What `run_job` uses of a Durable orchestration context (the SDK's, or a test's)."""

    instance_id: str
    current_utc_datetime: datetime

    def get_input(self) -> Any: ...

    def call_activity(self, name: str, input_: Any = None) -> Any: ...

    def call_activity_with_retry(self, name: str, retry_options: Any,
                                 input_: Any = None) -> Any: ...

    def create_timer(self, fire_at: datetime) -> Any: ...

    def continue_as_new(self, input_: Any) -> None: ...


@dataclass(frozen=True)
class OrchestrationState:
    """The orchestrator's own state, handed from one generation to the next: whether the
    job is planned, and how many checks it made (the poll delays grow with them)."""

    planned: bool = False
    polls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"planned": self.planned, "polls": self.polls}

    @classmethod
    def from_dict(cls, data: Any) -> OrchestrationState:
        """The state from an orchestration input; None is a new job's."""
        if data is None:
            return cls()
        body = _mapping(data, cls)
        return cls(planned=_bool(body, "planned", cls), polls=_count(body, "polls", cls))


@dataclass(frozen=True)
class PlanResult:
    """What planning did: `batches` mini-batches of `inputs` sent (`ok`), the job's
    failure `reason` (not `ok`), or `skipped` with the status of a job that had stopped."""

    ok: bool
    inputs: int = 0
    batches: int = 0
    reason: str | None = None
    skipped: str | None = None
    events_pending: bool = False  # lifecycle events not delivered yet (see control/lifecycle)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "inputs": self.inputs, "batches": self.batches,
                "reason": self.reason, "skipped": self.skipped,
                "events_pending": self.events_pending}

    @classmethod
    def from_dict(cls, data: Any) -> PlanResult:
        body = _mapping(data, cls)
        return cls(ok=_bool(body, "ok", cls), inputs=_count(body, "inputs", cls),
                   batches=_count(body, "batches", cls), reason=_text(body, "reason", cls),
                   skipped=_text(body, "skipped", cls),
                   events_pending=_bool(body, "events_pending", cls))


@dataclass(frozen=True)
class StepResult:
    """One progress check: the job still runs (`done` of `total` mini-batches; `near_end`:
    it may end any moment, so the next check follows at once), or it `ended` with its
    final `status` and `reason`; `events_pending`: lifecycle events await delivery."""

    ended: bool
    done: int = 0
    total: int = 0
    status: str | None = None
    reason: str | None = None
    near_end: bool = False
    events_pending: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"ended": self.ended, "done": self.done, "total": self.total,
                "status": self.status, "reason": self.reason, "near_end": self.near_end,
                "events_pending": self.events_pending}

    @classmethod
    def from_dict(cls, data: Any) -> StepResult:
        body = _mapping(data, cls)
        return cls(ended=_bool(body, "ended", cls), done=_count(body, "done", cls),
                   total=_count(body, "total", cls), status=_text(body, "status", cls),
                   reason=_text(body, "reason", cls), near_end=_bool(body, "near_end", cls),
                   events_pending=_bool(body, "events_pending", cls))


@dataclass(frozen=True)
class FailRequest:
    """Ask to end `job` as Failed with `reason` (an orchestration that broke down)."""

    job: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Any) -> FailRequest:
        body = _mapping(data, cls)
        job, reason = _text(body, "job", cls), _text(body, "reason", cls)
        if not job or reason is None:
            raise InvalidOrchestrationData(f"{cls.__name__} needs a job and a reason")
        return cls(job=job, reason=reason[:MAX_REASON])


@dataclass(frozen=True)
class JobEnd:
    """How a job ended: its final status and reason (the orchestration's output too)."""

    status: str
    reason: str | None = None
    events_pending: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason,
                "events_pending": self.events_pending}

    @classmethod
    def from_dict(cls, data: Any) -> JobEnd:
        body = _mapping(data, cls)
        status = _text(body, "status", cls)
        if not status:
            raise InvalidOrchestrationData(f"{cls.__name__} needs a status")
        return cls(status=status, reason=_text(body, "reason", cls),
                   events_pending=_bool(body, "events_pending", cls))


@dataclass(frozen=True)
class PublishResult:
    """A retried delivery of a job's lifecycle events: whether some are still pending."""

    pending: bool

    def to_dict(self) -> dict[str, Any]:
        return {"pending": self.pending}

    @classmethod
    def from_dict(cls, data: Any) -> PublishResult:
        return cls(pending=_bool(_mapping(data, cls), "pending", cls))


def poll_delay(polls: int) -> float:
    """Seconds the orchestrator waits before its next check: shorter at first, then 2 s.

    The end of a job is not left to these timers: a check that finds the job near its end
    watches the ledger itself (monitor.py). The first ones keep `job show` current while a
    job starts.
    """
    schedule = (0.25, 0.5, 1.0, 1.5)
    return schedule[polls] if polls < len(schedule) else 2.0


def run_job(context: JobContext, retry: Any) -> Generator[Any, Any, dict[str, Any] | None]:
    """The orchestration of job `context.instance_id` (one instance per job).

    Activities are called with `retry` (the host's retry options): they are idempotent,
    so a storage hiccup costs a retry, not the job. Returns the `JobEnd` as a dict when the
    job ended, None when this generation continued as new. A job that ended with lifecycle
    events still undelivered gets a few more tries at them (`PUBLISH_RETRY_SECONDS`).
    """
    end = yield from _run_until_end(context, retry)
    if end is None:
        return None
    if end.events_pending:
        yield from _publish_pending(context)
    return end.to_dict()


def _run_until_end(context: JobContext, retry: Any) -> Generator[Any, Any, JobEnd | None]:
    job_id = context.instance_id
    try:
        state = OrchestrationState.from_dict(context.get_input())
        if not state.planned:
            planned = PlanResult.from_dict(
                (yield context.call_activity_with_retry(PLAN_ACTIVITY, retry, job_id)))
            if not planned.ok:
                return JobEnd("Failed", planned.reason, planned.events_pending)
            state = OrchestrationState(planned=True, polls=0)
        for _ in range(POLLS_PER_GENERATION):
            step = StepResult.from_dict(
                (yield context.call_activity_with_retry(ADVANCE_ACTIVITY, retry, job_id)))
            if step.ended:
                return JobEnd(step.status or "Failed", step.reason, step.events_pending)
            delay = poll_delay(state.polls)
            state = OrchestrationState(planned=True, polls=state.polls + 1)
            if not step.near_end:  # a check near the end watched already: check again now
                yield context.create_timer(
                    context.current_utc_datetime + timedelta(seconds=delay))
    except Exception as exc:  # noqa: BLE001 - an activity failed on every retry
        # Never leave a job hanging in a non-final status: fail it with the reason.
        request = FailRequest(job_id, f"internal error: {exc}"[:MAX_REASON])
        return JobEnd.from_dict((yield context.call_activity(FAIL_ACTIVITY, request.to_dict())))
    context.continue_as_new(state.to_dict())
    return None


def _publish_pending(context: JobContext) -> Generator[Any, Any, None]:
    """Deliver the ended job's pending events again after each wait until they are out."""
    for delay in PUBLISH_RETRY_SECONDS:
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
        try:
            result = PublishResult.from_dict(
                (yield context.call_activity(PUBLISH_ACTIVITY, context.instance_id)))
        except Exception:  # noqa: BLE001 - the events stay in the job's log: try again later
            continue
        if not result.pending:
            return


def _mapping(data: Any, kind: type) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidOrchestrationData(f"{kind.__name__} must be an object, "
                                       f"not {type(data).__name__}")
    return data


def _bool(body: Mapping[str, Any], key: str, kind: type) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise InvalidOrchestrationData(f"{kind.__name__}.{key} must be true or false")
    return value


def _count(body: Mapping[str, Any], key: str, kind: type) -> int:
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidOrchestrationData(f"{kind.__name__}.{key} must be a whole number >= 0")
    return value


def _text(body: Mapping[str, Any], key: str, kind: type) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidOrchestrationData(f"{kind.__name__}.{key} must be text")
    return value
