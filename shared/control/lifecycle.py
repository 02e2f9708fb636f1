"""A job's lifecycle events: which are due, the job's event log, and their delivery.

Events are derived from the job record (and its progress), not from the code path that
changed them: an activity that runs again after a crash finds the same events due, with
the same ids, until the record's `events` marks say they are in the log. Each call appends
the due events to the job's event log (`events.jsonl`, an append blob), then delivers the
log from the first event not yet delivered, so events reach the sink in order and an
event whose delivery failed goes out before any later one. Delivery failures are logged,
never raised: a job never waits on, or fails for, its events.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError

from shared.contract import layout
from shared.contract import lifecycle_events as kinds
from shared.contract.job_records import EventMarks, JobRecord, JobStatus
from shared.contract.lifecycle_events import JobEvent, event_id, event_source, event_subject
from shared.contract.timestamps import format_time, parse_time, utc_now
from shared.control.event_sinks import (
    EVENTGRID_ENDPOINT_SETTING,
    EventSink,
    check_eventgrid_endpoint,
)
from shared.control.progress import Progress
from shared.control.usage import price_table
from shared.storage.job_store import JobStore

log = logging.getLogger("batchfn.events")

PROGRESS_INTERVAL_SETTING = "BATCHFN_PROGRESS_EVENT_SECONDS"
DEFAULT_PROGRESS_INTERVAL = 30.0
MAX_PROGRESS_INTERVAL = 86_400.0
DELIVERY_TRIES = 2
DELIVERY_PAUSE_SECONDS = 0.5
# After a failed delivery, the checks of a running job leave the sink alone this long: a
# sink that hangs until its timeouts must not slow every check down.
REDELIVERY_SECONDS = 30.0


def progress_interval() -> float:
    """Seconds between two progress events of a job (the control app setting, default 30)."""
    text = os.environ.get(PROGRESS_INTERVAL_SETTING, "").strip()
    if not text:
        return DEFAULT_PROGRESS_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = math.nan  # refused below, with the setting's name
    if not 1 <= value <= MAX_PROGRESS_INTERVAL:
        raise ValueError(f"{PROGRESS_INTERVAL_SETTING} must be 1 to {MAX_PROGRESS_INTERVAL:g} "
                         f"seconds, not {text!r}")
    return value


def check_settings() -> None:
    """Refuse malformed settings of events and usage reports (ValueError names the setting)
    when the control app starts, rather than at a job's first event."""
    progress_interval()
    price_table()
    endpoint = os.environ.get(EVENTGRID_ENDPOINT_SETTING, "").strip()
    if endpoint:
        check_eventgrid_endpoint(endpoint)


def due_events(store: JobStore, job: JobRecord, progress: Progress | None,
               usage: dict[str, Any] | None = None, *, now: datetime | None = None,
               interval: float | None = None) -> tuple[list[JobEvent], EventMarks]:
    """The events the job's record calls for that its marks do not show yet, in order, and
    the marks once they are logged. `usage` goes into the event that ends the job."""
    now = now or datetime.now(UTC)
    interval = progress_interval() if interval is None else interval
    marks = job.events
    events: list[JobEvent] = []
    at = utc_now()

    def add(kind: str, number: int = 0, **extra: Any) -> None:
        events.append(JobEvent(event_id(job.id, kind, number), kind,
                               event_source(job.endpoint, job.deployment), event_subject(job.id),
                               at, {**event_data(store, job, progress), **extra}))

    if not marks.created:
        add(kinds.CREATED)
        marks = replace(marks, created=True)
    if job.started_at and not marks.running:
        add(kinds.RUNNING)
        marks = replace(marks, running=True, progress_at=at,
                        progress_inputs=_inputs_done(progress))
    elif (job.status in (JobStatus.RUNNING, JobStatus.FINALIZING) and progress is not None
          and _inputs_done(progress) != marks.progress_inputs
          and _seconds_since(marks.progress_at, now) >= interval):
        add(kinds.PROGRESS, marks.progress)
        marks = replace(marks, progress=marks.progress + 1, progress_at=at,
                        progress_inputs=_inputs_done(progress))
    if job.status in JobStatus.TERMINAL and not marks.ended:
        add(kinds.END_EVENTS[job.status], **({"usage": usage} if usage else {}))
        marks = replace(marks, ended=True)
    return events, marks


def record_events(store: JobStore, sink: EventSink, job: JobRecord, progress: Progress | None,
                  usage: dict[str, Any] | None = None) -> bool:
    """Log the job's due events and deliver what is not delivered yet; True while some
    are still undelivered or unlogged (the next call tries again). Never raises: events
    never fail a job (what could not be logged is due again next time, with its id)."""
    try:
        return _record_events(store, sink, job, progress, usage)
    except Exception as exc:  # noqa: BLE001 - storage trouble: logged, tried again later
        log.warning("job %s: lifecycle events not recorded yet (%s: %s)", job.id,
                    type(exc).__name__, str(exc)[:300])
        return True


def _record_events(store: JobStore, sink: EventSink, job: JobRecord,
                   progress: Progress | None, usage: dict[str, Any] | None) -> bool:
    events, marks = due_events(store, job, progress, usage)
    if not events and marks.pending_from is None:
        return False
    now = datetime.now(UTC)
    waiting = (job.status not in JobStatus.TERMINAL
               and _seconds_since(marks.retry_after, now) < 0)
    if not events and waiting:
        return True
    pending_from = marks.pending_from
    if events:
        offset = _append(store, job.id, events)
        pending_from = offset if pending_from is None else pending_from
    delivered = not waiting and _deliver(store, sink, job.id, pending_from)
    retry_after = marks.retry_after if waiting else (
        None if delivered else format_time(now + timedelta(seconds=REDELIVERY_SECONDS)))
    marks = replace(marks, pending_from=None if delivered else pending_from,
                    retry_after=retry_after)
    store.update(job.id, lambda current: replace(current, events=marks)
                 if current.events != marks else None)
    return not delivered


def read_events(store: JobStore, job_id: str, offset: int = 0) -> list[JobEvent]:
    """The job's logged events from byte `offset` on, each id once (a crash may have logged
    an event twice), in order."""
    try:
        data = store.state.download_blob(layout.events_log(job_id),
                                         offset=offset or None).readall()
    except HttpResponseError as exc:
        if exc.status_code in (404, 416):  # no events yet, or nothing past the offset
            return []
        raise
    seen: set[str] = set()
    events = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        event = JobEvent.from_dict(json.loads(line))
        if event.id not in seen:
            seen.add(event.id)
            events.append(event)
    return events


def event_data(store: JobStore, job: JobRecord, progress: Progress | None) -> dict[str, Any]:
    """What every event of the job says: the job (and the compute it runs on), its counts
    and its output."""
    data: dict[str, Any] = {
        "name": job.id, "endpoint": job.endpoint, "deployment": job.deployment,
        "compute": job.compute.name, "status": job.status, "reason": job.reason,
        "created_at": job.created_at, "started_at": job.started_at, "ended_at": job.ended_at,
        "deadline_at": job.deadline_at, "status_url": f"/api/jobs/{job.id}",
    }
    if job.settings.output_action == "append_row":
        target = job.output_blob
        data["output"] = {"container": target.container, "path": target.path,
                          "url": store.service.get_blob_client(target.container,
                                                               target.path).url,
                          "partial": job.partial}
    if progress is not None:
        view = progress.view()
        data.update(unit=view["unit"], inputs=view["inputs"],
                    mini_batches=view["mini_batches"], rows=view["rows"])
    return data


def _inputs_done(progress: Progress | None) -> int:
    if progress is None:
        return 0
    return progress.files_succeeded + progress.files_failed + progress.files_not_started


def _seconds_since(text: str | None, now: datetime) -> float:
    moment = parse_time(text)
    return float("inf") if moment is None else (now - moment).total_seconds()


def _append(store: JobStore, job_id: str, events: list[JobEvent]) -> int:
    """Append the events as one block; returns the byte offset where they start."""
    blob = store.state.get_blob_client(layout.events_log(job_id))
    body = b"".join(json.dumps(event.to_dict(), separators=(",", ":")).encode() + b"\n"
                    for event in events)
    try:
        blob.create_append_blob(if_none_match="*")
    except (ResourceExistsError, ResourceModifiedError):
        pass
    return int(blob.append_block(body)["blob_append_offset"])


def _deliver(store: JobStore, sink: EventSink, job_id: str, offset: int) -> bool:
    for attempt in range(DELIVERY_TRIES):
        try:
            sink.publish(read_events(store, job_id, offset))
            return True
        except Exception as exc:  # noqa: BLE001 - any sink failure: logged, retried later
            if attempt + 1 < DELIVERY_TRIES:
                time.sleep(DELIVERY_PAUSE_SECONDS)
                continue
            log.warning("job %s: lifecycle events not delivered yet (%s: %s); they stay in "
                        "its event log and are sent again later", job_id,
                        type(exc).__name__, str(exc)[:300])
    return False
