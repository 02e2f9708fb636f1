"""The fast path of a job against a real Azurite: group-committed ledger lines, the
orchestrator's check that watches the ledger near the end, and small jobs planned in the
invoke request."""

from __future__ import annotations

import threading
import time

from test_jobs_engine import FakeRegistry, FakeRuntime, _upload, _url, env  # noqa: F401

from shared.contract import layout
from shared.contract.ledger import Completion
from shared.contract.messages import MiniBatchMessage
from shared.contract.settings import DeploymentSettings
from shared.control.finalize import advance_job
from shared.control.job_service import JobService
from shared.control.orchestrator import OrchestrationState, StepResult
from shared.control.planner import SMALL_JOB_BATCHES, plan_job, plan_small_job, start_state
from shared.scoring.ledger_commits import LedgerCommits
from shared.scoring.minibatch_handler import MiniBatchHandler
from shared.storage.ledger_blobs import append_lines, create_ledger, ledger_lines


def _job(env, files: int, size: int):  # noqa: F811 - the env fixture
    account, store, queue, data, name = env
    _upload(data, "in", files)
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=size)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    return job


def _planned_job(env, files: int, size: int):  # noqa: F811
    _, store, queue, _, _ = env
    job = _job(env, files, size)
    assert plan_job(store, queue, job.id).ok
    return job


def test_one_append_carries_several_lines_and_readers_see_each(env):  # noqa: F811
    _, store, _, _, name = env
    store.ensure_containers()
    create_ledger(store.state, name, 0)
    lines = [Completion(i, True, 1, 0, 1).to_line() for i in (0, 1, 0)]
    assert append_lines(store.state, name, 0, lines[:2]) == 1
    assert append_lines(store.state, name, 0, lines[2:]) == 2
    read = [Completion.from_line(line).index for _, line in ledger_lines(store.state, name, 0)]
    assert read == [0, 1, 0]  # a duplicate stays, readers count the first per index


def test_completions_that_finish_together_share_appends(env):  # noqa: F811
    _, store, queue, _, _ = env
    job = _planned_job(env, 12, 1)
    appends = []

    def slow_append(job_id, shard, lines):
        appends.append(len(lines))
        time.sleep(0.05)  # while one append is out, the others gather behind it
        return append_lines(store.state, job_id, shard, lines)

    worker = MiniBatchHandler(store, FakeRuntime(), queue, ledger=LedgerCommits(slow_append))
    threads = [threading.Thread(target=worker.process,
                                args=(MiniBatchMessage(job.id, i, 0).encode(), 1))
               for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(appends) == 12 and len(appends) < 12
    assert worker.ledger.stats.lines == 12 and worker.ledger.stats.appends == len(appends)
    step = advance_job(store, job.id)
    assert step.ended and step.status == "Completed"
    ledger = store.state.download_blob(layout.ledger(job.id, 0)).readall().splitlines()
    assert sorted(Completion.from_line(line).index for line in ledger) == list(range(12))


def test_a_check_near_the_end_watches_the_ledger_and_finalizes(env):  # noqa: F811
    _, store, queue, _, _ = env
    job = _planned_job(env, 2, 1)
    worker = MiniBatchHandler(store, FakeRuntime(), queue)

    def score_later():
        time.sleep(0.4)
        for index in range(2):
            worker.process(MiniBatchMessage(job.id, index, 0).encode(), 1)

    scorer = threading.Thread(target=score_later)
    started = time.monotonic()
    scorer.start()
    step = advance_job(store, job.id)  # a fresh small job: watched, not left to a timer
    scorer.join()
    assert step == StepResult(ended=True, done=2, total=2, status="Completed")
    assert time.monotonic() - started < 2.0
    # Queued → Completed in one update still records when scoring started.
    ended = store.get(job.id)
    assert ended.started_at and ended.started_at <= ended.ended_at
    output = store.service.get_blob_client(job.output_blob.container, job.output_blob.path)
    assert output.download_blob().readall().decode().count("\n") == 2
    # Idempotent: a retried activity finds the job ended and changes nothing.
    assert advance_job(store, job.id).status == "Completed"


def test_a_check_far_from_the_end_returns_at_once(env):  # noqa: F811
    _, store, queue, _, _ = env
    job = _planned_job(env, 20, 1)  # more mini-batches than a job without a rate is watched
    started = time.monotonic()
    assert advance_job(store, job.id) == StepResult(ended=False, done=0, total=20)
    assert time.monotonic() - started < 1.0


def test_a_small_job_still_refuses_an_existing_output(env):  # noqa: F811
    _, store, queue, _, _ = env
    job = _planned_job(env, 1, 1)
    store.ensure_output_container(job.output_blob.container)
    store.service.get_blob_client(job.output_blob.container, job.output_blob.path
                                  ).upload_blob(b"someone else's")
    MiniBatchHandler(store, FakeRuntime(), queue).process(
        MiniBatchMessage(job.id, 0, 0).encode(), 1)
    step = advance_job(store, job.id)
    assert step.status == "Failed" and "already exists" in step.reason


def test_a_small_job_is_planned_in_the_invoke_request(env):  # noqa: F811
    _, store, queue, _, _ = env
    job = _job(env, 3, 2)
    assert start_state(store, queue, job.id) == OrchestrationState(planned=True)
    assert store.get(job.id).status == "Queued"
    assert queue.get_queue_properties().approximate_message_count == 2
    # Planned once: a second call (a retried request) plans nothing more.
    assert plan_small_job(store, queue, job.id) is None


def test_a_larger_job_is_left_to_its_orchestration_untouched(env):  # noqa: F811
    _, store, queue, _, _ = env
    job = _job(env, SMALL_JOB_BATCHES + 1, 1)
    assert start_state(store, queue, job.id) == OrchestrationState(planned=False)
    assert store.get(job.id).status == "NotStarted"
    assert store.read_json(layout.plan(job.id)) is None
    assert queue.get_queue_properties().approximate_message_count == 0


def test_an_unreadable_input_is_left_to_its_orchestration(env):  # noqa: F811
    account, store, queue, _, name = env
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=1)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in/missing.txt"),
                                    "input_type": "uri_file"})
    assert start_state(store, queue, job.id) == OrchestrationState(planned=False)
    assert store.get(job.id).status == "NotStarted"


def test_planner_creates_a_missing_queue_on_its_first_send(env):  # noqa: F811
    account, store, queue, data, name = env
    queue.delete_queue()
    job = _planned_job(env, 2, 1)
    assert queue.get_queue_properties().approximate_message_count == 2
    assert store.get(job.id).status == "Queued"
