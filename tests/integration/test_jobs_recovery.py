"""Heartbeats and recovery against a real Azurite: a host's beats, the monitor's copies of a
stalled mini-batch, a stop written into a host's heartbeat, a late copy dropped, no copies
of mini-batches a full compute defers."""

from __future__ import annotations

import time

from test_jobs_engine import FakeRegistry, FakeRuntime, _upload, _url, env  # noqa: F401

from shared.contract import layout
from shared.contract.heartbeats import RUNNING, WAITING, Heartbeat
from shared.contract.job_records import JobCompute
from shared.contract.messages import MiniBatchMessage
from shared.contract.settings import DeploymentSettings
from shared.control.finalize import advance_job
from shared.control.job_service import JobService
from shared.control.planner import plan_job, start_state
from shared.control.recovery import RecoverySettings
from shared.scoring.compute_admission import ComputeAdmission
from shared.scoring.heartbeats import Holdings
from shared.scoring.minibatch_handler import MiniBatchHandler
from shared.storage.heartbeat_blobs import read_heartbeat, read_heartbeats, request_stop
from shared.storage.queue_clients import minibatch_queue


def _planned_job(env, files: int, size: int = 1):  # noqa: F811 - the env fixture
    account, store, queue, data, name = env
    _upload(data, "in", files)
    service = JobService(store, FakeRegistry(DeploymentSettings(mini_batch_size=size)))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    assert plan_job(store, queue, job.id).ok
    return job


def _drain_queue(queue) -> list[MiniBatchMessage]:
    messages = []
    while batch := list(queue.receive_messages(max_messages=32, visibility_timeout=600)):
        messages += [MiniBatchMessage.decode(m.content) for m in batch]
    return messages


def test_a_host_beats_once_per_job_and_a_last_time_when_it_holds_none(env):  # noqa: F811
    _, store, _, _, _ = env
    job = _planned_job(env, 3)
    holdings = Holdings(store.state, "host-a", interval=60)  # beats only when asked here
    first = holdings.hold(job.id, 0, 0, 1, slots=2)
    second = holdings.hold(job.id, 1, 0, 1, slots=2)
    first.running(inputs=1)
    assert holdings.beat() == 1  # one write for the job, whatever it holds
    stored = read_heartbeat(store.state, job.id, "host-a")
    assert [(h.index, h.phase) for h in stored.beat.held] == [(0, RUNNING), (1, WAITING)]
    assert stored.beat.slots == 2 and stored.beat.interval == 60
    holdings.release(first)
    holdings.release(second)
    assert holdings.beat() == 1  # says it holds none ...
    assert read_heartbeat(store.state, job.id, "host-a").beat.held == ()
    assert holdings.beat() == 0  # ... then nothing more for that job


def test_a_stop_written_by_the_monitor_stops_the_copy_at_the_next_beat(env):  # noqa: F811
    _, store, _, _, _ = env
    job = _planned_job(env, 2)
    holdings = Holdings(store.state, "host-b", interval=60)
    kept, doomed = holdings.hold(job.id, 0, 0, 1, 2), holdings.hold(job.id, 1, 1, 1, 2)
    holdings.beat()
    (stored,) = read_heartbeats(store.state, job.id)
    assert request_stop(store.state, job.id, stored, [1])
    assert not request_stop(store.state, job.id, stored, [0])  # an old version: refused
    holdings.beat()  # refused (the blob changed), reads the stop list, writes again
    assert doomed.stop.is_set() and not kept.stop.is_set()
    assert read_heartbeat(store.state, job.id, "host-b").beat.stop == ()


def test_a_stalled_host_s_mini_batch_is_sent_again_and_its_late_result_dropped(env):  # noqa: F811
    _, store, queue, _, _ = env
    job = _planned_job(env, 3)
    _drain_queue(queue)  # the planner's messages: taken by hosts
    settings = RecoverySettings(stall_seconds=1.0)
    dead = Holdings(store.state, "dead-host", interval=0.2)
    lost = dead.hold(job.id, 1, 0, 1, 2)
    lost.running()
    dead.beat()
    dead.close()  # killed: it beats no more
    worker = MiniBatchHandler(store, FakeRuntime(), queue,
                              holdings=Holdings(store.state, "live-host", interval=60))
    for index in (0, 2):
        worker.process(MiniBatchMessage(job.id, index, 0).encode(), 1)
    time.sleep(1.2)  # the dead host's last beat is now older than the threshold
    step = advance_job(store, job.id, recovery=(queue, settings))
    assert not step.ended
    (copy,) = _drain_queue(queue)
    assert (copy.index, copy.copy, copy.prior_attempts) == (1, 1, 1)  # the lost attempt counts
    assert worker.process(copy.encode(), 1).action == "scored"
    # The dead host comes back and records its own result late: dropped, the copy counts.
    late = MiniBatchHandler(store, FakeRuntime(), queue,
                            holdings=Holdings(store.state, "dead-host-2", interval=60))
    late.process(MiniBatchMessage(job.id, 1, 0).encode(), 1)
    step = advance_job(store, job.id, recovery=(queue, settings))
    assert step.ended and step.status == "Completed"
    progress = store.read_json(layout.progress(job.id))
    assert [kind for kind, _ in progress["copies"]["1"]] == ["redelivery"]
    output = store.service.get_blob_client(job.output_blob.container, job.output_blob.path)
    assert output.download_blob().readall().decode().count("\n") == 3


class _PoolRegistry(FakeRegistry):
    """Computes that run on a scoring app of their own, reading queue `queue`."""

    def __init__(self, queue: str) -> None:
        super().__init__(DeploymentSettings(mini_batch_size=1))
        self.queue = queue

    def job_compute(self, name: str) -> JobCompute:
        return JobCompute(name, None, self.queue)


def test_a_job_of_a_compute_with_its_own_queue_is_planned_and_recovered_there(env):  # noqa: F811
    account, store, queue, data, name = env
    pool = minibatch_queue(account, name + "-pool")
    pool.create_queue()
    _upload(data, "in", 2)
    service = JobService(store, _PoolRegistry(name + "-pool"))
    job, _ = service.invoke("ep1", {"input": _url(account, name, "in")})
    assert start_state(store, queue, job.id).planned  # small: planned in the invoke request
    assert _drain_queue(queue) == []  # nothing on the main scoring app's queue
    assert sorted(m.index for m in _drain_queue(pool)) == [0, 1]
    dead = Holdings(store.state, "dead-host", interval=0.2)
    dead.hold(job.id, 0, 0, 1, 1).running()
    dead.beat()
    dead.close()
    time.sleep(1.2)
    recovery = (queue, RecoverySettings(stall_seconds=1.0))
    assert not advance_job(store, job.id, recovery=recovery).ended
    assert _drain_queue(queue) == []
    assert [(m.index, m.copy) for m in _drain_queue(pool)] == [(0, 1)]  # the stalled one


class _CappedRegistry(FakeRegistry):
    """A compute of one host slot."""

    def __init__(self, pool: str) -> None:
        super().__init__(DeploymentSettings(mini_batch_size=1))
        self.pool = pool

    def job_compute(self, name: str) -> JobCompute:
        return JobCompute("one-slot-" + self.pool, max_instances=1)


def test_mini_batches_a_full_compute_defers_are_not_copied_until_they_vanish(env):  # noqa: F811
    account, store, queue, data, name = env
    _upload(data, "in", 3)
    job, _ = JobService(store, _CappedRegistry(name)).invoke(
        "ep1", {"input": _url(account, name, "in")})
    assert plan_job(store, queue, job.id).ok
    _drain_queue(queue)
    busy = ComputeAdmission(store.state)  # the host that has the one slot, scoring 2
    assert busy.enter(job.compute)
    busy_beats = Holdings(store.state, "busy-host", interval=60)
    busy_beats.hold(job.id, 2, 0, 1, 1).running()
    busy_beats.beat()  # 2 taken: 0 and 1 are behind the queue front
    turned_away = MiniBatchHandler(store, FakeRuntime(), queue,
                                   holdings=Holdings(store.state, "turned-away", interval=60))
    # Heartbeat times are whole seconds, and a check may take a while on a loaded machine.
    settings = RecoverySettings(stall_seconds=5.0)
    try:
        for deferred in ((0, 1), (0, 1), (0,)):  # deliveries cycle; then 1 vanishes
            for index in deferred:
                result = turned_away.process(MiniBatchMessage(job.id, index, 0).encode(), 1)
                assert result.action == "deferred"
            turned_away.holdings.beat()
            assert not advance_job(store, job.id, recovery=(queue, settings)).ended
            copies = store.read_json(layout.progress(job.id))["copies"]
            if deferred == (0, 1):
                assert copies == {}, "a deferred mini-batch was copied"
                time.sleep(5.2)  # past the threshold since the first check
        assert list(copies) == ["1"]  # no deferral reported for 5.2 s
    finally:
        busy.close()
        turned_away.admission.close()


def test_what_is_not_a_heartbeat_in_the_folder_is_ignored(env):  # noqa: F811
    _, store, _, _, _ = env
    job = _planned_job(env, 1)
    store.state.upload_blob(layout.heartbeat(job.id, "junk"), b"{not json")
    Holdings(store.state, "real", interval=60).hold(job.id, 0, 0, 1, 1)
    assert [s.beat.host for s in read_heartbeats(store.state, job.id)] == []
    store.state.upload_blob(layout.heartbeat(job.id, "ok"),
                            Heartbeat("ok", 3.0, 1).to_bytes())
    assert [s.beat.host for s in read_heartbeats(store.state, job.id)] == ["ok"]
