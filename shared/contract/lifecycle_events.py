"""A job's lifecycle events as CloudEvents 1.0 (JSON): their types, ids and envelope.

Each event has an id derived from the job, its type and, for progress events, their
number, so a redelivered event carries the same id and a subscriber can drop duplicates.
The control app writes them (control/lifecycle.py); the client reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .job_records import JobStatus

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
TYPE_PREFIX = "batchfn.job."
CREATED = TYPE_PREFIX + "created"
RUNNING = TYPE_PREFIX + "running"
PROGRESS = TYPE_PREFIX + "progress"
COMPLETED = TYPE_PREFIX + "completed"
FAILED = TYPE_PREFIX + "failed"
CANCELED = TYPE_PREFIX + "canceled"
EXPIRED = TYPE_PREFIX + "expired"
EVENT_TYPES = (CREATED, RUNNING, PROGRESS, COMPLETED, FAILED, CANCELED, EXPIRED)
# The event that says a job ended, by its final status.
END_EVENTS = {JobStatus.COMPLETED: COMPLETED, JobStatus.FAILED: FAILED,
              JobStatus.CANCELED: CANCELED, JobStatus.EXPIRED: EXPIRED}


def event_id(job_id: str, event_type: str, number: int = 0) -> str:
    """The event's stable id: the same for every delivery of the same event."""
    short = event_type[len(TYPE_PREFIX):]
    return f"{job_id}:{short}" if event_type != PROGRESS else f"{job_id}:{short}:{number}"


@dataclass(frozen=True)
class JobEvent:
    """One lifecycle event of a job, as a CloudEvent."""

    id: str
    type: str
    source: str
    subject: str
    time: str
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The CloudEvents 1.0 JSON form (structured mode)."""
        return {"specversion": SPEC_VERSION, "id": self.id, "source": self.source,
                "type": self.type, "subject": self.subject, "time": self.time,
                "datacontenttype": CONTENT_TYPE, "data": self.data}

    @classmethod
    def from_dict(cls, body: Any) -> JobEvent:
        """An event from its JSON form; ValueError when it is not one of batchfn's."""
        if not isinstance(body, dict) or body.get("specversion") != SPEC_VERSION:
            raise ValueError("not a CloudEvents 1.0 event")
        fields = {key: body.get(key) for key in ("id", "type", "source", "subject", "time")}
        if not all(isinstance(value, str) and value for value in fields.values()):
            raise ValueError("a CloudEvent needs id, type, source, subject and time")
        if fields["type"] not in EVENT_TYPES or not isinstance(body.get("data"), dict):
            raise ValueError(f"not a batchfn job event: {str(fields['type'])[:100]}")
        return cls(data=body["data"], **fields)


def event_source(endpoint: str, deployment: str) -> str:
    """The CloudEvents `source` of a job's events: its endpoint and deployment."""
    return f"/batchfn/endpoints/{endpoint}/deployments/{deployment}"


def event_subject(job_id: str) -> str:
    """The CloudEvents `subject`: the job (subscriptions may filter on it)."""
    return f"jobs/{job_id}"
