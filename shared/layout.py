"""Where batchfn keeps things in its storage account: container and queue names."""

from __future__ import annotations

# Containers
REGISTRY_CONTAINER = "batchfn-registry"   # endpoints/<e>.json, deployments/<e>/<d>.json
ASSETS_CONTAINER = "batchfn-assets"       # models/..., code/... (content-addressed versions)
DATA_CONTAINER = "batchfn-data"           # the default datastore; CLI uploads land here
JOBS_CONTAINER = "batchfn-jobs"           # default job outputs: <job id>/<output_file_name>
STATE_CONTAINER = "batchfn-state"         # internal job state: <job id>/...

# The Azure ML name of the default datastore, mapped to DATA_CONTAINER.
DEFAULT_DATASTORE = "workspaceblobstore"

# Queues
MINIBATCH_QUEUE = "minibatches"
POISON_SUFFIX = "-poison"
# Scoring hosts tell the control app here that a ledger shard may be complete.
SHARD_HINT_QUEUE = "shard-hints"
