"""The pieces of lifecycle events, deadlines and usage reports that need no storage: the
deadline setting, the ledger line's usage fields, event ids and envelopes, the price table
and the cost estimate."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.contract.errors import InvalidRequest
from shared.contract.job_records import JobStatus
from shared.contract.ledger import AttemptUsage, Completion
from shared.contract.lifecycle_events import (
    COMPLETED,
    PROGRESS,
    JobEvent,
    event_id,
)
from shared.contract.settings import MAX_DEADLINE_SECONDS, DeploymentSettings, check_deadline
from shared.control.event_sinks import batch_body, check_eventgrid_endpoint
from shared.control.lifecycle import progress_interval
from shared.control.progress import Progress
from shared.control.usage import DEFAULT_PRICES, estimated_cost, gpu_price, price_table


@pytest.mark.parametrize(("given", "seconds"), [
    (90, 90.0), (0.5, 0.5), ("3600", 3600.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0),
    ("1d", 86_400.0), ("1h30m", 5400.0), ("1D", 86_400.0), ("PT2H", 7200.0),
    ("P1DT12H", 129_600.0), ("pt1m30s", 90.0), (None, None), ("", None),
])
def test_deadlines_are_bounded_durations(given, seconds):
    assert check_deadline(given) == seconds


@pytest.mark.parametrize("given", [
    0, -5, "0s", "8d", MAX_DEADLINE_SECONDS + 1, float("inf"), float("nan"), "1e999", True,
    "soon", "1w", "P1Y", "PT", "P", "h", [60], {"s": 1}, "9" * 50,
])
def test_bad_deadlines_are_refused_with_the_rule(given):
    with pytest.raises(InvalidRequest) as caught:
        check_deadline(given)
    assert caught.value.code == "invalid_setting" and "deadline" in str(caught.value)


def test_a_deadline_is_a_deployment_default_and_a_job_override():
    deployment = DeploymentSettings.from_dict({"deadline": "1h"})
    assert deployment.deadline == 3600.0
    job = deployment.with_overrides({"deadline": "PT10M"}, per_job=True)
    assert job.deadline == 600.0
    assert DeploymentSettings.from_dict(job.to_dict()) == job
    # Settings stored before deadlines existed read as no deadline.
    stored = DeploymentSettings().to_dict()
    del stored["deadline"]
    assert DeploymentSettings.from_dict(stored).deadline is None


def test_ledger_lines_carry_usage_compactly_and_old_lines_still_parse():
    usage = AttemptUsage(attempt=2, handled_seconds=1.23456, run_seconds=0.5, input_bytes=900,
                         gpu="NVIDIA A100 80GB PCIe")
    line = Completion(7, True, 3, 0, 3, at="2025-01-01T00:00:00.000Z", part=b"a\n",
                      usage=usage).to_line()
    body = json.loads(line)
    assert {k: body[k] for k in ("a", "hs", "rs", "by", "g")} == {
        "a": 2, "hs": 1.235, "rs": 0.5, "by": 900, "g": "NVIDIA A100 80GB PCIe"}
    assert Completion.from_line(line).usage == AttemptUsage(2, 1.235, 0.5, 900,
                                                            "NVIDIA A100 80GB PCIe")
    first = Completion(1, True, 1, 0, 1, at="t", usage=AttemptUsage(run_seconds=0.1))
    assert "a" not in json.loads(first.to_line())  # a first attempt is the default
    old = b'{"i":3,"ok":true,"s":2,"f":0,"r":2,"t":"2024-01-01T00:00:00Z","d":"x\\n"}\n'
    parsed = Completion.from_line(old)
    assert parsed.usage is None and parsed.not_started is None and parsed.part == b"x\n"
    skipped = Completion.from_line(Completion(4, False, 0, 0, 0, at="t",
                                              not_started=10).to_line())
    assert skipped.not_started == 10 and not skipped.succeeded


def test_progress_adds_usage_and_not_started_mini_batches():
    progress = Progress.start(10, 4)
    progress.planned_at = "2025-01-01T00:00:00.000Z"
    at = "2025-01-01T00:00:10.000Z"
    progress.apply(Completion(0, True, 3, 0, 3, at=at, usage=AttemptUsage(
        attempt=2, handled_seconds=4.0, run_seconds=2.5, input_bytes=30, gpu="T4")))
    progress.apply(Completion(1, False, 0, 3, 0, at=at, usage=AttemptUsage(run_seconds=1.0)))
    progress.apply(Completion(2, False, 0, 0, 0, at=at, not_started=3))
    totals = progress.usage
    assert (totals.attempts, totals.retries, totals.run_seconds) == (3, 1, 3.5)
    assert totals.gpu_seconds == {"T4": 2.5} and totals.input_bytes == 30
    assert totals.first_started_at == "2025-01-01T00:00:06.000Z"
    assert totals.longest_wait_seconds == 10.0
    assert progress.is_failed(1) and not progress.is_failed(2) and progress.is_unscored(2)
    assert progress.is_unscored(3) and not progress.finished
    progress.stop_rest()
    assert (progress.batches_not_started, progress.files_not_started) == (2, 4)
    assert progress.finished
    again = Progress.from_dict(json.loads(json.dumps(progress.to_dict())))
    assert again.usage == progress.usage and again.is_unscored(2) and again.is_failed(1)
    view = again.view()
    assert view["inputs"]["not_started"] == 4 and view["inputs"]["pending"] == 0
    assert "not_started" not in view["files"]  # the older clients' shape


def test_progress_written_before_usage_still_reads():
    stored = Progress.start(2, 1).to_dict()
    for key in ("usage", "skipped", "batches_not_started", "files_not_started"):
        del stored[key]
    progress = Progress.from_dict(stored)
    assert progress.usage.attempts == 0 and not progress.is_failed(0)


def test_event_ids_are_stable_and_the_envelope_is_cloudevents():
    assert event_id("j1", COMPLETED) == "j1:completed"
    assert event_id("j1", PROGRESS, 3) == "j1:progress:3"
    event = JobEvent("j1:completed", COMPLETED, "/batchfn/endpoints/e/deployments/d",
                     "jobs/j1", "2025-01-01T00:00:00.000Z", {"status": "Completed"})
    body = event.to_dict()
    assert body["specversion"] == "1.0" and body["datacontenttype"] == "application/json"
    assert JobEvent.from_dict(json.loads(json.dumps(body))) == event
    assert json.loads(batch_body([event])) == [body]
    for bad in ({}, {**body, "specversion": "0.3"}, {**body, "type": "other"},
                {**body, "id": ""}, {**body, "data": "x"}, [body]):
        with pytest.raises(ValueError):
            JobEvent.from_dict(bad)


@pytest.mark.parametrize("endpoint", [
    "http://topic.westus-1.eventgrid.azure.net/api/events",
    "https://user:pw@topic.westus-1.eventgrid.azure.net/api/events",
    "https://topic.westus-1.eventgrid.azure.net/api/events?code=x", "not a url", "https://",
])
def test_only_an_https_topic_endpoint_is_taken(endpoint):
    with pytest.raises(ValueError):
        check_eventgrid_endpoint(endpoint)


def test_progress_interval_setting(monkeypatch):
    assert progress_interval() == 30.0
    monkeypatch.setenv("BATCHFN_PROGRESS_EVENT_SECONDS", "5")
    assert progress_interval() == 5.0
    for bad in ("0", "100000", "often"):
        monkeypatch.setenv("BATCHFN_PROGRESS_EVENT_SECONDS", bad)
        with pytest.raises(ValueError):
            progress_interval()


def test_the_operator_price_table_overrides_the_dated_list_prices():
    assert price_table({})["as_of"] == DEFAULT_PRICES["as_of"]
    prices = price_table({"BATCHFN_PRICES": json.dumps({
        "currency": "EUR", "blob_write_10k": 0.06, "gpu_second": {"H200": 0.002}})})
    assert prices["currency"] == "EUR" and prices["blob_write_10k"] == 0.06
    assert prices["gpu_second"]["H200"] == 0.002 and "A100" in prices["gpu_second"]
    for bad in ("[]", "{", '{"nope": 1}', '{"blob_write_10k": -1}', '{"queue_10k": "1"}',
                '{"gpu_second": {"A100": true}}', '{"currency": 5}', "x" * 20_000):
        with pytest.raises(ValueError):
            price_table({"BATCHFN_PRICES": bad})


def test_gpu_prices_match_device_types_by_name():
    table = {"A100": 1.0, "T4": 0.2, "H100 NVL": 3.0, "H100": 2.0}
    assert gpu_price("NVIDIA A100 80GB PCIe", table) == 1.0
    assert gpu_price("Tesla T4", table) == 0.2
    assert gpu_price("NVIDIA H100 NVL", table) == 3.0
    assert gpu_price("NVIDIA H200", table) is None


def test_the_cost_adds_up_its_items():
    operations = [{"class": "write", "count": 10_000}, {"class": "read", "count": 20_000},
                  {"class": "queue", "count": 10_000}]
    prices = price_table({})
    cost = estimated_cost(100.0, {"NVIDIA A100 80GB PCIe": 50.0, "NVIDIA H200": 5.0},
                          operations, 10, prices)
    assert cost["items"]["scoring_gpu"] == pytest.approx(50 * prices["gpu_second"]["A100"])
    assert cost["unpriced_gpus"] == ["NVIDIA H200"]
    assert cost["items"]["storage"] == pytest.approx(
        prices["blob_write_10k"] + 2 * prices["blob_read_10k"] + prices["queue_10k"]
        + prices["blob_list_10k"] / 10_000, rel=1e-3)
    assert cost["total"] == pytest.approx(sum(cost["items"].values()), abs=1e-5)
    assert cost["prices_as_of"] == "2025-06-01" and cost["list_prices"]


def test_a_deadline_passes_for_the_record_and_expired_is_final():
    from shared.contract.job_records import BlobLocation, JobInput, JobRecord

    now = datetime(2025, 1, 1, tzinfo=UTC)
    job = JobRecord("j", "e", "d", {}, JobInput("uri_folder", BlobLocation("c"), "u"),
                    BlobLocation("c"), DeploymentSettings(), "digest",
                    deadline_at="2025-01-01T00:00:10.000Z")
    assert not job.deadline_passed(now) and job.deadline_passed(now + timedelta(seconds=10))
    assert JobStatus.EXPIRED in JobStatus.TERMINAL and JobStatus.EXPIRED in JobStatus.STOPPED
    assert JobRecord.from_dict(job.to_dict()) == job


def test_an_attempts_run_time_is_the_workers_own_measure_when_it_has_one():
    from shared.scoring.batch import SUCCEEDED, TIMED_OUT, ScoringOutcome

    def outcome(status: str, run_seconds: float | None) -> ScoringOutcome:
        return ScoringOutcome("j", 0, 2, status, None, 0, (), 0, 0, None, None, "", 5.0, 1.5,
                              input_bytes=7, gpu="T4", run_seconds=run_seconds)

    assert outcome(SUCCEEDED, 2.25).usage(6.0) == AttemptUsage(2, 6.0, 2.25, 7, "T4")
    # A worker that timed out sent no answer: the host's clock, less the input wait.
    assert outcome(TIMED_OUT, None).usage(6.0).run_seconds == 3.5


def test_a_capped_computes_slot_leases_are_an_estimated_storage_operation():
    from shared.contract.job_records import BlobLocation, JobCompute, JobInput, JobRecord
    from shared.control.usage import storage_operations

    progress = Progress.start(4, 2)
    at = "2025-01-01T00:00:10.000Z"
    for index in (0, 1):
        progress.apply(Completion(index, True, 2, 0, 2, at=at,
                                  usage=AttemptUsage(handled_seconds=10.0, run_seconds=8.0)))
    job = JobRecord("j", "e", "d", {}, JobInput("uri_folder", BlobLocation("c"), "u"),
                    BlobLocation("c"), DeploymentSettings(), "digest")
    assert "compute_slot_leases" not in {op["kind"] for op in storage_operations(job, progress, 20)}
    capped = JobRecord.from_dict({**job.to_dict(), "compute": JobCompute(
        "batch-cluster", 1, "minibatches").to_dict()})
    leases = {op["kind"]: op for op in storage_operations(capped, progress, 20)}[
        "compute_slot_leases"]
    # 20 host seconds at a renewal per 5 s, one host taking and releasing its slot.
    assert leases == {**leases, "class": "read", "count": 6, "counted": "estimated"}


def test_the_usage_report_counts_the_monitors_copies_and_heartbeats():
    from shared.contract.job_records import BlobLocation, JobInput, JobRecord
    from shared.control.progress import BACKUP, REDELIVERY
    from shared.control.usage import usage_report

    progress = Progress.start(4, 2)
    progress.note_copy(0, REDELIVERY)
    progress.note_copy(1, BACKUP)
    at = "2025-01-01T00:00:10.000Z"
    progress.apply(Completion(0, True, 2, 0, 2, at=at, copy=1,
                              usage=AttemptUsage(handled_seconds=6.0, run_seconds=5.0)))
    progress.apply(Completion(1, True, 2, 0, 2, at=at, copy=1,
                              usage=AttemptUsage(handled_seconds=6.0, run_seconds=5.0)))
    job = JobRecord("j", "e", "d", {}, JobInput("uri_folder", BlobLocation("c"), "u"),
                    BlobLocation("c"), DeploymentSettings(), "digest")
    report = usage_report(job, progress, prices=DEFAULT_PRICES,
                          now=datetime(2025, 1, 1, 0, 0, 20, tzinfo=UTC))
    # Neither copy is a retry; the backup's result counted first.
    assert report["retries"] == 0 and report["redeliveries"] == 1
    assert report["backups"] == {"sent": 1, "won": 1}
    operations = {op["kind"]: op for op in report["storage_operations"]}
    assert operations["queue_sends"]["count"] == 2 + 2  # the planner's messages, the copies
    # 12 host seconds on one worker slot, a write per 3 s.
    assert operations["heartbeat_writes"] == {**operations["heartbeat_writes"], "count": 4,
                                              "class": "write", "counted": "estimated"}


def test_a_mini_batch_that_waited_for_its_slot_past_the_deadline_does_not_start():
    from shared.scoring.heartbeats import Holding, StartRefused

    deadline_passed = False
    holding = Holding("j", 3, 0, 1, slots=1, may_start=lambda: not deadline_passed)
    holding.running(inputs=2)  # a slot took it in time
    assert holding.started is not None and holding.inputs == 2
    late = Holding("j", 4, 0, 1, slots=1, may_start=lambda: not deadline_passed)
    deadline_passed = True
    with pytest.raises(StartRefused):
        late.running(inputs=2)
    assert late.started is None
