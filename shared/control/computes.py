"""Computes: named scoring pools, kept as JSON records in the registry container.

`computes/<name>.json` holds one ComputeRecord. The pool `default` is built in: deployments
without `compute:` run on it, it has no cap until an operator gives it one (which stores its
record), and it cannot be deleted. A pool's `size` picks its scoring profile; which profiles
this installation serves, and the queue each one's scoring app reads, come from the app
setting BATCHFN_SCORING_PROFILES (ScoringProfiles). A job takes a snapshot of its pool at
invoke (JobCompute): its cap and its queue.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from azure.storage.blob import ContainerClient

from shared.contract import layout
from shared.contract.compute_spec import DEFAULT_COMPUTE, PROFILES, ComputeSpec
from shared.contract.errors import Conflict, InvalidRequest, NotFound
from shared.contract.job_records import JobCompute
from shared.contract.names import check_resource_name
from shared.contract.registry_records import ComputeRecord
from shared.contract.timestamps import utc_now
from shared.storage.blob_records import BlobRecords

SCORING_PROFILES_SETTING = "BATCHFN_SCORING_PROFILES"
UPDATABLE = frozenset({"size", "tier", "min_instances", "max_instances",
                       "idle_time_before_scale_down", "description", "tags"})
MAX_COMPUTES = 1000
# How long an invoke may use a pool's snapshot read by an earlier one: an update reaches new
# jobs within this, and a warm invoke costs no registry read.
SNAPSHOT_SECONDS = 2.0


class ProfileSettingError(ValueError):
    """BATCHFN_SCORING_PROFILES is malformed."""


@dataclass(frozen=True)
class ScoringProfiles:
    """The scoring apps of this installation. `main` is the profile of the main scoring
    app (queue `minibatches`); `own_apps` have a scoring app and a queue of their own.
    `main` None: one scoring host serves every profile (devhost, a single app)."""

    main: str | None = None
    own_apps: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, env: Mapping[str, str] | None = None) -> ScoringProfiles:
        """From BATCHFN_SCORING_PROFILES: the main app's profile first, then the profiles
        with scoring apps of their own (`gpu-t4,gpu-a100,cpu`); unset: one app serves all."""
        env = os.environ if env is None else env
        listed = [p.strip() for p in env.get(SCORING_PROFILES_SETTING, "").split(",")
                  if p.strip()]
        unknown = [p for p in listed if p not in PROFILES]
        if unknown or len(set(listed)) != len(listed):
            raise ProfileSettingError(
                f"{SCORING_PROFILES_SETTING}: {','.join(listed)[:200]!r} must list distinct "
                f"profiles of {', '.join(PROFILES)}, the main scoring app's first")
        return cls(main=listed[0], own_apps=tuple(listed[1:])) if listed else cls()

    def queues(self) -> tuple[str, ...]:
        """The mini-batch queue of every scoring app of this installation."""
        return (layout.MINIBATCH_QUEUE,
                *(layout.minibatch_queue_for(profile) for profile in self.own_apps))

    def queue(self, profile: str | None) -> str:
        """The mini-batch queue of the app serving `profile` (None: the main app's)."""
        if profile is None or self.main is None or profile == self.main:
            return layout.MINIBATCH_QUEUE
        return layout.minibatch_queue_for(profile)

    def check_served(self, profile: str | None, size: str | None) -> None:
        """InvalidRequest when no scoring app of this installation serves `profile`."""
        if profile is None or self.main is None or profile in (self.main, *self.own_apps):
            return
        served = ", ".join((self.main, *self.own_apps))
        raise InvalidRequest(
            f"size {size!r} runs on the {profile} scoring profile, and this batchfn has no "
            f"scoring app for it (profiles served: {served}); deploy one (infra parameter "
            "scoringProfiles, docs/deploy-azure.md) or choose a served size",
            details={"field": "size", "profile": profile, "served": served},
            code="profile_not_deployed")


class Computes:
    """Create, read, update and delete scoring pools; the pool a job runs on."""

    def __init__(self, registry: ContainerClient, profiles: ScoringProfiles | None = None
                 ) -> None:
        self._records = BlobRecords(registry, load=ComputeRecord.from_dict,
                                    dump=ComputeRecord.to_dict, what="compute")
        self.profiles = profiles or ScoringProfiles.from_settings()
        self._snapshots: dict[str, tuple[float, JobCompute]] = {}

    def get(self, name: str) -> ComputeRecord:
        """The pool `name`; NotFound (listing the pools) if there is none."""
        check_resource_name("compute", name)
        found = self._records.read(layout.compute_record(name))
        if found is not None:
            return found
        if name == DEFAULT_COMPUTE:
            return _built_in_default()
        raise NotFound(f"compute {name!r} does not exist; computes: {self._names()}",
                       details={"compute": name}, code="compute_not_found")

    def list(self) -> list[ComputeRecord]:
        """Every pool by name, the built-in default among them."""
        stored = self._records.list(layout.COMPUTES_PREFIX)[:MAX_COMPUTES]
        if not any(record.name == DEFAULT_COMPUTE for record in stored):
            stored.append(_built_in_default())
        return sorted(stored, key=lambda record: record.name)

    def create(self, spec: ComputeSpec, *, replace_existing: bool = False
               ) -> tuple[ComputeRecord, bool]:
        """Create a pool (or, `replace_existing`, create or replace it); (record, created)."""
        self.profiles.check_served(spec.profile, spec.size)
        self._snapshots.pop(spec.name, None)
        now = utc_now()
        record = _record(spec, created_at=now, updated_at=now)
        blob = layout.compute_record(spec.name)
        if replace_existing:
            return self._records.put(blob, lambda current: record if current is None
                                     else replace(record, created_at=current.created_at))
        if spec.name == DEFAULT_COMPUTE or not self._records.create(blob, record):
            raise Conflict(f"compute {spec.name!r} already exists: use update to change it",
                           details={"compute": spec.name}, code="already_exists")
        return record, True

    def update(self, name: str, changes: Mapping[str, Any]) -> ComputeRecord:
        """Change a pool's size, tier, instance counts, idle time, description or tags."""
        if not isinstance(changes, Mapping) or not changes:
            raise InvalidRequest("nothing to update: give " + ", ".join(sorted(UPDATABLE)),
                                 code="invalid_update")
        unknown = sorted(set(changes) - UPDATABLE)
        if unknown:
            raise InvalidRequest(f"cannot update {', '.join(unknown)} of a compute; updatable: "
                                 + ", ".join(sorted(UPDATABLE)), code="invalid_update")
        current = self.get(name)
        spec = ComputeSpec.from_document({**_document(current), **changes}, name=name)
        if current.max_instances is None and "max_instances" not in changes:
            spec = replace(spec, max_instances=None)  # the default pool stays uncapped
        self.profiles.check_served(spec.profile, spec.size)
        self._snapshots.pop(name, None)

        def build(stored: ComputeRecord | None) -> ComputeRecord:
            base = stored or current
            return _record(spec, created_at=base.created_at, updated_at=utc_now())

        record, _created = self._records.put(layout.compute_record(name), build)
        return record

    def delete(self, name: str, users: Callable[[], list[str]]) -> None:
        """Delete a pool no deployment uses; `users()` lists the deployments that use it."""
        if name == DEFAULT_COMPUTE:
            raise InvalidRequest(f"the built-in compute {DEFAULT_COMPUTE!r} cannot be deleted: "
                                 "deployments without compute run on it",
                                 details={"compute": name}, code="default_compute")
        self.get(name)
        using = users()
        if using:
            raise Conflict(f"compute {name!r} is used by deployment(s) {', '.join(using[:20])}: "
                           "delete them first (or create them on another compute)",
                           details={"compute": name, "deployments": using[:100]},
                           code="compute_in_use")
        self._records.delete(layout.compute_record(name))
        self._snapshots.pop(name, None)

    def require(self, name: str | None) -> str:
        """The pool a deployment names (None: the default); InvalidRequest listing the pools
        when there is no such pool: a deployment create names it, so the request is wrong."""
        if name is None or name == DEFAULT_COMPUTE:
            return DEFAULT_COMPUTE
        try:
            return self.get(name).name
        except NotFound as exc:
            raise InvalidRequest(
                f"compute {name!r} does not exist: create it first (batchfn compute create -n "
                f"{name} --type amlcompute --max-instances N) or name one of: "
                f"{self._names()}", details={"field": "compute", "value": name},
                code="unknown_compute") from exc

    def job_compute(self, name: str) -> JobCompute:
        """A job's snapshot of its pool: the cap and the queue of its mini-batches (read at
        most every SNAPSHOT_SECONDS). A pool deleted under a deployment is a Conflict."""
        now = time.monotonic()
        cached = self._snapshots.get(name)
        if cached is not None and now - cached[0] < SNAPSHOT_SECONDS:
            return cached[1]
        try:
            record = self.get(name)
        except NotFound:
            raise Conflict(f"the deployment's compute {name!r} no longer exists: create it "
                           "again, or deploy on another compute", details={"compute": name},
                           code="compute_not_found") from None
        snapshot = JobCompute(name=record.name, max_instances=record.max_instances,
                              queue=self.profiles.queue(record.profile))
        self._snapshots[name] = (now, snapshot)
        return snapshot

    def notes(self, record: ComputeRecord) -> list[str]:
        """What a pool's settings do and do not do here, for the create/update answer."""
        notes = []
        if record.min_instances:
            notes.append(
                f"min_instances {record.min_instances}: hosts are kept warm by the minimum "
                "replicas of the scoring app serving the pool, set when the app is deployed "
                "(docs/deploy-azure.md); a devhost is one host, always warm")
        if record.tier == "low_priority":
            notes.append("tier low_priority: scoring apps have no low-priority hosts; the "
                         "pool runs on the same hosts as a dedicated one")
        if self.profiles.main is None and record.profile is not None:
            notes.append(f"size {record.size}: this batchfn has one scoring app for every "
                         f"size, so the {record.profile} profile is not a separate app here")
        return notes

    def _names(self) -> str:
        return ", ".join(record.name for record in self.list())


def _built_in_default() -> ComputeRecord:
    return ComputeRecord(name=DEFAULT_COMPUTE, max_instances=None,
                         description="built in: deployments without compute run here; "
                                     "no cap beyond the scoring app's own scale-out limit")


def _record(spec: ComputeSpec, *, created_at: str, updated_at: str) -> ComputeRecord:
    return ComputeRecord(
        name=spec.name, size=spec.size, profile=spec.profile,
        min_instances=spec.min_instances, max_instances=spec.max_instances, tier=spec.tier,
        idle_time_before_scale_down=spec.idle_time_before_scale_down,
        description=spec.description, tags=dict(spec.tags),
        created_at=created_at, updated_at=updated_at)


def _document(record: ComputeRecord) -> dict[str, Any]:
    """A pool as the compute document it would be created from (an update applies to it)."""
    document: dict[str, Any] = {
        "size": record.size, "tier": record.tier, "min_instances": record.min_instances,
        "idle_time_before_scale_down": record.idle_time_before_scale_down,
        "description": record.description, "tags": dict(record.tags)}
    if record.max_instances is not None:
        document["max_instances"] = record.max_instances
    return {key: value for key, value in document.items() if value is not None}
