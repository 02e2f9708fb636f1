"""Completion hints and the orchestrator's check-and-finalize step, against a real Azurite."""

from __future__ import annotations

import pytest
from test_jobs_engine import FakeRegistry, FakeRuntime, _upload, _url, env  # noqa: F401

from shared.contract import layout
from shared.contract.ledger import Completion
from shared.contract.messages import InvalidMessage, MiniBatchMessage, ShardHint
from shared.contract.settings import DeploymentSettings
from shared.control.finalize import advance_job
from shared.control.job_service import JobService
from shared.control.orchestrator import StepResult
from shared.control.planner import plan_job
from shared.scoring.minibatch_handler import MiniBatchHandler
from shared.scoring.shard_hints import ShardFullHints
from shared.storage.ledger_blobs import create_ledger, record_completion
from shared.storage.queue_clients import trigger_queue


def _planned_job(env, files: int, size: int):  # noqa: F811 - the env fixture
    account, store, queue, data, name = env
    _upload(data, "in", files)
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=size)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    assert plan_job(store, queue, job.id).ok
    return job


def test_ledger_append_returns_the_committed_block_count(env):  # noqa: F811
    _, store, _, _, name = env
    store.ensure_containers()
    create_ledger(store.state, name, 0)
    counts = [record_completion(store.state, name, Completion(i % 2, True, 1, 0, 1))
              for i in range(3)]
    assert counts == [1, 2, 3]  # duplicates count too: the count is only a hint


def test_worker_reports_blocks_and_hints_say_when_a_shard_may_be_full(env):  # noqa: F811
    account, store, queue, _, name = env
    job = _planned_job(env, 3, 1)
    worker = MiniBatchHandler(store, FakeRuntime(), queue)
    # The hint queue does not exist yet: the first hint creates it.
    hint_queue = trigger_queue(account, name + "-hints")
    hints = ShardFullHints(store, hint_queue)
    results = [worker.process(MiniBatchMessage(job.id, i, 0).encode(), 1) for i in range(3)]
    blocks = [result.ledger_blocks for result in results]
    assert blocks == [1, 2, 3]
    assert [hints.offer(job.id, i, b) for i, b in enumerate(blocks)] == [False, False, True]
    assert not hints.offer("no-such-job", 0, 5)  # not planned: no hint
    sent = [ShardHint.decode(m.content) for m in hint_queue.receive_messages(max_messages=32)]
    assert sent == [ShardHint(job.id)]
    # The ledger says which host process recorded each mini-batch.
    ledger = store.state.download_blob(layout.ledger(job.id, 0)).readall().splitlines()
    assert {Completion.from_line(line).host for line in ledger} == {worker.logs.host}


def test_a_hint_that_cannot_be_sent_is_dropped_not_raised(env):  # noqa: F811
    account, store, queue, _, _ = env
    job = _planned_job(env, 1, 1)
    unreachable = trigger_queue(account, "Not_A_Valid_Queue_Name")
    assert ShardFullHints(store, unreachable).offer(job.id, 0, 1) is False


@pytest.mark.parametrize("body", [b"", b"[]", b'{"job": ""}', b'{"job": 7}', b"{",
                                  b'{"job": "' + b"x" * 200 + b'"}'])
def test_a_message_that_is_not_a_shard_hint_is_refused(body: bytes):
    with pytest.raises(InvalidMessage):
        ShardHint.decode(body)


def test_advance_waits_then_finalizes_in_the_same_call(env):  # noqa: F811
    _, store, queue, _, _ = env
    job = _planned_job(env, 2, 1)
    assert advance_job(store, job.id) == StepResult(ended=False, done=0, total=2)
    worker = MiniBatchHandler(store, FakeRuntime(), queue)
    for index in range(2):
        worker.process(MiniBatchMessage(job.id, index, 0).encode(), 1)
    step = advance_job(store, job.id)
    assert step == StepResult(ended=True, done=2, total=2, status="Completed")
    # Queued → Completed in one update still records when scoring started.
    ended = store.get(job.id)
    assert ended.started_at and ended.started_at <= ended.ended_at
    assert store.state.download_blob(layout.errors_report(job.id)).readall() == b""
    output = store.service.get_blob_client(job.output_blob.container, job.output_blob.path)
    assert output.download_blob().readall().decode().count("\n") == 2
    # Idempotent: a retried activity finds the job ended and changes nothing.
    assert advance_job(store, job.id).status == "Completed"


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


def test_planner_creates_a_missing_queue_on_its_first_send(env):  # noqa: F811
    account, store, queue, data, name = env
    queue.delete_queue()
    job = _planned_job(env, 2, 1)
    assert queue.get_queue_properties().approximate_message_count == 2
    assert store.get(job.id).status == "Queued"
