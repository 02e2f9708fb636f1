"""The batchfn Functions app: serves the role the app setting BATCHFN_ROLE names (control,
scoring or all; see shared/contract/roles.py) and registers one blueprint per concern of
that role."""

import azure.functions as func

from functions.health import bp as health
from shared.contract.roles import CONTROL, SCORING, app_role, serves


def control_blueprints() -> list[func.Blueprint]:
    """HTTP API, OpenAPI, orchestration and activities, blob drop, the studio console, the
    poison-queue recorder (a poison message must not wake the scoring app's GPUs)."""
    from functions.blob_drop import bp as blob_drop
    from functions.control_api import bp as control_api
    from functions.environments_api import bp as environments_api
    from functions.jobs_api import bp as jobs_api
    from functions.openapi import bp as openapi
    from functions.orchestration import bp as orchestration
    from functions.poison_queue import bp as poison_queue
    from functions.studio import bp as studio

    return [control_api, environments_api, openapi, jobs_api, orchestration, blob_drop,
            studio, poison_queue]


def scoring_blueprints() -> list[func.Blueprint]:
    """The mini-batch queue trigger: queues and blobs only."""
    from functions.scoring_queue import bp as scoring_queue

    return [scoring_queue]


role = app_role()
if serves(role, CONTROL):
    import azure.durable_functions as df

    app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
else:
    # The scoring app never loads the Durable extension: no task hub, no durable client.
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health)
if serves(role, CONTROL):
    from shared.control.computes import ScoringProfiles
    from shared.control.datastores import StorageBoundaries
    from shared.control.environments import check_settings as check_environment_settings
    from shared.control.lifecycle import check_settings as check_event_settings
    from shared.control.planner import JobCaps
    from shared.control.recovery import RecoverySettings

    # A malformed BATCHFN_DATASTORES, BATCHFN_INPUT_ALIASES, BATCHFN_SCORING_PROFILES, job
    # cap, recovery, environment, event or price setting stops the app here, as an unknown
    # role does.
    StorageBoundaries.from_settings()
    ScoringProfiles.from_settings()
    JobCaps.from_settings()
    RecoverySettings.from_environment()
    check_environment_settings()
    check_event_settings()
    for blueprint in control_blueprints():
        app.register_functions(blueprint)
if serves(role, SCORING):
    from shared.contract.uv_settings import managed_pythons
    from shared.scoring.fail_fast import fail_fast_batches
    from shared.scoring.heartbeats import heartbeat_interval
    from shared.scoring.worker_users import WorkerUsers

    # So does a malformed BATCHFN_HEARTBEAT_SECONDS, BATCHFN_FAIL_FAST_BATCHES,
    # BATCHFN_ALLOW_ROOT_WORKERS or BATCHFN_MANAGED_PYTHONS on a scoring app.
    heartbeat_interval()
    fail_fast_batches()
    WorkerUsers.from_settings()
    managed_pythons()
    for blueprint in scoring_blueprints():
        app.register_functions(blueprint)
