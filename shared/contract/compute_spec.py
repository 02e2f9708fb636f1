"""Azure ML `compute.yml` (AmlCompute) documents: a compute is a named scoring pool.

batchfn has no clusters to create; what a compute means on Functions is the share of the
scoring hosts its jobs may use and where they run:

- `max_instances` caps the scoring hosts working on the pool's jobs at once (the scoring
  engine enforces it with per-pool host leases, shared/scoring/compute_admission.py);
- `min_instances` is the number of hosts to keep warm: the minimum replicas of the
  scoring app that serves the pool, set when that app is deployed (a note where the
  platform cannot: devhost is one host);
- `size` picks the scoring profile, the workload profile of the scoring app that serves
  the pool: a T4 or A100 GPU, or CPU only. Sizes no profile serves are refused.

A deployment names its pool with `compute:` (`azureml:<name>` or `<name>`); without one it
runs on the built-in pool `default`: no cap, the main scoring app.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .deployment_spec import IgnoredField, tags_field, text_field
from .errors import InvalidRequest
from .names import check_resource_name, shown
from .settings import MAX_INSTANCE_COUNT

COMPUTE_TYPE = "amlcompute"
DEFAULT_COMPUTE = "default"  # the pool of deployments without `compute:`
TIERS = ("dedicated", "low_priority")
MAX_IDLE_SECONDS = 7 * 24 * 3600
# Azure ML's defaults (CLI v2 schema): no size given means the pool runs on the main
# scoring app, whatever its profile.
DEFAULT_MAX_INSTANCES = 1
DEFAULT_IDLE_SECONDS = 120

# Scoring profiles: the workload profile type of the Container Apps scoring app serving it.
PROFILE_WORKLOAD_TYPES = {
    "gpu-t4": "Consumption-GPU-NC8as-T4",
    "gpu-a100": "Consumption-GPU-NC24-A100",
    "cpu": "Consumption",
}
PROFILES = tuple(PROFILE_WORKLOAD_TYPES)
# Azure VM sizes (the families Azure ML clusters use) and the profile that serves each.
_SIZE_FAMILIES = (
    (re.compile(r"standard_nc\d+as_t4_v3"), "gpu-t4"),
    (re.compile(r"standard_nc\d+ads_a100_v4|standard_nd96am?sr(_a100)?_v4"), "gpu-a100"),
    (re.compile(r"standard_(d|ds|e|es|f|fs)\d+[a-z]*(_v[2-6])?"), "cpu"),
)
_PROFILE_ALIASES = {"t4": "gpu-t4", "a100": "gpu-a100", **{p: p for p in PROFILES}}
SIZES_SERVED = ("T4 GPU: Standard_NC<n>as_T4_v3 (or gpu-t4); A100 GPU: "
                "Standard_NC<n>ads_A100_v4, Standard_ND96asr_v4, Standard_ND96amsr_A100_v4 "
                "(or gpu-a100); CPU: Standard_D*/DS*/E*/F* sizes (or cpu)")
_TIER_SPELLINGS = {"dedicated": "dedicated", "lowpriority": "low_priority"}

COMPUTE_FIELDS = frozenset({"name", "type", "description", "tags", "size", "tier",
                            "min_instances", "max_instances", "idle_time_before_scale_down"})
_SET_BY_SERVICE = "set by the service, not by the file"
_NO_VMS = "batchfn's scoring hosts are Functions replicas: no VMs to log in to or network"
COMPUTE_IGNORED = {
    "$schema": "an editor hint",
    "location": "the pool runs where the scoring apps were deployed",
    "identity": "jobs use the scoring app's managed identity",
    "ssh_public_access_enabled": _NO_VMS,
    "ssh_settings": _NO_VMS,
    "network_settings": _NO_VMS,
    "enable_node_public_ip": _NO_VMS,
    "id": _SET_BY_SERVICE,
    "provisioning_state": _SET_BY_SERVICE,
    "created_on": _SET_BY_SERVICE,
    "resource_id": _SET_BY_SERVICE,
}
_UNKNOWN = "not a field of Azure ML's compute schema (a typo?)"


def profile_for_size(size: Any) -> str:
    """The scoring profile serving an Azure VM size (or a profile name); InvalidRequest with
    the sizes batchfn serves for any other."""
    if not isinstance(size, str) or not size.strip() or len(size) > 64:
        raise InvalidRequest(f"size {shown(size)} is not valid: expected {SIZES_SERVED}",
                             details={"field": "size", "value": shown(size)},
                             code="unsupported_size")
    spelling = size.strip().lower()
    if spelling in _PROFILE_ALIASES:
        return _PROFILE_ALIASES[spelling]
    for pattern, profile in _SIZE_FAMILIES:
        if pattern.fullmatch(spelling):
            return profile
    raise InvalidRequest(
        f"no scoring profile serves size {shown(size)}: batchfn's scoring hosts are "
        f"serverless Container Apps replicas. Sizes it serves: {SIZES_SERVED}",
        details={"field": "size", "value": shown(size)}, code="unsupported_size")


@dataclass(frozen=True)
class ComputeSpec:
    """A validated compute document (create: every field; update: what it changes)."""

    name: str
    size: str | None = None
    profile: str | None = None
    min_instances: int = 0
    max_instances: int | None = DEFAULT_MAX_INSTANCES  # None: no cap (the default pool)
    tier: str = "dedicated"
    idle_time_before_scale_down: int = DEFAULT_IDLE_SECONDS
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    ignored: tuple[IgnoredField, ...] = ()

    @classmethod
    def from_document(cls, data: Any, *, name: str | None = None) -> ComputeSpec:
        """Validate a compute document; `name` (CLI --name or URL) wins over the file's."""
        if not isinstance(data, Mapping):
            raise InvalidRequest(f"compute document must be a mapping, got "
                                 f"{type(data).__name__}", code="invalid_document")
        doc = dict(data)
        _check_type(doc.get("type", COMPUTE_TYPE))
        size = doc.get("size")
        min_instances = _count(doc.get("min_instances", 0), "min_instances", 0)
        max_instances = _count(doc.get("max_instances", DEFAULT_MAX_INSTANCES),
                               "max_instances", 1)
        if min_instances > max_instances:
            raise InvalidRequest(f"min_instances ({min_instances}) is more than max_instances "
                                 f"({max_instances})", details={"field": "min_instances"},
                                 code="invalid_compute")
        ignored = tuple(IgnoredField(key, COMPUTE_IGNORED.get(key, _UNKNOWN))
                        for key in sorted(doc) if key not in COMPUTE_FIELDS)
        return cls(
            name=check_resource_name("compute", name if name is not None else doc.get("name")),
            size=None if size is None else str(size).strip(),
            profile=None if size is None else profile_for_size(size),
            min_instances=min_instances,
            max_instances=max_instances,
            tier=_tier(doc.get("tier")),
            idle_time_before_scale_down=_count(
                doc.get("idle_time_before_scale_down", DEFAULT_IDLE_SECONDS),
                "idle_time_before_scale_down", 0, MAX_IDLE_SECONDS),
            description=text_field(doc.get("description"), "description"),
            tags=tags_field(doc.get("tags"), "tags"),
            ignored=ignored,
        )


def _check_type(value: Any) -> None:
    if str(value).lower() != COMPUTE_TYPE:
        raise InvalidRequest(
            f"compute type {shown(value)} is not supported: batchfn's computes are scoring "
            f"pools of type {COMPUTE_TYPE} (no Kubernetes, compute instances or VMs)",
            details={"field": "type", "value": shown(value)}, code="unsupported_compute_type")


def _count(value: Any, what: str, minimum: int, maximum: int = MAX_INSTANCE_COUNT) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidRequest(f"{what} must be a whole number from {minimum} to {maximum}, "
                             f"got {shown(value)}", details={"field": what},
                             code="invalid_compute")
    return value


def _tier(value: Any) -> str:
    if value is None:
        return "dedicated"
    tier = _TIER_SPELLINGS.get(str(value).lower().replace("_", ""))
    if tier is None:
        raise InvalidRequest(f"tier {shown(value)} is not valid: expected one of "
                             + ", ".join(TIERS), details={"field": "tier"},
                             code="invalid_compute")
    return tier
