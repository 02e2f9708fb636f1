"""Job records: what a job scores, where its output goes, and where it stands."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from .compute_spec import DEFAULT_COMPUTE
from .errors import InvalidRequest
from .layout import MINIBATCH_QUEUE
from .names import shown
from .settings import DeploymentSettings
from .timestamps import parse_time, utc_now


class JobStatus:
    """Job status values, as Azure ML spells them."""

    NOT_STARTED = "NotStarted"
    QUEUED = "Queued"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCEL_REQUESTED = "CancelRequested"
    CANCELED = "Canceled"
    # The deadline passed before every mini-batch started: what was scored is merged.
    EXPIRED = "Expired"

    TERMINAL = frozenset({COMPLETED, FAILED, CANCELED, EXPIRED})
    # Scoring hosts drop messages of jobs in these states instead of scoring them.
    STOPPED = frozenset({COMPLETED, FAILED, CANCELED, EXPIRED, CANCEL_REQUESTED})
    ALL = (NOT_STARTED, QUEUED, RUNNING, FINALIZING, COMPLETED, FAILED, CANCEL_REQUESTED,
           CANCELED, EXPIRED)


INPUT_FOLDER = "uri_folder"
INPUT_FILE = "uri_file"
INPUT_FAILED_FILES = "failed_files"  # a rerun: the files in another job's errors report
INPUT_KINDS = (INPUT_FOLDER, INPUT_FILE, INPUT_FAILED_FILES)

JOB_NAME_RULE = "1-100 characters: letters, digits, '-' or '_', a letter or digit first"
JOB_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}"
_JOB_NAME = re.compile(JOB_NAME_PATTERN)


def check_job_name(name: Any) -> str:
    """Return `name` if it is a valid job name (it becomes a blob folder), else raise."""
    if not isinstance(name, str) or not _JOB_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid job name {shown(name)}: expected {JOB_NAME_RULE}",
            details={"field": "name", "value": shown(name), "rule": JOB_NAME_RULE},
            code="invalid_name",
        )
    return name


@dataclass(frozen=True)
class BlobLocation:
    """A blob or a folder (prefix without trailing '/') in a container of the app's account."""

    container: str
    path: str = ""

    def child(self, name: str) -> BlobLocation:
        return BlobLocation(self.container, f"{self.path}/{name}" if self.path else name)

    @property
    def folder_prefix(self) -> str:
        """The prefix that lists what is directly or deeply inside this folder."""
        return f"{self.path}/" if self.path else ""

    def to_dict(self) -> dict[str, str]:
        return {"container": self.container, "path": self.path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlobLocation:
        return cls(container=data["container"], path=data.get("path", ""))


@dataclass(frozen=True)
class JobInput:
    """The input as resolved at invoke: a folder, one file, or another job's failed files.

    `uri` is the input as the request gave it; `data_asset` the data asset version it
    resolved to (`azureml:<name>:<version>`), when it named one.
    """

    kind: str
    location: BlobLocation
    uri: str
    include_subfolders: bool = False
    source_job: str | None = None
    data_asset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "uri": self.uri,
            "location": self.location.to_dict(),
            "include_subfolders": self.include_subfolders,
            "source_job": self.source_job,
            "data_asset": self.data_asset,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobInput:
        return cls(
            kind=data["type"],
            uri=data["uri"],
            location=BlobLocation.from_dict(data["location"]),
            include_subfolders=bool(data.get("include_subfolders")),
            source_job=data.get("source_job"),
            data_asset=data.get("data_asset"),
        )


MAX_START_TRACEBACK = 16 * 1024  # characters of a script-start traceback kept in the record


@dataclass(frozen=True)
class ScriptStartFailures:
    """Mini-batches of a job whose last attempt failed before run(): the environment could
    not be built, the script not loaded, or init() raised (scoring/fail_fast.py). `final`
    once `batches` reached the scoring hosts' limit: the monitor then fails the job unless
    some mini-batch succeeded."""

    batches: int
    error: str
    traceback: str | None = None
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "error": self.error, "traceback": self.traceback,
                "final": self.final}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ScriptStartFailures | None:
        if not data:
            return None
        return cls(batches=int(data["batches"]), error=str(data["error"]),
                   traceback=data.get("traceback"), final=bool(data.get("final")))


@dataclass(frozen=True)
class EventMarks:
    """Which lifecycle events of a job are in its event log (control.lifecycle), so each is
    recorded once: `progress` events so far (the last at `progress_at`, when `progress_inputs`
    inputs were done), and `pending_from`, the byte offset in the log of the first event not
    yet delivered to the event sink (None: all delivered), with `retry_after`, when a
    delivery that failed is tried again."""

    created: bool = False
    running: bool = False
    progress: int = 0
    progress_at: str | None = None
    progress_inputs: int = 0
    ended: bool = False
    pending_from: int | None = None
    retry_after: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"created": self.created, "running": self.running, "progress": self.progress,
                "progress_at": self.progress_at, "progress_inputs": self.progress_inputs,
                "ended": self.ended, "pending_from": self.pending_from,
                "retry_after": self.retry_after}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EventMarks:
        data = data or {}
        return cls(created=bool(data.get("created")), running=bool(data.get("running")),
                   progress=int(data.get("progress") or 0), progress_at=data.get("progress_at"),
                   progress_inputs=int(data.get("progress_inputs") or 0),
                   ended=bool(data.get("ended")), pending_from=data.get("pending_from"),
                   retry_after=data.get("retry_after"))


@dataclass(frozen=True)
class JobCompute:
    """The scoring pool a job runs on, as it was at invoke: how many scoring hosts may work
    on the pool's jobs at once (None: no cap) and the queue its mini-batches go to."""

    name: str = DEFAULT_COMPUTE
    max_instances: int | None = None
    queue: str = MINIBATCH_QUEUE

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "max_instances": self.max_instances, "queue": self.queue}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> JobCompute:
        if not data:
            return cls()
        return cls(name=data["name"], max_instances=data.get("max_instances"),
                   queue=data.get("queue") or MINIBATCH_QUEUE)


@dataclass(frozen=True)
class JobRecord:
    """One batch scoring job. `deployment_record` pins the deployment as it was at invoke,
    so updating or deleting the deployment never changes a running job."""

    id: str
    endpoint: str
    deployment: str
    deployment_record: dict[str, Any]
    input: JobInput
    output: BlobLocation
    settings: DeploymentSettings
    request_digest: str
    status: str = JobStatus.NOT_STARTED
    created_at: str = ""
    updated_at: str = ""
    started_at: str | None = None
    ended_at: str | None = None
    reason: str | None = None
    rerun_of: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    script_start_failures: ScriptStartFailures | None = None
    deadline_at: str | None = None  # invoke time + settings.deadline
    partial: bool = False  # the merged output holds only the mini-batches scored (cancel, deadline)
    events: EventMarks = field(default_factory=EventMarks)
    compute: JobCompute = field(default_factory=JobCompute)

    def deadline_passed(self, now: datetime | None = None) -> bool:
        """Whether the job has a deadline and it has passed: no new mini-batch starts."""
        deadline = parse_time(self.deadline_at)
        return deadline is not None and (now or datetime.now(UTC)) >= deadline

    @property
    def output_blob(self) -> BlobLocation:
        """Where the merged output goes: `<output path>/<output_file_name>`."""
        return self.output.child(self.settings.output_file_name)

    def with_status(self, status: str, *, reason: str | None = None,
                    started_at: str | None = None) -> JobRecord:
        """The record in `status`; turning Running records `started_at` (the first
        mini-batch's start when known, else now) unless the job has a start already."""
        now = utc_now()
        changes: dict[str, Any] = {"status": status, "updated_at": now}
        if status == JobStatus.RUNNING and not self.started_at:
            changes["started_at"] = started_at or now
        if status in JobStatus.TERMINAL:
            changes["ended_at"] = now
        if reason is not None:
            changes["reason"] = reason
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.id,
            "endpoint_name": self.endpoint,
            "deployment_name": self.deployment,
            "status": self.status,
            "reason": self.reason,
            "input": self.input.to_dict(),
            "output": {
                "score": {
                    "container": self.output_blob.container,
                    "path": self.output_blob.path,
                    "folder": self.output.path,
                },
            },
            "settings": self.settings.to_dict(),
            "overrides": dict(self.overrides),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "rerun_of": self.rerun_of,
            "warnings": list(self.warnings),
            "deadline_at": self.deadline_at,
            "partial": self.partial,
            "events": self.events.to_dict(),
            "compute": self.compute.to_dict(),
            "request_digest": self.request_digest,
            "deployment_record": self.deployment_record,
            "script_start_failures": None if self.script_start_failures is None
            else self.script_start_failures.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        score = data["output"]["score"]
        return cls(
            id=data["name"],
            endpoint=data["endpoint_name"],
            deployment=data["deployment_name"],
            deployment_record=data["deployment_record"],
            input=JobInput.from_dict(data["input"]),
            output=BlobLocation(score["container"], score["folder"]),
            settings=DeploymentSettings.from_dict(data["settings"]),
            request_digest=data["request_digest"],
            status=data["status"],
            created_at=data.get("created_at", ""),
            updated_at=data.get("updated_at", ""),
            started_at=data.get("started_at"),
            ended_at=data.get("ended_at"),
            reason=data.get("reason"),
            rerun_of=data.get("rerun_of"),
            overrides=dict(data.get("overrides") or {}),
            warnings=tuple(data.get("warnings") or ()),
            script_start_failures=ScriptStartFailures.from_dict(
                data.get("script_start_failures")),
            deadline_at=data.get("deadline_at"),
            partial=bool(data.get("partial")),
            events=EventMarks.from_dict(data.get("events")),
            compute=JobCompute.from_dict(data.get("compute")),
        )
