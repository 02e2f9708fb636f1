"""Lifecycle events, deadlines, cancel with partial results and the usage report, against a
real Azurite (the jobs engine of test_jobs_engine.py, its fake scoring runtime)."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from datetime import timedelta

import pytest

from shared.contract import layout
from shared.contract.lifecycle_events import JobEvent
from shared.contract.settings import DeploymentSettings
from shared.contract.timestamps import parse_time
from shared.control import finalize
from shared.control.event_sinks import QueueEventSink
from shared.control.finalize import PARTIAL_METADATA_KEY, advance_job
from shared.control.job_service import JobService
from shared.control.monitor import Outcome, deadline_grace, evaluate
from shared.control.planner import plan_job
from shared.scoring.minibatch_handler import MiniBatchHandler
from tests.integration.test_jobs_engine import (  # noqa: F401 - env is a fixture
    FakeRegistry,
    FakeRuntime,
    _drain,
    _upload,
    _url,
    env,
)


class HostKilled(BaseException):
    """Stands for the control host dying at this point (nothing catches it)."""


class KillingSink:
    """Publishes through `sink`, but the host dies before (`when="before"`) or after
    (`"after"`) the first publication."""

    def __init__(self, sink: QueueEventSink, when: str) -> None:
        self.sink, self.when = sink, when

    def publish(self, events) -> None:  # noqa: ANN001 - a sequence of JobEvent
        if self.when == "before":
            raise HostKilled
        self.sink.publish(events)
        raise HostKilled


class BrokenSink:
    """An event sink that is down."""

    def __init__(self) -> None:
        self.calls = 0

    def publish(self, events) -> None:  # noqa: ANN001
        self.calls += 1
        raise ConnectionError("event grid is down")


@pytest.fixture
def jobs(request):
    account, store, queue, data, name = request.getfixturevalue("env")
    events = account.queue_service().get_queue_client(f"ev{name}")
    events.create_queue()
    return account, store, queue, data, name, QueueEventSink(account, f"ev{name}"), events


def _service(store, **settings) -> JobService:
    return JobService(store, FakeRegistry(DeploymentSettings(**settings)))


def _delivered(events_queue) -> list[JobEvent]:
    """Every event message on the queue, in order, duplicates included."""
    found = []
    while True:
        batch = list(events_queue.receive_messages(max_messages=32, visibility_timeout=60))
        if not batch:
            return found
        for message in batch:
            found.append(JobEvent.from_dict(json.loads(base64.b64decode(message.content))))


def _advance_until_end(store, job_id, sink, now=None):  # noqa: ANN001
    for _ in range(50):
        step = advance_job(store, job_id, sink)
        if step.ended:
            return step
    raise AssertionError("the job did not end")


def _types(events) -> list[str]:
    return [event.type.rsplit(".", 1)[1] for event in events]


def test_completed_job_events_in_order_with_counts_and_usage(jobs):
    account, store, queue, data, name, sink, events_queue = jobs
    _upload(data, "in", 7)
    service = _service(store, mini_batch_size=3)
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    assert plan_job(store, queue, job.id, sink).ok
    _drain(MiniBatchHandler(store, FakeRuntime(), queue), queue)
    step = _advance_until_end(store, job.id, sink)
    assert step.status == "Completed" and not step.events_pending
    delivered = _delivered(events_queue)
    assert _types(delivered) == ["created", "running", "completed"]
    assert [e.id for e in delivered] == [f"{job.id}:created", f"{job.id}:running",
                                         f"{job.id}:completed"]
    end = delivered[-1].to_dict()
    assert end["specversion"] == "1.0" and end["datacontenttype"] == "application/json"
    assert end["subject"] == f"jobs/{job.id}"
    assert end["source"] == "/batchfn/endpoints/ep1/deployments/blue"
    data_ = end["data"]
    assert data_["status"] == "Completed" and data_["inputs"]["succeeded"] == 7
    assert data_["compute"] == store.get(job.id).compute.name  # the pool it ran on
    assert data_["mini_batches"] == {"total": 3, "succeeded": 3, "failed": 0,
                                     "not_started": 0, "pending": 0}
    assert data_["output"]["path"] == f"{job.id}/predictions.csv"
    assert data_["output"]["partial"] is False
    assert data_["usage"]["rows_written"] == 7 and data_["usage"]["final"] is True
    # The API lists the same events; the record's started_at is its first mini-batch's.
    assert [e["id"] for e in service.events(job.id)] == [e.id for e in delivered]
    final = store.get(job.id)
    assert final.started_at <= final.ended_at
    usage = service.usage(job.id)
    assert usage == data_["usage"]
    assert usage["inputs"]["scored"] == 7 and usage["attempts"] == 3 and usage["retries"] == 0
    assert usage["cost"]["currency"] == "USD" and usage["cost"]["list_prices"] is True
    kinds = {entry["kind"]: entry for entry in usage["storage_operations"]}
    assert kinds["ledger_appends"] == {**kinds["ledger_appends"], "count": 3,
                                       "counted": "counted"}
    assert kinds["queue_receives_and_deletes"]["counted"] == "estimated"


def test_failed_job_events(jobs):
    account, store, queue, data, name, sink, events_queue = jobs
    _upload(data, "in", 4)
    service = _service(store, mini_batch_size=2, error_threshold=0,
                       retry_settings={"max_retries": 0})
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    plan_job(store, queue, job.id, sink)
    _drain(MiniBatchHandler(store, FakeRuntime(fail={"f000.txt": 9}), queue), queue)
    assert _advance_until_end(store, job.id, sink).status == "Failed"
    delivered = _delivered(events_queue)
    assert _types(delivered) == ["created", "running", "failed"]
    assert delivered[-1].data["inputs"]["failed"] == 2
    assert delivered[-1].data["usage"]["inputs"]["failed"] == 2


def test_a_plan_that_fails_sends_created_then_failed(jobs):
    account, store, queue, data, name, sink, events_queue = jobs
    job, _ = _service(store).invoke("ep1", {"input": _url(account, name, "nothing/here.csv"),
                                            "input_type": "uri_file"})
    result = plan_job(store, queue, job.id, sink)
    assert not result.ok and not result.events_pending
    assert _types(_delivered(events_queue)) == ["created", "failed"]


def test_cancel_merges_exactly_the_scored_rows_marked_partial(jobs):
    account, store, queue, data, name, sink, events_queue = jobs
    _upload(data, "in", 10)
    service = _service(store, mini_batch_size=2)
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    plan_job(store, queue, job.id, sink)
    worker = MiniBatchHandler(store, FakeRuntime(), queue)
    scored = []
    for message in queue.receive_messages(max_messages=2, visibility_timeout=60):
        worker.process(message.content, 1)
        scored.append(json.loads(message.content)["index"])
        queue.delete_message(message)
    service.cancel(job.id)
    # A host that has not seen the job lately (hosts cache it for 2 s) drops the rest.
    assert _drain(MiniBatchHandler(store, FakeRuntime(), queue), queue) == ["skipped"] * 3
    step = _advance_until_end(store, job.id, sink)
    assert step.status == "Canceled"
    final = store.get(job.id)
    assert final.partial and final.reason == "canceled by request"
    blob = account.blob_service().get_blob_client("batchfn-jobs", f"{job.id}/predictions.csv")
    lines = blob.download_blob().readall().decode().splitlines()
    assert lines == [f"f{i:03d}.txt 8" for index in sorted(scored)
                     for i in (2 * index, 2 * index + 1)]
    assert blob.get_blob_properties().metadata[PARTIAL_METADATA_KEY] == "true"
    errors = service.errors(job.id).value
    assert {row["status"] for row in errors} == {"not_started"}
    assert len(errors) == 6 and all(row["attempts"] == 0 for row in errors)
    view = service.show(job.id)["progress"]
    assert view["inputs"]["not_started"] == 6 and view["inputs"]["pending"] == 0
    assert _types(_delivered(events_queue)) == ["created", "running", "canceled"]
    # Rerun --failed-only picks the inputs that were not started.
    rerun, _ = service.rerun(job.id, failed_only=True)
    plan = plan_job(store, queue, rerun.id, sink)
    assert plan.inputs == 6


def test_a_deadline_stops_new_mini_batches_and_keeps_the_scored_ones(jobs):
    account, store, queue, data, name, sink, events_queue = jobs
    _upload(data, "in", 9)
    service = _service(store, mini_batch_size=3)
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"), "deadline": "2s"})
    assert job.settings.deadline == 2.0
    assert parse_time(job.deadline_at) - parse_time(job.created_at) == timedelta(seconds=2)
    plan_job(store, queue, job.id, sink)
    worker = MiniBatchHandler(store, FakeRuntime(), queue)
    first = next(iter(queue.receive_messages(max_messages=1, visibility_timeout=60)))
    assert worker.process(first.content, 1).action == "scored"
    queue.delete_message(first)
    time.sleep(max(0.0, (parse_time(job.deadline_at) - parse_time(job.created_at))
                   .total_seconds()) + 0.2)
    results = [worker.process(m.content, 1) for m in
               queue.receive_messages(max_messages=32, visibility_timeout=60)]
    assert [r.detail for r in results] == ["the job's deadline has passed"] * 2
    step = _advance_until_end(store, job.id, sink)
    assert step.status == "Expired" and "deadline" in step.reason
    final = store.get(job.id)
    assert final.partial and final.status == "Expired"
    blob = account.blob_service().get_blob_client("batchfn-jobs", f"{job.id}/predictions.csv")
    assert len(blob.download_blob().readall().decode().splitlines()) == 3
    assert blob.get_blob_properties().metadata[PARTIAL_METADATA_KEY] == "true"
    errors = service.errors(job.id).value
    assert len(errors) == 6 and {row["status"] for row in errors} == {"not_started"}
    delivered = _delivered(events_queue)
    assert _types(delivered) == ["created", "running", "expired"]
    assert delivered[-1].data["inputs"]["not_started"] == 6
    assert service.usage(job.id)["mini_batches"]["not_started"] == 2
    # Nothing scored is lost, and the rest can be scored again.
    rerun, _ = service.rerun(job.id, failed_only=True)
    assert plan_job(store, queue, rerun.id, sink).inputs == 6


def test_after_the_deadline_and_its_grace_a_job_expires_without_every_mini_batch(jobs):
    account, store, queue, data, name, sink, events_queue = jobs
    _upload(data, "in", 4)
    service = _service(store, mini_batch_size=2)
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in"), "deadline": 3600})
    plan_job(store, queue, job.id, sink)
    deadline = parse_time(job.deadline_at)
    assert evaluate(store, job.id, now=deadline).outcome is Outcome.WAIT
    late = deadline + timedelta(seconds=deadline_grace(job.settings) + 1)
    check = evaluate(store, job.id, now=late)
    assert check.outcome is Outcome.EXPIRED
    ended, progress = finalize._finalize(store, check.job, check.progress, check.outcome)
    assert ended.status == "Expired" and not ended.partial  # nothing was scored
    assert progress.batches_not_started == 2 and progress.files_not_started == 4
    assert len(service.errors(job.id).value) == 4


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_host_killed_while_finalize_publishes_leaves_no_duplicate_ids(jobs, when):
    account, store, queue, data, name, sink, events_queue = jobs
    _upload(data, "in", 4)
    job, _ = _service(store, mini_batch_size=2).invoke("ep1",
                                                       {"input": _url(account, name, "in")})
    plan_job(store, queue, job.id, sink)
    _drain(MiniBatchHandler(store, FakeRuntime(), queue), queue)
    with pytest.raises(HostKilled):
        advance_job(store, job.id, KillingSink(sink, when))
    assert store.get(job.id).status == "Completed"  # the kill came after the status
    # The activity runs again (Durable re-runs an activity whose host died), twice even.
    for _ in range(2):
        step = advance_job(store, job.id, sink)
        assert step.ended and step.status == "Completed" and not step.events_pending
    delivered = _delivered(events_queue)
    ids = [event.id for event in delivered]
    assert list(dict.fromkeys(ids)) == [f"{job.id}:created", f"{job.id}:running",
                                        f"{job.id}:completed"]
    # A redelivered event carries its id; a host killed before publishing sends each once.
    assert max(Counter(ids).values()) == (1 if when == "before" else 2)
    listed = [event["id"] for event in JobService(store, None).events(job.id)]
    assert listed == list(dict.fromkeys(ids))


def test_a_host_killed_between_the_final_status_and_its_events(jobs):
    account, store, queue, data, name, sink, events_queue = jobs
    _upload(data, "in", 2)
    job, _ = _service(store).invoke("ep1", {"input": _url(account, name, "in")})
    plan_job(store, queue, job.id, sink)
    _drain(MiniBatchHandler(store, FakeRuntime(), queue), queue)
    check = evaluate(store, job.id)
    finalize._finalize(store, check.job, check.progress, check.outcome)  # then the host died
    step = advance_job(store, job.id, sink)
    assert step.status == "Completed"
    assert _types(_delivered(events_queue)) == ["created", "running", "completed"]
    assert store.read_json(layout.usage_report(job.id))["status"] == "Completed"


def test_a_broken_sink_never_holds_the_job_and_events_go_out_later_in_order(jobs):
    account, store, queue, data, name, sink, events_queue = jobs
    _upload(data, "in", 2)
    job, _ = _service(store).invoke("ep1", {"input": _url(account, name, "in")})
    broken = BrokenSink()
    assert plan_job(store, queue, job.id, broken).events_pending
    _drain(MiniBatchHandler(store, FakeRuntime(), queue), queue)
    step = _advance_until_end(store, job.id, broken)
    assert step.status == "Completed" and step.events_pending and broken.calls
    assert _delivered(events_queue) == []
    assert not finalize.publish_job_events(store, job.id, sink).pending
    assert _types(_delivered(events_queue)) == ["created", "running", "completed"]
    assert store.get(job.id).events.pending_from is None
    assert not finalize.publish_job_events(store, job.id, sink).pending  # nothing left


def test_progress_events_at_most_one_per_interval(jobs, monkeypatch):
    account, store, queue, data, name, sink, events_queue = jobs
    monkeypatch.setenv("BATCHFN_PROGRESS_EVENT_SECONDS", "1")
    _upload(data, "in", 6)
    job, _ = _service(store, mini_batch_size=1).invoke("ep1",
                                                       {"input": _url(account, name, "in")})
    plan_job(store, queue, job.id, sink)
    worker = MiniBatchHandler(store, FakeRuntime(), queue)
    for _ in range(3):
        messages = list(queue.receive_messages(max_messages=2, visibility_timeout=60))
        for message in messages:
            worker.process(message.content, 1)
            queue.delete_message(message)
        advance_job(store, job.id, sink)
        advance_job(store, job.id, sink)  # a second check at once sends no second event
        time.sleep(1.1)
    _advance_until_end(store, job.id, sink)
    types = _types(_delivered(events_queue))
    assert types[:2] == ["created", "running"] and types[-1] == "completed"
    assert 1 <= types.count("progress") <= 2
    progress_ids = [e["id"] for e in JobService(store, None).events(job.id)
                    if e["type"] == "batchfn.job.progress"]
    assert progress_ids == [f"{job.id}:progress:{n}" for n in range(len(progress_ids))]


def test_a_job_canceled_before_planning_ends_with_nothing_counted(jobs):
    account, store, queue, data, name, sink, events_queue = jobs
    _upload(data, "in", 2)
    service = _service(store)
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    service.cancel(job.id)
    assert plan_job(store, queue, job.id, sink).skipped == "CancelRequested"
    step = _advance_until_end(store, job.id, sink)
    assert step.status == "Canceled" and not store.get(job.id).partial
    assert service.show(job.id)["progress"] is None
    assert _types(_delivered(events_queue)) == ["created", "canceled"]
    assert service.usage(job.id)["inputs"]["total"] == 0


def test_events_that_could_not_be_logged_are_logged_later_and_never_fail_the_job(jobs,
                                                                                 monkeypatch):
    account, store, queue, data, name, sink, events_queue = jobs
    _upload(data, "in", 2)
    job, _ = _service(store).invoke("ep1", {"input": _url(account, name, "in")})
    plan_job(store, queue, job.id, sink)
    _drain(MiniBatchHandler(store, FakeRuntime(), queue), queue)
    from shared.control import lifecycle

    def storage_down(*args, **kwargs):  # noqa: ANN002, ANN003
        raise ConnectionError("storage is down")

    monkeypatch.setattr(lifecycle, "_append", storage_down)
    step = _advance_until_end(store, job.id, sink)
    assert step.status == "Completed" and step.events_pending
    monkeypatch.undo()
    assert not finalize.publish_job_events(store, job.id, sink).pending
    assert _types(_delivered(events_queue)) == ["created", "running", "completed"]


def test_a_failing_sink_is_left_alone_for_a_while_by_a_running_jobs_checks(jobs):
    account, store, queue, data, name, sink, events_queue = jobs
    _upload(data, "in", 4)
    job, _ = _service(store, mini_batch_size=2).invoke("ep1",
                                                       {"input": _url(account, name, "in")})
    broken = BrokenSink()
    plan_job(store, queue, job.id, broken)
    tries = broken.calls
    worker = MiniBatchHandler(store, FakeRuntime(), queue)
    message = next(iter(queue.receive_messages(max_messages=1, visibility_timeout=60)))
    worker.process(message.content, 1)
    queue.delete_message(message)
    for _ in range(3):  # the running event is due, the sink failed moments ago
        assert advance_job(store, job.id, broken).events_pending
    assert broken.calls == tries
    assert [e["type"] for e in JobService(store, None).events(job.id)] == [
        "batchfn.job.created", "batchfn.job.running"]  # logged, to be sent later
