"""Where batchfn keeps things in its storage account: containers, queues, and the names of
the blobs in them. The one place that answers "where is it" (docs/architecture.md shows
the tree).

Blob names are functions of the names they hold (an endpoint, a job id, a mini-batch
index); callers check those names first (contract.names, contract.job_records).
"""

from __future__ import annotations

from .timestamps import parse_time

# ----- containers -----------------------------------------------------------------------

REGISTRY_CONTAINER = "batchfn-registry"  # endpoint and deployment records, asset indexes
ASSETS_CONTAINER = "batchfn-assets"  # asset files: models/..., code/..., staging/...
DATA_CONTAINER = "batchfn-data"  # the default datastore; CLI uploads land here
JOBS_CONTAINER = "batchfn-jobs"  # default job outputs: <job id>/<output_file_name>
STATE_CONTAINER = "batchfn-state"  # internal job state: <job id>/...
DROP_CONTAINER = "batchfn-drop"  # blob drop: <endpoint>/<folder>/_start starts a job
# Built deployment environments, packed by the scoring host that built them (environment_pack)
ENVIRONMENTS_CONTAINER = "batchfn-environments"

# The Azure ML name of the default datastore, mapped to DATA_CONTAINER.
DEFAULT_DATASTORE = "workspaceblobstore"

# ----- queues ---------------------------------------------------------------------------

MINIBATCH_QUEUE = "minibatches"
POISON_SUFFIX = "-poison"
# Jobs' lifecycle events (CloudEvents JSON) where no Event Grid topic is set.
EVENTS_QUEUE = "batchfn-events"


def poison_queue(queue: str = MINIBATCH_QUEUE) -> str:
    """The queue the Functions host moves a message to after its last failed try."""
    return queue + POISON_SUFFIX


def minibatch_queue_for(profile: str | None) -> str:
    """The mini-batch queue of a scoring profile's own scoring app (contract.compute_spec);
    None: the main scoring app's queue."""
    return MINIBATCH_QUEUE if profile is None else f"{MINIBATCH_QUEUE}-{profile}"


# ----- the registry container -----------------------------------------------------------

ENDPOINTS_PREFIX = "endpoints/"


def endpoint_record(endpoint: str) -> str:
    return f"{ENDPOINTS_PREFIX}{endpoint}.json"


def deployments_prefix(endpoint: str) -> str:
    return f"deployments/{endpoint}/"


def deployment_record(endpoint: str, deployment: str) -> str:
    return f"{deployments_prefix(endpoint)}{deployment}.json"


def asset_index(kind: str, name: str) -> str:
    """The folder of an asset's records: `versions/<N>.json` and `digests/<sha>.json`."""
    return f"assets/{kind}/{name}/"


def asset_version_record(kind: str, name: str, version: str | int) -> str:
    return f"{asset_versions_prefix(kind, name)}{version}.json"


def asset_versions_prefix(kind: str, name: str) -> str:
    return f"{asset_index(kind, name)}versions/"


def asset_digest_record(kind: str, name: str, digest: str) -> str:
    return f"{asset_index(kind, name)}digests/{digest}.json"


def asset_kind_prefix(kind: str) -> str:
    """The folder holding one folder per asset of `kind`."""
    return f"assets/{kind}/"


COMPUTES_PREFIX = "computes/"


def compute_record(name: str) -> str:
    return f"{COMPUTES_PREFIX}{name}.json"


# ----- the assets container -------------------------------------------------------------

# asset kind -> top folder of its files: models and code in ASSETS_CONTAINER, data assets
# in the default datastore (DATA_CONTAINER), where jobs read them.
ASSET_FOLDERS = {"model": "models", "code": "code", "data": "assets"}
STAGING_PREFIX = "staging/"


def asset_content(kind: str, name: str, digest: str) -> str:
    """The prefix of one asset version's files: `<prefix><root folder>/<path>`."""
    return f"{ASSET_FOLDERS[kind]}/{name}/{digest}/"


def asset_container(kind: str) -> str:
    """The container of an asset kind's files."""
    return DATA_CONTAINER if kind == "data" else ASSETS_CONTAINER


def staged_upload(upload_id: str) -> str:
    """The prefix an upload grant writes under, before registration checks the files."""
    return f"{STAGING_PREFIX}{upload_id}/"


# ----- the state container: one folder per job ------------------------------------------

# One empty blob per job, its metadata the job's summary: `job list` reads pages of them.
# Named `_jobs/<newest-first key>/<job id>`, so that a listing in name order is newest first.
JOB_INDEX_PREFIX = "_jobs/"
_LATEST_MILLISECONDS = 10 ** 13 - 1  # the key's 13 digits last until the year 2286
COMPUTE_SLOTS_PREFIX = "_compute/"  # host slots of capped scoring pools (leased blobs)
# How often a scoring host renews a slot it holds; usage reports estimate lease calls by it.
COMPUTE_SLOT_RENEW_SECONDS = 5.0


def compute_slot(compute: str, slot: int) -> str:
    """One of a pool's `max_instances` host slots: a scoring host leases it while it works
    on the pool's mini-batches (shared/scoring/compute_admission.py)."""
    return f"{COMPUTE_SLOTS_PREFIX}{compute}/slot-{slot:04d}"


def job_record(job_id: str) -> str:
    return f"{job_id}/job.json"


def job_index(job_id: str, created_at: str) -> str:
    """The index blob of a job created at `created_at` (the stored timestamp format)."""
    return f"{JOB_INDEX_PREFIX}{newest_first_key(created_at)}/{job_id}"


def newest_first_key(created_at: str) -> str:
    """13 digits that sort later times first (ties: by job id, after the key)."""
    moment = parse_time(created_at)
    milliseconds = round(moment.timestamp() * 1000) if moment is not None else 0
    return f"{_LATEST_MILLISECONDS - milliseconds:013d}"


def plan(job_id: str) -> str:
    return f"{job_id}/plan.json"


def manifest(job_id: str, chunk: int) -> str:
    return f"{job_id}/manifests/{chunk:06d}.json"


def ledger(job_id: str, shard: int) -> str:
    return f"{job_id}/ledger/{shard:04d}"


def progress(job_id: str) -> str:
    return f"{job_id}/progress.json"


def part(job_id: str, index: int) -> str:
    return f"{job_id}/parts/{index:08d}"


def failure(job_id: str, index: int) -> str:
    return f"{failures_prefix(job_id)}{index:08d}.json"


def heartbeats_prefix(job_id: str) -> str:
    return f"{job_id}/heartbeats/"


def heartbeat(job_id: str, host: str) -> str:
    """A scoring host's heartbeat for the job (contract.heartbeats)."""
    return f"{heartbeats_prefix(job_id)}{host}.json"


def failures_prefix(job_id: str) -> str:
    return f"{job_id}/failures/"


def logs_prefix(job_id: str) -> str:
    return f"{job_id}/logs/"


def attempt_log(job_id: str, index: int, attempt: int) -> str:
    return f"{logs_prefix(job_id)}{index:08d}/attempt-{attempt}.log"


def succeeded_log(job_id: str, worker: str) -> str:
    return f"{logs_prefix(job_id)}succeeded-{worker}.log"


def errors_report(job_id: str) -> str:
    return f"{job_id}/errors.jsonl"


def events_log(job_id: str) -> str:
    """The job's lifecycle events, one CloudEvent per line (an append blob)."""
    return f"{job_id}/events.jsonl"


def usage_report(job_id: str) -> str:
    """The job's usage and cost report, written when it ends."""
    return f"{job_id}/usage.json"


# Metadata of every output blob a job writes (the merged file, the script's files): which
# job wrote it, so a folder several jobs share shows each job its own outputs.
JOB_METADATA_KEY = "batchfn_job"


# ----- the data container (the default datastore) -------------------------------------

UPLOADS_PREFIX = "uploads/"  # local inputs the CLI uploads: uploads/<upload id>/<name>
# Registered data assets' files (asset_content("data", ...)): jobs read them, never write.
DATA_ASSETS_PREFIX = ASSET_FOLDERS["data"] + "/"


def input_upload(upload_id: str) -> str:
    """The folder one upload of local inputs writes under."""
    return f"{UPLOADS_PREFIX}{upload_id}/"


# ----- the drop container ---------------------------------------------------------------

DROP_MARKER = "_start"  # <endpoint>/<folder>/_start starts a job on <folder>
JOB_FEEDBACK = "_job.json"  # written beside a marker that started a job
ERROR_FEEDBACK = "_error.json"  # written beside a marker that was refused
OUTPUT_FOLDER = "_output"  # a drop job's default output folder, beside its inputs


# ----- the environments container: built environments, one pack per content key -------


def environment_pack(key: str, compression: str) -> str:
    """A built environment, packed (a tar file compressed with `compression`: "zst" or
    "gz") by the host that built it; create-only."""
    return f"packs/{key}.tar.{compression}"


def environment_build_lock(key: str) -> str:
    """The blob whose lease the host building environment `key` holds meanwhile."""
    return f"locks/{key}"
