"""Compute admission: a capped pool's `max_instances` scoring hosts at most, at once.

A pool with `max_instances: N` has N host slots, blobs `_compute/<pool>/slot-<i>` of the
state container (contract.layout.compute_slot). A scoring host works on a mini-batch of
the pool only while it holds one of them under a blob lease: it takes one when its first
mini-batch of the pool arrives, shares it between all the mini-batches of the pool it has
in hand (its worker slots), renews it every few seconds, and releases it once it has had
none for a moment (LINGER_SECONDS, so back-to-back mini-batches cost no lease calls). A
host that dies holds its slot until the lease expires (LEASE_SECONDS). A host that finds
every slot taken leaves the message for later: the handler sends a copy with a short
visibility delay, counting no attempt, and completes the one it got.

The leases are the engine's own: no host trusts another to count. Their cost is one renew
per pool per host every RENEW_SECONDS while it works, and at most N lease calls per
FULL_BACKOFF_SECONDS on a host that finds the pool full. Pools without a cap (the default
pool) cost nothing: no lease, no storage call.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, ContainerClient

from shared.contract import layout
from shared.contract.job_records import JobCompute

log = logging.getLogger(__name__)

LEASE_SECONDS = 15  # the shortest blob lease: a dead host's slot frees this soon
RENEW_SECONDS = layout.COMPUTE_SLOT_RENEW_SECONDS
LINGER_SECONDS = 1.0  # a slot is kept this long after the host's last mini-batch of the pool
FULL_BACKOFF_SECONDS = 1.0  # a full pool is not tried again sooner by the same host
TICK_SECONDS = 0.5


@dataclass
class _Holding:
    """A slot this host holds: its lease, and how many mini-batches of the pool use it."""

    lease: BlobLeaseClient
    slot: int
    users: int
    renewed_at: float
    idle_since: float | None = None


class ComputeAdmission:
    """The host slots of capped pools that this scoring host holds; thread-safe, one per
    process."""

    def __init__(self, state: ContainerClient) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._held: dict[str, _Holding] = {}
        self._full_until: dict[str, float] = {}
        self._keeper: threading.Thread | None = None
        self._stopping = threading.Event()

    def enter(self, compute: JobCompute) -> bool:
        """Admit one mini-batch of `compute`'s pool: True when this host holds (or now takes)
        one of its slots, False when all are taken by other hosts. Each True needs a
        `leave`."""
        if compute.max_instances is None:
            return True
        now = time.monotonic()
        with self._lock:
            holding = self._held.get(compute.name)
            if holding is not None and holding.slot >= compute.max_instances:
                # The pool shrank since this slot was taken: give it up, take a valid one.
                self._held.pop(compute.name)
                _release(holding.lease)
                holding = None
            if holding is not None:
                holding.users += 1
                holding.idle_since = None
                return True
            if self._full_until.get(compute.name, 0.0) > now:
                return False
            taken = self._acquire(compute)
            if taken is None:
                self._full_until[compute.name] = now + FULL_BACKOFF_SECONDS
                return False
            lease, slot = taken
            self._held[compute.name] = _Holding(lease, slot, users=1, renewed_at=now)
            self._start_keeper()
        log.info("compute %s: this host took slot %d of %d", compute.name, slot,
                 compute.max_instances)
        return True

    def leave(self, compute: JobCompute) -> None:
        """A mini-batch admitted by `enter` is done; the slot is released after a linger."""
        if compute.max_instances is None:
            return
        with self._lock:
            holding = self._held.get(compute.name)
            if holding is None:
                return  # lost meanwhile (the lease expired): nothing to give back
            holding.users = max(0, holding.users - 1)
            if holding.users == 0:
                holding.idle_since = time.monotonic()

    def held(self) -> dict[str, int]:
        """The pools this host holds a slot of, and which slot (for logs and tests)."""
        with self._lock:
            return {name: holding.slot for name, holding in self._held.items()}

    def close(self) -> None:
        """Release every slot (the process is stopping)."""
        self._stopping.set()
        with self._lock:
            held, self._held = self._held, {}
        for holding in held.values():
            _release(holding.lease)

    # ----- internals -------------------------------------------------------------------

    def _acquire(self, compute: JobCompute) -> tuple[BlobLeaseClient, int] | None:
        """Lease a free slot of the pool (tried from a random one, so hosts spread)."""
        assert compute.max_instances is not None
        slots = compute.max_instances
        first = random.randrange(slots)
        for step in range(slots):
            slot = (first + step) % slots
            blob = self._state.get_blob_client(layout.compute_slot(compute.name, slot))
            lease = BlobLeaseClient(blob)
            try:
                lease.acquire(lease_duration=LEASE_SECONDS)
            except ResourceNotFoundError:
                self._create_slot(blob)
                try:
                    lease.acquire(lease_duration=LEASE_SECONDS)
                except HttpResponseError:
                    continue
            except HttpResponseError as exc:
                if exc.status_code == 409:  # leased by another host
                    continue
                raise
            return lease, slot
        return None

    def _create_slot(self, blob) -> None:  # noqa: ANN001 - a BlobClient
        try:
            blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass
        except ResourceNotFoundError:
            try:
                self._state.create_container()
            except ResourceExistsError:
                pass
            try:
                blob.upload_blob(b"", overwrite=False)
            except ResourceExistsError:
                pass

    def _start_keeper(self) -> None:
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(target=self._keep, name="batchfn-compute-slots",
                                            daemon=True)
            self._keeper.start()

    def _keep(self) -> None:
        """Renew the slots in use, release those idle past the linger."""
        while not self._stopping.wait(TICK_SECONDS):
            now = time.monotonic()
            with self._lock:
                due = [(name, holding) for name, holding in self._held.items()
                       if holding.users == 0 and holding.idle_since is not None
                       and now - holding.idle_since >= LINGER_SECONDS
                       or now - holding.renewed_at >= RENEW_SECONDS]
            for name, holding in due:
                self._tend(name, holding, now)

    def _tend(self, name: str, holding: _Holding, now: float) -> None:
        with self._lock:
            if self._held.get(name) is not holding:
                return
            idle = holding.users == 0 and holding.idle_since is not None and (
                now - holding.idle_since >= LINGER_SECONDS)
            if idle:
                self._held.pop(name)
        if idle:
            _release(holding.lease)
            log.info("compute %s: this host released slot %d", name, holding.slot)
            return
        try:
            holding.lease.renew()
            holding.renewed_at = now
        except HttpResponseError as exc:
            # Expired and taken by another host (this one stalled past LEASE_SECONDS): let
            # the next mini-batch of the pool ask again.
            log.warning("compute %s: slot %d lost (%s)", name, holding.slot, exc.status_code)
            with self._lock:
                if self._held.get(name) is holding:
                    self._held.pop(name)


def _release(lease: BlobLeaseClient) -> None:
    try:
        lease.release()
    except HttpResponseError:
        pass  # expired or taken meanwhile: it is not ours to release any more
