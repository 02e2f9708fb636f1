"""Compute admission on a real Azurite: host slots of capped pools under blob leases, and the
handler leaving a mini-batch of a full pool for later without counting an attempt."""

from __future__ import annotations

import time

import pytest
from azure.storage.blob import BlobLeaseClient
from test_jobs_engine import FakeRegistry, FakeRuntime, _upload, _url, env  # noqa: F401

from shared.contract import layout
from shared.contract.job_records import JobCompute
from shared.contract.messages import MiniBatchMessage
from shared.contract.settings import DeploymentSettings
from shared.control.job_service import JobService
from shared.control.planner import plan_job
from shared.scoring import compute_admission
from shared.scoring.compute_admission import ComputeAdmission
from shared.scoring.minibatch_handler import MiniBatchHandler
from shared.storage.account import StorageAccount
from shared.storage.job_store import JobStore


@pytest.fixture
def state(storage_connection):
    return JobStore(StorageAccount(connection_string=storage_connection)).state


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_pool_of_one_admits_one_host_and_hands_over_after_the_linger(state, unique_name):
    pool = JobCompute(unique_name, max_instances=1)
    first, second = ComputeAdmission(state), ComputeAdmission(state)
    try:
        assert first.enter(pool) and first.enter(pool)  # two worker slots share the host's
        assert not second.enter(pool)
        first.leave(pool)
        assert first.held() == {unique_name: 0}  # one mini-batch still in hand
        first.leave(pool)
        _wait_for(lambda: not first.held())  # released once idle past the linger
        time.sleep(compute_admission.FULL_BACKOFF_SECONDS)  # `second` waits out its backoff
        assert second.enter(pool)
        assert not first.enter(pool)
    finally:
        first.close()
        second.close()


def test_uncapped_pools_cost_no_storage_call(state, unique_name):
    admission = ComputeAdmission(state)
    assert admission.enter(JobCompute(unique_name, max_instances=None))
    admission.leave(JobCompute(unique_name, max_instances=None))
    assert admission.held() == {}
    assert not list(state.list_blob_names(
        name_starts_with=f"{layout.COMPUTE_SLOTS_PREFIX}{unique_name}/"))


def test_a_shrunk_pool_gives_up_a_slot_past_its_new_size(state, unique_name):
    # Slot 0 is another host's; this one takes slot 1 of two, then the pool shrinks to one.
    blocker = state.get_blob_client(layout.compute_slot(unique_name, 0))
    blocker.upload_blob(b"", overwrite=True)
    lease = BlobLeaseClient(blocker)
    lease.acquire(lease_duration=compute_admission.LEASE_SECONDS)
    admission = ComputeAdmission(state)
    try:
        assert admission.enter(JobCompute(unique_name, max_instances=2))
        assert admission.held() == {unique_name: 1}
        admission.leave(JobCompute(unique_name, max_instances=2))
        assert not admission.enter(JobCompute(unique_name, max_instances=1))
        assert admission.held() == {}
        # Slot 1 was released, not left to expire: a host may lease it at once.
        BlobLeaseClient(state.get_blob_client(layout.compute_slot(unique_name, 1))).acquire(
            lease_duration=15)
    finally:
        admission.close()
        lease.release()


class PoolRegistry(FakeRegistry):
    def job_compute(self, name: str) -> JobCompute:
        return JobCompute("one-slot-" + self.pool, max_instances=1)


def test_a_full_pool_leaves_the_mini_batch_for_later_without_an_attempt(env, state):  # noqa: F811
    account, store, queue, data, name = env
    _upload(data, "in", 1)
    registry = PoolRegistry(DeploymentSettings())
    registry.pool = name
    job, _ = JobService(store, registry).invoke("ep1", {"input": _url(account, name, "in")})
    assert job.compute.max_instances == 1
    plan_job(store, queue, job.id)
    other_host = ComputeAdmission(state)
    assert other_host.enter(job.compute)
    worker = MiniBatchHandler(store, FakeRuntime(), queue)
    (message,) = queue.receive_messages(max_messages=1, visibility_timeout=1)
    # A third delivery: two earlier attempts failed, so the copy carries them along.
    result = worker.process(message.content, 3)
    assert result.action == "deferred" and "no free host slot" in result.detail
    queue.delete_message(message)
    assert not list(queue.receive_messages(max_messages=1))  # the copy waits a moment
    other_host.leave(job.compute)
    other_host.close()
    _wait_for(lambda: queue.get_queue_properties().approximate_message_count == 1)
    later = []
    _wait_for(lambda: later.extend(queue.receive_messages(max_messages=1)) or later)
    assert MiniBatchMessage.decode(later[0].content).prior_attempts == 2
    assert worker.process(later[0].content, 1).action == "scored"
    worker.admission.close()
