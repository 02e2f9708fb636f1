"""infra/bicep, infra/terraform and infra/docker deploy the same thing, and what the app uses.

Neither the bicep CLI, terraform nor docker runs here, so these checks read the files as
text: the containers, queues, identities, roles, app settings, GPU profiles and outputs of
both stacks against each other and against the names in shared/ and functions/, the
settings the code reads against the app of the role that reads them, the scoring image's
build inputs, plus the cross-file references a compiler would resolve.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import json
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from shared.contract import layout
from shared.contract.compute_spec import PROFILE_WORKLOAD_TYPES, PROFILES
from shared.contract.layout import DROP_CONTAINER, DROP_MARKER, minibatch_queue_for, poison_queue
from shared.contract.roles import CONTROL, ROLE_SETTING, SCORING
from shared.control.computes import SCORING_PROFILES_SETTING
from shared.control.datastores import ALIASES_SETTING, DATASTORES_SETTING
from shared.control.event_sinks import EVENTGRID_ENDPOINT_SETTING
from shared.control.planner import (
    DEFAULT_MAX_BATCHES,
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_ROWS,
    MAX_BATCHES_SETTING,
    MAX_FILES_SETTING,
    MAX_ROWS_SETTING,
)
from shared.scoring.scoring_profile import SCORING_PROFILE_SETTING
from shared.scoring.scoring_runtime import WORK_DIR_SETTING
from shared.storage.account import DEFAULT_CONNECTION

ROOT = Path(__file__).resolve().parents[2]
BICEP = ROOT / "infra" / "bicep"
TERRAFORM = ROOT / "infra" / "terraform"
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_CONTAINERS = {layout.REGISTRY_CONTAINER, layout.ASSETS_CONTAINER, layout.DATA_CONTAINER,
                  layout.JOBS_CONTAINER, layout.STATE_CONTAINER, DROP_CONTAINER,
                  layout.ENVIRONMENTS_CONTAINER}
PROFILE_QUEUES = {queue for profile in PROFILES
                  for queue in (minibatch_queue_for(profile),
                                poison_queue(minibatch_queue_for(profile)))}
APP_QUEUES = {layout.MINIBATCH_QUEUE, poison_queue(), *PROFILE_QUEUES}
GPU_PROFILES = {"Consumption-GPU-NC8as-T4", "Consumption-GPU-NC24-A100", "Consumption"}
# Built-in role definition ids (the same in every tenant).
ROLE_IDS = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
}
CONTROL_STORAGE_ROLES = {"Storage Blob Data Owner", "Storage Queue Data Contributor",
                         "Storage Table Data Contributor"}
SCORING_QUEUE_GRANTS = {layout.MINIBATCH_QUEUE: "Storage Queue Data Contributor",
                        poison_queue(): "Storage Queue Data Contributor",
                        **dict.fromkeys(PROFILE_QUEUES, "Storage Queue Data Contributor")}
USER_CONTAINER_GRANTS = {layout.JOBS_CONTAINER: "Storage Blob Data Reader",
                         layout.DATA_CONTAINER: "Storage Blob Data Reader",
                         DROP_CONTAINER: "Storage Blob Data Contributor"}
# Identity-based connection settings each app needs: the scoring app never uses tables.
IDENTITY_SETTINGS = {CONTROL: {"__accountName", "__blobServiceUri", "__queueServiceUri",
                               "__tableServiceUri", "__credential", "__clientId"},
                     SCORING: {"__accountName", "__blobServiceUri", "__queueServiceUri",
                               "__credential", "__clientId"}}
# The app settings the code reads (found in the code by test_every_setting_read_...), and
# which app reads each: a new setting fails that test until it is listed here and set.
SETTINGS_BY_ROLE = {
    ROLE_SETTING: {CONTROL, SCORING},  # function_app.py picks its blueprints
    WORK_DIR_SETTING: {SCORING},  # shared/scoring/scoring_runtime.py: assets, worker folders
    DATASTORES_SETTING: {CONTROL},  # shared/control/datastores.py: checked at invoke
    ALIASES_SETTING: {CONTROL},  # shared/control/datastores.py: input URL aliases
    SCORING_PROFILES_SETTING: {CONTROL},  # shared/control/computes.py: routes computes' jobs
    EVENTGRID_ENDPOINT_SETTING: {CONTROL},  # shared/control/event_sinks.py: lifecycle events
    # shared/control/planner.py: the operator's caps on one job
    MAX_FILES_SETTING: {CONTROL},
    MAX_ROWS_SETTING: {CONTROL},
    MAX_BATCHES_SETTING: {CONTROL},
}
# Set on some apps of a role only: the profile apps (test_each_profile_app_...).
PROFILE_APP_SETTINGS = {SCORING_PROFILE_SETTING}
# Read from the environment but never an app setting, with the reason.
ENVIRONMENT_ONLY = {
    "CUDA_VISIBLE_DEVICES": "the GPU host's own; the runtime narrows it per worker slot",
    "AZUREML_MODEL_DIR": "set by the scoring worker for the scoring script (the built-in "
                         "MLflow scorer reads it)",
    "BATCHFN_OUTPUT_FORMAT": "set by the scoring worker for the built-in MLflow scorer",
    "BATCHFN_PREFETCH": "an optional switch of the scoring host (prefetch is on unless it is "
                        "0); the infra leaves it unset",
    "PATH": "the host's own search path; a worker in a deployment's environment gets the "
            "environment's bin folder first",
    "BATCHFN_FAIL_FAST_BATCHES": "an optional setting of the scoring hosts (default 2 "
                                 "mini-batches that fail to start fail their job; 0: never)",
    "UV_CACHE_DIR": "uv's own setting: where scoring hosts keep downloaded wheels (default: "
                    "beside the built environments under BATCHFN_WORK_DIR)",
    "BATCHFN_SCORING_PYTHON": "the scoring image's Python, which environments resolve for at "
                              "deployment create; the default (the control app's own, 3.11 "
                              "in both apps) fits the infra",
    "BATCHFN_SCORING_PLATFORM": "the scoring image's platform tag for resolution; the default "
                                "(x86_64-manylinux_2_28) fits the image",
    "BATCHFN_ALLOW_ROOT_WORKERS": "development only (1: where a deployment's own user cannot "
                                  "run its workers, they run as root); the scoring image "
                                  "gives every deployment a user of its own, so it is unset",
    "BATCHFN_MANAGED_PYTHONS": "an optional switch (1: scoring hosts install uv-managed "
                               "Pythons for environments that pin another version); unset",
    "BATCHFN_HEARTBEAT_SECONDS": "optional tuning of the scoring host's heartbeats (default "
                                 "3 s); the infra leaves it unset",
    "BATCHFN_STALL_SECONDS": "optional tuning of the job monitor (default 20 s); the infra "
                             "leaves it unset",
    "BATCHFN_BACKUPS": "an optional switch of the job monitor (backups are on unless it is "
                       "off); the infra leaves it unset",
    "BATCHFN_BACKUP_FACTOR": "optional tuning of the job monitor (default 2); the infra "
                             "leaves it unset",
    "BATCHFN_PRICES": "an optional price table of the control app's usage reports (default: "
                      "dated list prices); the infra leaves it unset",
    "BATCHFN_PROGRESS_EVENT_SECONDS": "an optional interval of the control app's progress "
                                      "events (default 30 s); the infra leaves it unset",
}


def read(path: Path) -> str:
    return path.read_text()


def bicep_files() -> list[Path]:
    return sorted(BICEP.rglob("*.bicep"))


def terraform_text() -> str:
    return "\n".join(read(p) for p in sorted(TERRAFORM.glob("*.tf")))


def block(text: str, opening: str) -> str:
    """The text between the bracket that ends `opening` and its matching close."""
    start = text.index(opening) + len(opening) - 1
    pairs = {"{": "}", "[": "]", "(": ")"}
    open_char = text[start]
    depth = 0
    for index in range(start, len(text)):
        if text[index] == open_char:
            depth += 1
        elif text[index] == pairs[open_char]:
            depth -= 1
            if depth == 0:
                return text[start + 1:index]
    raise AssertionError(f"unbalanced block after {opening!r}")


def resource_block(text: str, symbol: str) -> str:
    """The body of Bicep `resource <symbol> '<type>' = {...}` (or a `[for ...]` loop)."""
    start = text.index(f"resource {symbol} ")
    equals = text.index(" = ", start)
    opening = min(i for i in (text.find("{", equals), text.find("[", equals)) if i >= 0)
    return block(text[start:], text[start:opening + 1])


def quoted(text: str) -> set[str]:
    """The quoted strings in `text`, ignoring whole-line comments."""
    code = re.sub(r"^\s*(#|//).*$", "", text, flags=re.M)
    return set(re.findall(r"""['"]([^'"]+)['"]""", code))


def keys(text: str, separator: str) -> set[str]:
    return set(re.findall(rf"^\s*\"?([A-Za-z_][A-Za-z0-9_-]*)\"?\s*{separator}", text, re.M))


def assignments(text: str, separator: str) -> dict[str, str]:
    """`key <separator> value` lines of a block: value as written, quotes removed."""
    found = re.findall(rf"^\s*\"?([A-Za-z_][A-Za-z0-9_-]*)\"?\s*{separator}\s*(.+?)\s*$",
                       text, re.M)
    return {key: value.strip("'\"") for key, value in found}


def condition(text: str) -> str:
    """An ABAC condition without its layout (Bicep ''' and Terraform heredoc indent it)."""
    return " ".join(text.split())


# --- what the app uses ---------------------------------------------------------------------

def test_both_stacks_declare_the_apps_containers():
    storage_bicep = read(BICEP / "app" / "storage.bicep")
    storage_tf = read(TERRAFORM / "storage.tf")
    assert quoted(block(storage_bicep, "var appContainers = [")) == APP_CONTAINERS
    assert quoted(block(storage_tf, "app_containers = [")) == APP_CONTAINERS
    dead_letter = re.search(r"var deadLetterContainerName = '([\w-]+)'", storage_bicep)[1]
    assert f'dead_letter_container = "{dead_letter}"' in storage_tf
    assert dead_letter not in APP_CONTAINERS


def test_both_stacks_declare_the_apps_queues():
    assert quoted(block(read(BICEP / "app" / "storage.bicep"), "var appQueues = [")) == APP_QUEUES
    assert quoted(block(read(TERRAFORM / "storage.tf"), "app_queues = [")) == APP_QUEUES


def test_both_stacks_send_only_drop_markers_to_the_blob_drop_function():
    function_names = set(re.findall(r"^(?:async )?def (\w+)\(",
                                    read(ROOT / "functions" / "blob_drop.py"), re.M))
    event_grid_bicep = read(BICEP / "app" / "event-grid.bicep")
    event_grid_tf = read(TERRAFORM / "event_grid.tf")
    bicep_function = re.search(r"param functionName string = '(\w+)'", event_grid_bicep)[1]
    tf_function = re.search(r'blob_drop_function = "(\w+)"', event_grid_tf)[1]
    assert bicep_function == tf_function
    assert bicep_function in function_names
    assert f"output dropContainerName string = '{DROP_CONTAINER}'" in read(
        BICEP / "app" / "storage.bicep")
    assert f'drop_container = "{DROP_CONTAINER}"' in read(TERRAFORM / "storage.tf")
    # Data files beside a marker fire nothing: the subscription filters on the marker name.
    assert f"var markerSuffix = '/{DROP_MARKER}'" in event_grid_bicep
    assert "subjectEndsWith: markerSuffix" in event_grid_bicep
    assert f'marker_suffix = "/{DROP_MARKER}"' in event_grid_tf
    assert "subject_ends_with   = local.marker_suffix" in event_grid_tf
    for text in (event_grid_bicep, event_grid_tf):
        assert "Microsoft.Storage.BlobCreated" in text
        assert "/runtime/webhooks/blobs?functionName=Host.Functions." in text


def test_the_webhook_key_comes_from_the_apps_host_keys_and_misses_dead_letter():
    event_grid_bicep = read(BICEP / "app" / "event-grid.bicep")
    event_grid_tf = read(TERRAFORM / "event_grid.tf")
    assert "listKeys('${functionApp.id}/host/default', '2024-04-01').systemKeys.blobs_extension" \
        in event_grid_bicep
    assert "data.azurerm_function_app_host_keys.control[0].blobs_extension_key" in event_grid_tf
    everything = "\n".join(read(p) for p in bicep_files()) + terraform_text()
    assert "blobsExtensionKey" not in everything and "blobs_extension_key\"" not in everything
    assert "param subscribeBlobDrop bool = false" in read(BICEP / "main.bicep")
    assert re.search(r'variable "subscribe_blob_drop"[^}]*default\s+= false',
                     read(TERRAFORM / "variables.tf"), re.S)
    # Undeliverable drop events land in the dead-letter container, written by the topic's
    # own identity with a role on that container alone.
    assert "deadLetterWithResourceIdentity" in event_grid_bicep
    assert "identity: { type: 'SystemAssigned' }" in event_grid_bicep
    assert "scope: deadLetterContainer" in event_grid_bicep
    assert "dead_letter_identity {" in event_grid_tf
    assert "storage_blob_dead_letter_destination {" in event_grid_tf
    assert "azurerm_storage_container.dead_letter.resource_manager_id" in event_grid_tf


def role_modules() -> dict[str, set[str]]:
    """The functions/ modules each role registers, read from function_app.py."""
    tree = ast.parse(read(ROOT / "function_app.py"))
    shared_modules = {node.module for node in tree.body
                      if isinstance(node, ast.ImportFrom) and node.module
                      and node.module.startswith("functions.")}
    modules = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.endswith("_blueprints"):
            imported = {inner.module for inner in ast.walk(node)
                        if isinstance(inner, ast.ImportFrom) and inner.module}
            modules[node.name.removesuffix("_blueprints")] = imported | shared_modules
    assert set(modules) == {CONTROL, SCORING}
    return modules


def trigger_connections(modules: set[str]) -> set[str]:
    connections = set()
    for module in modules:
        connections |= set(re.findall(r'connection="(\w+)"',
                                      read(ROOT / (module.replace(".", "/") + ".py"))))
    return connections


def test_every_trigger_connection_of_a_role_is_configured_by_identity_in_its_app():
    modules = role_modules()
    for role, settings in ((CONTROL, control_settings_bicep()),
                           (CONTROL, control_settings_terraform()),
                           (SCORING, scoring_settings_bicep()),
                           (SCORING, scoring_settings_terraform())):
        connections = trigger_connections(modules[role])
        assert connections, f"no trigger connections found for {role}"
        for connection in connections | {DEFAULT_CONNECTION}:
            expected = {connection + suffix for suffix in IDENTITY_SETTINGS[role]}
            assert expected <= set(settings), (role, expected - set(settings))
            assert settings[f"{connection}__credential"] == "managedidentity"
            assert connection not in settings, "a connection string setting beside identity"


# --- the app settings ------------------------------------------------------------------------

def control_settings_bicep() -> dict[str, str]:
    text = read(BICEP / "app" / "function-app.bicep")
    settings = {}
    for name in ("roleSettings", "storageSettings", "monitoringSettings"):
        settings |= assignments(block(text, f"var {name} = {{"), ":")
    assert f"union({', '.join(('roleSettings', 'storageSettings', 'monitoringSettings'))})" in (
        text)
    return settings


def control_settings_terraform() -> dict[str, str]:
    return assignments(block(read(TERRAFORM / "function_app.tf"), "control_app_settings = {"),
                       "=")


def scoring_settings_bicep() -> dict[str, str]:
    settings = block(read(BICEP / "app" / "scoring-app.bicep"), "var appSettings = [")
    return dict(re.findall(r"^\s*\{ name: '(\w+)', value: '?(.+?)'? \}$", settings, re.M))


def scoring_settings_terraform() -> dict[str, str]:
    return assignments(block(read(TERRAFORM / "scoring_app.tf"), "scoring_app_settings = {"),
                       "=")


def dockerfile_env() -> dict[str, str]:
    text = read(DOCKERFILE).replace("\\\n", " ")
    env = {}
    for line in re.findall(r"^ENV (.+)$", text, re.M):
        env |= dict(re.findall(r"(\S+?)=(\S+)", line))
    return env


def test_both_stacks_set_the_same_app_settings_for_each_app():
    assert set(control_settings_bicep()) == set(control_settings_terraform())
    assert set(scoring_settings_bicep()) == set(scoring_settings_terraform())
    # ... and hand them to the apps.
    assert "env: concat(appSettings, app.settings)" in read(BICEP / "app" / "scoring-app.bicep")
    assert ("env = [for name, value in merge(local.scoring_app_settings, "
            "{ BATCHFN_SCORING_PROFILE = each.value.profile }) :") in read(
        TERRAFORM / "scoring_app.tf")
    assert "properties = local.control_app_settings" in read(TERRAFORM / "function_app.tf")
    for settings in (control_settings_bicep(), scoring_settings_bicep()):
        assert {"APPLICATIONINSIGHTS_CONNECTION_STRING",
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"} <= set(settings)


def test_each_app_runs_its_role():
    assert control_settings_bicep()[ROLE_SETTING] == CONTROL
    assert control_settings_terraform()[ROLE_SETTING] == CONTROL
    assert scoring_settings_bicep()[ROLE_SETTING] == SCORING
    assert scoring_settings_terraform()[ROLE_SETTING] == SCORING
    assert dockerfile_env()[ROLE_SETTING] == SCORING


def test_a_scoring_replica_takes_no_more_mini_batches_than_it_has_worker_slots():
    prefix = "AzureFunctionsJobHost__extensions__queues__"
    bicep, tf, image = scoring_settings_bicep(), scoring_settings_terraform(), dockerfile_env()
    for settings in (bicep, tf, image):
        assert settings[prefix + "batchSize"] == "1"
    assert bicep[prefix + "newBatchThreshold"] == "string(workerSlots - 1)"
    assert tf[prefix + "newBatchThreshold"] == "tostring(var.scoring_worker_slots - 1)"
    assert image[prefix + "newBatchThreshold"] == "0"  # one slot unless the app says more
    # The control app keeps host.json's settings: no override in its settings.
    assert not any(key.startswith("AzureFunctionsJobHost__") for key in control_settings_bicep())
    # Host keys never go to the storage account the scoring identity can read.
    assert bicep["AzureWebJobsSecretStorageType"] == tf["AzureWebJobsSecretStorageType"] == (
        "containerapp")


def settings_read_by_code() -> set[str]:
    """App settings read through os.environ / os.getenv / an `env` mapping in the app's code,
    with names given as literals or module constants (connection names with their `__`
    suffixes are dynamic: the connection tests cover them)."""
    found = set()
    paths = [ROOT / "function_app.py", *(ROOT / "functions").rglob("*.py"),
             *(ROOT / "shared").rglob("*.py")]
    for path in paths:
        tree = ast.parse(read(path))
        constants = {target.id: node.value.value for node in tree.body
                     if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                     and isinstance(node.value.value, str)
                     for target in node.targets if isinstance(target, ast.Name)}
        imported = {alias.asname or alias.name: (node.module, alias.name)
                    for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and node.module for alias in node.names}
        for node in ast.walk(tree):
            argument = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    node.func.attr in ("get", "getenv") and node.args
                    and _is_environment(node.func.value)):
                argument = node.args[0]
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and (
                    _is_environment(node.value)):
                argument = node.slice
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                found.add(argument.value)
            elif isinstance(argument, ast.Name) and argument.id in constants:
                found.add(constants[argument.id])
            elif isinstance(argument, ast.Name) and argument.id in imported:
                module, name = imported[argument.id]
                value = getattr(importlib.import_module(module), name)
                assert isinstance(value, str), f"{path.name}: {argument.id} is not a name"
                found.add(value)
    return found


def _is_environment(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("env", "os")
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def test_every_setting_read_by_the_code_is_set_for_the_app_whose_role_reads_it():
    read_by_code = settings_read_by_code()
    unknown = (read_by_code - set(SETTINGS_BY_ROLE) - set(ENVIRONMENT_ONLY)
               - PROFILE_APP_SETTINGS)
    assert not unknown, f"say which app reads {sorted(unknown)} in SETTINGS_BY_ROLE, and set it"
    assert set(SETTINGS_BY_ROLE) <= read_by_code, "SETTINGS_BY_ROLE lists a setting no one reads"
    apps = {CONTROL: [control_settings_bicep(), control_settings_terraform()],
            SCORING: [{**dockerfile_env(), **scoring_settings_bicep()},
                      {**dockerfile_env(), **scoring_settings_terraform()}]}
    for setting, roles in SETTINGS_BY_ROLE.items():
        for role in roles:
            for settings in apps[role]:
                assert setting in settings, f"{setting} is not set for the {role} app"


# --- identities and roles --------------------------------------------------------------------

def bicep_roles() -> dict[str, str]:
    rbac = read(BICEP / "rbac.bicep")
    return {name: ROLE_IDS[role_id] for name, role_id in
            re.findall(r"(\w+): '([0-9a-f-]{36})'", block(rbac, "var roles = {"))}


def grants(bicep_var: str, field: str, tf_local: str) -> tuple[dict[str, str], dict[str, str]]:
    """A grant list of rbac.bicep (`{ <field>: '<name>', role: roles.<x> }`) and the map of
    rbac.tf with the same grants, both as name -> role name."""
    roles = bicep_roles()
    bicep = {name: roles[role] for name, role in re.findall(
        rf"\{{ {field}: '([\w-]+)', role: roles\.(\w+) \}}",
        block(read(BICEP / "rbac.bicep"), f"var {bicep_var} = ["))}
    terraform = dict(re.findall(r'"([\w-]+)"\s+=\s+"([^"]+)"',
                                block(read(TERRAFORM / "rbac.tf"), f"{tf_local} = {{")))
    return bicep, terraform


def test_one_identity_per_app():
    main_bicep = read(BICEP / "main.bicep")
    assert main_bicep.count("'app/identity.bicep'") == 2
    assert "identityId: controlIdentity.outputs.id" in block(main_bicep,
                                                              "'app/function-app.bicep' = {")
    assert "identityId: scoringIdentity.outputs.id" in block(main_bicep,
                                                              "'app/scoring-app.bicep' = {")
    tf = terraform_text()
    assert set(re.findall(r'^resource "azurerm_user_assigned_identity" "(\w+)"', tf, re.M)) == {
        CONTROL, SCORING}
    function_app_tf = read(TERRAFORM / "function_app.tf")
    scoring_app_tf = read(TERRAFORM / "scoring_app.tf")
    assert "azurerm_user_assigned_identity.scoring" not in function_app_tf
    assert "azurerm_user_assigned_identity.control" not in scoring_app_tf


def test_both_stacks_grant_the_control_app_the_same_roles():
    rbac_bicep, rbac_tf = read(BICEP / "rbac.bicep"), read(TERRAFORM / "rbac.tf")
    roles = bicep_roles()
    bicep_storage = {roles[name] for name in
                     re.findall(r"roles\.(\w+)", block(rbac_bicep, "var controlStorageRoles = ["))}
    tf_storage = quoted(block(rbac_tf, "control_storage_roles = toset(["))
    assert bicep_storage == tf_storage == CONTROL_STORAGE_ROLES
    assert "principalId: controlPrincipalId" in resource_block(rbac_bicep,
                                                                "controlMetricsPublisher")
    assert "azurerm_user_assigned_identity.control.principal_id" in block(
        rbac_tf, 'resource "azurerm_role_assignment" "control_metrics_publisher" {')


def test_the_scoring_identity_gets_least_privilege_in_both_stacks():
    rbac_bicep, rbac_tf = read(BICEP / "rbac.bicep"), read(TERRAFORM / "rbac.tf")
    roles = bicep_roles()
    bicep_queues, tf_queues = grants("scoringQueueGrants", "queue", "scoring_queue_grants")
    assert bicep_queues == tf_queues == SCORING_QUEUE_GRANTS
    # Every scoring grant, by role: blobs (a custom role, conditioned), queues, AcrPull,
    # telemetry.
    bicep_scoring = {roles[name] for name in re.findall(
        r"roles\.(\w+)", "\n".join(resource_block(rbac_bicep, r) for r in (
            "scoringAcrPull", "scoringMetricsPublisher")))}
    assert bicep_scoring == {"AcrPull", "Monitoring Metrics Publisher"}
    assert "roleDefinitionId: scoringBlobRole.id" in resource_block(rbac_bicep, "scoringBlobs")
    tf_scoring = set(re.findall(
        r'resource "azurerm_role_assignment" "scoring_\w+" \{[^}]*?role_definition_name = '
        r'"([^"]+)"', rbac_tf, re.S))
    assert tf_scoring == {"AcrPull", "Monitoring Metrics Publisher"}
    assert ("role_definition_id = azurerm_role_definition.scoring_blobs."
            "role_definition_resource_id") in block(
        rbac_tf, 'resource "azurerm_role_assignment" "scoring_blobs" {')
    # No table role (the Durable task hub's tables) but the control app's.
    assert rbac_bicep.count("roles.storageTableDataContributor") == 1
    assert "roles.storageTableDataContributor" in block(rbac_bicep, "var controlStorageRoles = [")
    assert rbac_tf.count('"Storage Table Data Contributor"') == 1
    bicep_condition = condition(re.search(r"var scoringBlobCondition = '''(.*?)'''",
                                          rbac_bicep, re.S)[1])
    tf_condition = condition(re.search(r"scoring_blob_condition = <<-EOT(.*?)EOT",
                                       rbac_tf, re.S)[1])
    assert bicep_condition == tf_condition
    assert "condition: scoringBlobCondition" in rbac_bicep and "conditionVersion: '2.0'" in (
        rbac_bicep)
    assert "condition          = local.scoring_blob_condition" in rbac_tf
    assert 'condition_version  = "2.0"' in rbac_tf


# Storage Blob Data Contributor's permissions (the built-in role's definition).
BLOB_DATA_CONTRIBUTOR_ACTIONS = {
    "Microsoft.Storage/storageAccounts/blobServices/containers/delete",
    "Microsoft.Storage/storageAccounts/blobServices/containers/read",
    "Microsoft.Storage/storageAccounts/blobServices/containers/write",
    "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"}
BLOB_DATA_CONTRIBUTOR_DATA_ACTIONS = {
    f"Microsoft.Storage/storageAccounts/blobServices/containers/blobs/{action}"
    for action in ("delete", "read", "write", "move/action", "add/action")}


def test_the_scoring_blob_role_cannot_delete_or_lease_containers():
    rbac_bicep, rbac_tf = read(BICEP / "rbac.bicep"), read(TERRAFORM / "rbac.tf")
    bicep = {name: quoted(block(rbac_bicep, f"var {name} = ["))
             for name in ("scoringBlobActions", "scoringBlobDataActions")}
    terraform = {name: quoted(block(rbac_tf, f"{name} = ["))
                 for name in ("scoring_blob_actions", "scoring_blob_data_actions")}
    assert bicep["scoringBlobActions"] == terraform["scoring_blob_actions"]
    assert bicep["scoringBlobDataActions"] == terraform["scoring_blob_data_actions"]
    actions, data_actions = bicep["scoringBlobActions"], bicep["scoringBlobDataActions"]
    # Within Storage Blob Data Contributor, less deleting containers (and no lease at all).
    assert actions < BLOB_DATA_CONTRIBUTOR_ACTIONS and data_actions <= (
        BLOB_DATA_CONTRIBUTOR_DATA_ACTIONS)
    for action in actions | data_actions:
        assert "*" not in action and "lease" not in action
    assert not any(a.endswith("containers/delete") for a in actions)
    role = resource_block(rbac_bicep, "scoringBlobRole")
    assert "assignableScopes: [resourceGroup().id]" in role and "type: 'CustomRole'" in role
    role_tf = block(rbac_tf, 'resource "azurerm_role_definition" "scoring_blobs" {')
    assert "assignable_scopes = [azurerm_resource_group.main.id]" in role_tf


def _allowed(container: str, action: str, text: str) -> bool:
    """Evaluate the scoring condition for one container and data action (its two clauses)."""
    actions = ("delete", "read", "write", "add/action")
    assert action in actions
    clauses = text.split(") AND (")
    assert len(clauses) == 2
    for clause in clauses:
        guarded = set(re.findall(r"containers/blobs/([\w/]+)'", clause))
        if action not in guarded:
            continue
        for operator, value in re.findall(r"containers:name\] (StringNot\w+) '([^']+)'", clause):
            matches = fnmatch.fnmatchcase(container, value) if operator == "StringNotLike" \
                else container == value
            if matches:
                return False
    return True


def test_the_scoring_condition_keeps_out_of_secrets_registry_package_and_task_hub():
    text = condition(re.search(r"var scoringBlobCondition = '''(.*?)'''",
                               read(BICEP / "rbac.bicep"), re.S)[1])
    hub = json.loads(read(ROOT / "host.json"))["extensions"]["durableTask"]["hubName"]
    package = re.search(r"var deploymentContainerName = '([\w-]+)\$",
                        read(BICEP / "main.bicep"))[1] + "0123456789ab"
    forbidden = ["azure-webjobs-secrets", layout.REGISTRY_CONTAINER, package,
                 f"{hub}-leases", f"{hub}-applease", f"{hub}-largemessages"]
    for container in forbidden:
        for action in ("read", "write", "delete", "add/action"):
            assert not _allowed(container, action, text), (container, action)
    for action in ("write", "delete", "add/action"):
        assert not _allowed(layout.ASSETS_CONTAINER, action, text)
    assert _allowed(layout.ASSETS_CONTAINER, "read", text)
    # What a mini-batch reads and writes: inputs anywhere a job may name, state, outputs,
    # the host's locks.
    for container in (layout.STATE_CONTAINER, layout.JOBS_CONTAINER, layout.DATA_CONTAINER,
                      DROP_CONTAINER, "azure-webjobs-hosts", "customer-inputs"):
        for action in ("read", "write", "add/action"):
            assert _allowed(container, action, text), (container, action)


def test_the_optional_user_gets_what_the_cli_needs_and_no_more():
    rbac_bicep, rbac_tf = read(BICEP / "rbac.bicep"), read(TERRAFORM / "rbac.tf")
    bicep_user, tf_user = grants("userContainerGrants", "container", "user_container_grants")
    assert bicep_user == tf_user == USER_CONTAINER_GRANTS
    assert rbac_bicep.count("userPrincipalId") == 4  # the parameter, its condition and use
    assert rbac_tf.count("var.principal_id") == 2


def test_both_stacks_use_only_known_built_in_roles():
    tf_roles = set(re.findall(r'role_definition_name = "([^"]+)"', terraform_text()))
    tf_roles |= set(re.findall(r'= "(Storage [^"]+|AcrPull|EventGrid [^"]+)"',
                               terraform_text()))
    event_grid_bicep = read(BICEP / "app" / "event-grid.bicep")
    bicep_ids = set(re.findall(r"'([0-9a-f-]{36})'", read(BICEP / "rbac.bicep")
                               + event_grid_bicep))
    assert bicep_ids <= set(ROLE_IDS)
    assert tf_roles <= set(ROLE_IDS.values())


# --- the two apps --------------------------------------------------------------------------

def test_the_control_app_runs_python_311_on_flex_consumption_with_the_same_defaults():
    app_bicep = read(BICEP / "app" / "function-app.bicep")
    main_bicep = read(BICEP / "main.bicep")
    app_tf = read(TERRAFORM / "function_app.tf")
    variables_tf = read(TERRAFORM / "variables.tf")
    assert "name: 'FC1'" in app_bicep and 'sku_name            = "FC1"' in app_tf
    assert re.search(r"name: 'python'\s+version: '3.11'", app_bicep)
    assert re.search(r'name\s+= "python"\s+version = "3.11"', app_tf)
    for text in (app_bicep, app_tf):
        assert "Microsoft.Web/sites@2024-04-01" in text and "functionapp,linux" in text
        assert "UserAssignedIdentity" in text
    assert "@allowed([2048, 4096])\n" in main_bicep and "[2048, 4096]" in variables_tf
    assert "param instanceMemoryMB int = 2048" in main_bicep
    assert "param maximumInstanceCount int = 100" in main_bicep
    assert re.search(r'"instance_memory_mb"[^}]*default\s+= 2048', variables_tf, re.S)
    assert re.search(r'"maximum_instance_count"[^}]*default\s+= 100', variables_tf, re.S)
    # No AzureWebJobsStorage setting beside the identity-based ones (azurerm's resource
    # would add one, so Terraform declares the site through azapi as Bicep does).
    assert 'resource "azurerm_function_app_flex_consumption"' not in terraform_text()
    assert not re.search(r"^\s*AzureWebJobsStorage\s*[:=]", app_bicep + app_tf, re.M)


def test_basic_publishing_is_off_in_both():
    app_bicep = read(BICEP / "app" / "function-app.bicep")
    app_tf = read(TERRAFORM / "function_app.tf")
    for policy in ("ftp", "scm"):
        assert re.search(rf"name: '{policy}'\s+properties: {{ allow: false }}", app_bicep)
    assert 'for_each  = toset(["ftp", "scm"])' in app_tf
    assert "Microsoft.Web/sites/basicPublishingCredentialsPolicies@" in app_tf
    assert "properties = { allow = false }" in app_tf
    assert "ftpsState: 'Disabled'" in app_bicep and 'ftpsState     = "Disabled"' in app_tf


def bicep_profiles(text: str) -> dict[str, tuple[str, str, str]]:
    return {key.strip("'"): (name, cpu, memory) for key, name, cpu, memory in re.findall(
        r"('?[\w-]+'?): \{ name: '([\w-]+)', cpu: '(\d+)', memory: '(\w+)' \}", text)}


def terraform_profiles(text: str) -> dict[str, tuple[str, str, str]]:
    return {key: (name, cpu, memory) for key, name, cpu, memory in re.findall(
        r'"([\w-]+)"\s+= \{ name = "([\w-]+)", cpu = (\d+), memory = "(\w+)" \}', text)}


def test_both_stacks_run_the_scoring_app_on_the_chosen_gpu_profile():
    main_bicep = read(BICEP / "main.bicep")
    app_bicep = read(BICEP / "app" / "scoring-app.bicep")
    app_tf = read(TERRAFORM / "scoring_app.tf")
    variables_tf = read(TERRAFORM / "variables.tf")
    allowed = set(re.findall(r"'([\w-]+)'", re.search(
        r"@allowed\((\[[^\]]*\])\)\s*(?:@description\([^\n]*\)\s*)?param scoringWorkloadProfile",
        main_bicep)[1]))
    assert allowed == GPU_PROFILES
    assert "param scoringWorkloadProfile string = 'Consumption-GPU-NC8as-T4'" in main_bicep
    tf_variable = block(variables_tf, 'variable "scoring_workload_profile" {')
    assert 'default     = "Consumption-GPU-NC8as-T4"' in tf_variable
    assert quoted(block(tf_variable, "contains(")) - {"var.scoring_workload_profile"} >= (
        GPU_PROFILES)
    # Per-replica CPU and memory fit the profile, the same in both.
    assert bicep_profiles(app_bicep) == terraform_profiles(app_tf)
    assert set(bicep_profiles(app_bicep)) == GPU_PROFILES
    for text in (app_bicep, app_tf):
        assert "Microsoft.App/managedEnvironments@" in text
        assert "Microsoft.App/containerApps@" in text
    assert "kind: 'functionapp'" in app_bicep and 'kind = "functionapp"' in app_tf
    # Scale to the warm replicas asked for (zero by default), out to the max replicas;
    # workload profiles and Log Analytics.
    assert "minReplicas: app.minReplicas" in app_bicep
    assert "minReplicas = each.value.minReplicas" in app_tf
    assert "param scoringMinReplicas int = 0" in main_bicep
    assert re.search(r'variable "scoring_min_replicas"[^}]*default\s+= 0', variables_tf, re.S)
    assert "maxReplicas: maxReplicas" in app_bicep
    assert "maxReplicas = var.scoring_max_replicas" in app_tf
    assert "workloadProfiles: concat([consumptionProfile], gpuProfiles)" in app_bicep
    assert "workloadProfiles = concat(" in app_tf
    assert "workspaceId: logAnalytics.id" in app_bicep
    assert "log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id" in app_tf
    # The image is pulled with the scoring identity, never with registry credentials.
    assert "identity: identityId" in block(app_bicep, "registries: [")
    assert "identity = azurerm_user_assigned_identity.scoring.id" in block(app_tf,
                                                                           "registries = [")
    assert "adminUserEnabled: false" in read(BICEP / "app" / "registry.bicep")
    assert re.search(r"admin_enabled\s+= false", read(TERRAFORM / "registry.tf"))
    # Container Apps scales Functions from their triggers only with ingress on.
    assert "external: false" in app_bicep and "external      = false" in app_tf


def test_both_stacks_refuse_keys():
    storage_bicep = read(BICEP / "app" / "storage.bicep")
    storage_tf = read(TERRAFORM / "storage.tf")
    assert "allowSharedKeyAccess: false" in storage_bicep
    assert "allowBlobPublicAccess: false" in storage_bicep
    assert "minimumTlsVersion: 'TLS1_2'" in storage_bicep
    assert re.search(r"shared_access_key_enabled\s+= false", storage_tf)
    assert re.search(r"allow_nested_items_to_be_public\s+= false", storage_tf)
    assert re.search(r'min_tls_version\s+= "TLS1_2"', storage_tf)
    assert "DisableLocalAuth: true" in read(BICEP / "app" / "monitoring.bicep")
    assert re.search(r"local_authentication_disabled\s+= true",
                     read(TERRAFORM / "monitoring.tf"))
    everything = "\n".join(read(p) for p in bicep_files()) + terraform_text()
    for secret in ("AccountKey=", "primary_access_key", "primary_connection_string",
                   "instrumentation_key", "InstrumentationKey", "sharedKey",
                   "primary_shared_key", "adminUserEnabled: true"):
        assert secret not in everything
    # The one key the templates read is the blobs extension's, for Event Grid's webhook.
    assert re.findall(r"listKeys\('([^']+)'", everything) == ["${functionApp.id}/host/default"]


def test_both_stacks_output_what_the_docs_use():
    main_bicep = read(BICEP / "main.bicep")
    outputs_tf = read(TERRAFORM / "outputs.tf")
    pairs = [("FUNCTION_APP_NAME", "function_app_name"),
             ("FUNCTION_APP_HOSTNAME", "function_app_hostname"),
             ("STORAGE_ACCOUNT_NAME", "storage_account_name"),
             ("IDENTITY_CLIENT_ID", "identity_client_id"),
             ("SCORING_IDENTITY_CLIENT_ID", "scoring_identity_client_id"),
             ("BATCHFN_URL", "batchfn_url"),
             ("RESOURCE_GROUP", "resource_group"),
             ("REGISTRY_NAME", "registry_name"),
             ("REGISTRY_LOGIN_SERVER", "registry_login_server"),
             ("CONTAINER_APPS_ENVIRONMENT", "container_apps_environment"),
             ("SCORING_APP_NAME", "scoring_app_name"),
             ("SCORING_PROFILE_APP_NAMES", "scoring_profile_app_names"),
             ("EVENT_GRID_SYSTEM_TOPIC", "event_grid_system_topic"),
             ("EVENTS_TOPIC_NAME", "events_topic_name"),
             ("EVENTS_TOPIC_ENDPOINT", "events_topic_endpoint")]
    for bicep_output, tf_output in pairs:
        assert re.search(rf"^output {bicep_output} (string|array)", main_bicep, re.M)
        assert f'output "{tf_output}"' in outputs_tf
    docs = read(ROOT / "docs" / "deploy-azure.md")
    for bicep_output, tf_output in pairs:
        assert bicep_output in docs and tf_output in docs, (bicep_output, tf_output)


def test_both_stacks_take_the_same_scoring_parameters():
    main_bicep = read(BICEP / "main.bicep")
    variables_tf = read(TERRAFORM / "variables.tf")
    for bicep_name, tf_name, default in [("scoringImage", "scoring_image", "''"),
                                         ("scoringMaxReplicas", "scoring_max_replicas", "4"),
                                         ("scoringWorkerSlots", "scoring_worker_slots", "1"),
                                         ("registrySku", "registry_sku", "'Basic'")]:
        assert re.search(rf"^param {bicep_name} \w+ = {re.escape(default)}$", main_bicep, re.M)
        tf_default = default.replace("'", '"')
        assert re.search(rf'variable "{tf_name}"[^}}]*default\s+= {re.escape(tf_default)}',
                         variables_tf, re.S), tf_name


def test_both_stacks_give_each_scoring_profile_an_app_of_its_own_when_asked():
    main_bicep = read(BICEP / "main.bicep")
    app_bicep = read(BICEP / "app" / "scoring-app.bicep")
    app_tf = read(TERRAFORM / "scoring_app.tf")
    variables_tf = read(TERRAFORM / "variables.tf")
    # The same profiles, workload profile types and app name suffixes as the code's.
    bicep_map = {profile: (kind, suffix) for profile, kind, suffix in re.findall(
        r"'?([\w-]+)'?: \{ type: '([\w-]+)', suffix: '(\w+)' \}", app_bicep)}
    tf_map = {profile: (kind, suffix) for profile, kind, suffix in re.findall(
        r'"([\w-]+)"\s+= \{ type = "([\w-]+)", suffix = "(\w+)" \}', app_tf)}
    assert bicep_map == tf_map
    assert {profile: kind for profile, (kind, _) in bicep_map.items()} == PROFILE_WORKLOAD_TYPES
    # Parameters: the profiles (none by default), their warm replicas; allowed values.
    assert "param scoringProfiles array = []" in main_bicep
    assert "param scoringProfileMinReplicas object = {}" in main_bicep
    assert set(re.findall(r"'([\w-]+)'", re.search(
        r"@allowed\((\[[^\]]*\])\)\s*(?:@description\([^\n]*\)\s*)?param scoringProfiles",
        main_bicep)[1])) == set(PROFILES)
    tf_profiles = block(variables_tf, 'variable "scoring_profiles" {')
    assert "default     = []" in tf_profiles
    assert quoted(block(tf_profiles, "contains(")) == set(PROFILES)
    assert 'variable "scoring_profile_min_replicas"' in variables_tf
    # A profile app reads its profile's queue: the setting the scoring code reads.
    assert f"settings: [{{ name: '{SCORING_PROFILE_SETTING}', value: p }}]" in app_bicep
    assert f"{{ {SCORING_PROFILE_SETTING} = each.value.profile }}" in app_tf
    assert "for_each  = var.scoring_image == \"\" ? {} : local.scoring_apps" in app_tf
    assert "[for app in apps: if (!empty(image))" in app_bicep
    # The control app learns the main app's profile first, then the profile apps'.
    assert f"{SCORING_PROFILES_SETTING}: scoringProfiles" in read(
        BICEP / "app" / "function-app.bicep")
    assert "scoringProfiles: join(concat([mainScoringProfile], profileApps), ',')" in main_bicep
    assert 'join(",", concat([local.main_scoring_profile], local.profile_apps))' in read(
        TERRAFORM / "function_app.tf")


# --- the scoring image ---------------------------------------------------------------------

def dockerignore_allows(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative, posix) in the build context."""
    allowed = True
    for line in read(DOCKERIGNORE).splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        if hit:
            allowed = negate
    return allowed


def test_every_copy_source_of_the_scoring_image_exists_in_the_build_context():
    text = read(DOCKERFILE).replace("\\\n", " ")
    copies = re.findall(r"^COPY (.+)$", text, re.M)
    assert copies
    sources = []
    for line in copies:
        words = [word for word in line.split() if not word.startswith("--")]
        sources += words[:-1]
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert dockerignore_allows(relative), f".dockerignore drops {relative}"
    # What the Functions host loads is all there: the app, the image's host.json, its
    # packages (from the lock).
    assert {"function_app.py", "infra/docker/host.json", "functions", "shared",
            "requirements-scoring.lock"} <= {Path(source).as_posix() for source in sources}
    assert "COPY infra/docker/host.json /home/site/wwwroot/host.json" in text
    for private in (".venv/bin/python", "tests/conftest.py", "local.settings.json",
                    "samples/mnist/demo.py", "node_modules/.bin/azurite",
                    "infra/bicep/main.bicep", "functions/__pycache__/health.cpython-311.pyc"):
        assert not dockerignore_allows(private), private
    # az acr build uploads the context and then looks for the Dockerfile inside it.
    assert dockerignore_allows(DOCKERFILE.relative_to(ROOT).as_posix())


def test_the_scoring_image_sets_the_scoring_role_and_a_pinned_base():
    text = read(DOCKERFILE)
    base = re.search(r"^FROM (\S+)$", text, re.M)[1]
    reference, _, digest = base.partition("@")
    image, _, tag = reference.rpartition(":")
    assert image == "mcr.microsoft.com/azure-functions/python"
    assert tag.startswith("4-python3.11") and tag != "latest"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), "the base image is pinned by digest"
    env = dockerfile_env()
    assert env[ROLE_SETTING] == SCORING
    assert env["AzureWebJobsScriptRoot"] == "/home/site/wwwroot"
    # torch: the CUDA build for the GPU profiles unless the build argument asks for cpu.
    assert re.search(r"^ARG TORCH_VARIANT=cu\d+$", text, re.M)
    assert "download.pytorch.org/whl/${TORCH_VARIANT}" in text
    assert re.search(r"^ARG TORCH_VERSION=([\d.]+)$", text, re.M)[1] in read(
        ROOT / "pyproject.toml")


def test_the_image_installs_the_locked_requirements_with_their_hashes():
    text = read(DOCKERFILE).replace("\\\n", " ")
    assert re.search(r"pip install --require-hashes --no-deps -r "
                     r"/home/site/wwwroot/requirements-scoring\.lock", text)
    assert not re.search(r"^COPY .*requirements(-scoring)?\.txt", text, re.M)  # only the lock
    lock = read(ROOT / "requirements-scoring.lock")
    assert "make requirements-scoring.lock" in lock.splitlines()[1]  # uv's header
    pinned = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 2)[2]):
        head = entry.split(" ", 1)[0]
        name, _, version = head.partition("==")
        assert version, f"{head} is not pinned"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"{name} has no hash"
        pinned[canonicalize_name(name)] = Version(version)
    # Every requirement of the app and the scorer is locked, at a version it allows.
    for path in (ROOT / "requirements.txt", ROOT / "requirements-scoring.txt"):
        for line in read(path).splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-r"):
                continue
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            assert name in pinned, f"{requirement.name} is not in requirements-scoring.lock"
            assert requirement.specifier.contains(pinned[name], prereleases=True), (
                f"{requirement} but the lock pins {pinned[name]}: make lock")


def test_the_images_host_json_takes_one_message_at_a_time():
    image = json.loads(read(ROOT / "infra" / "docker" / "host.json"))
    app = json.loads(read(ROOT / "host.json"))
    # Container Apps reads a Functions app's scaling from the host.json in its image.
    assert image["extensions"]["queues"]["batchSize"] == 1
    assert image["extensions"]["queues"]["newBatchThreshold"] == 0
    for queues in (image["extensions"]["queues"], app["extensions"]["queues"]):
        del queues["batchSize"], queues["newBatchThreshold"]
    assert image == app, "infra/docker/host.json is host.json with one message at a time"


def scale_rules_bicep() -> str:
    return block(read(BICEP / "app" / "scoring-app.bicep"), "rules: [")


def scale_rules_terraform() -> str:
    return block(read(TERRAFORM / "scoring_app.tf"), "rules = [")


def test_both_stacks_scale_the_gpu_app_on_the_minibatch_queue_by_identity():
    app_bicep = read(BICEP / "app" / "scoring-app.bicep")
    app_tf = read(TERRAFORM / "scoring_app.tf")
    bicep, terraform = scale_rules_bicep(), scale_rules_terraform()
    # One rule per app, its own mini-batch queue's (the poison queues are the control app's,
    # and a poison message must not wake a GPU), declared in place of the generated ones: the
    # main app's queue is MINIBATCH_QUEUE, a profile app's minibatch_queue_for(profile).
    assert bicep.count("type: 'azure-queue'") == 1 and terraform.count('type = "azure-queue"') == 1
    assert f"queue: '{layout.MINIBATCH_QUEUE}'" in app_bicep
    assert f"queue: '{layout.minibatch_queue_for('${p}')}'" in app_bicep
    assert f'minibatch_queue = "{layout.MINIBATCH_QUEUE}"' in app_tf
    assert "queue       = local.minibatch_queue\n" in app_tf
    assert 'queue       = "${local.minibatch_queue}-${profile}"' in app_tf
    assert layout.minibatch_queue_for("p") == f"{layout.MINIBATCH_QUEUE}-p"
    assert "queueName: app.queue" in bicep
    assert "queueName   = each.value.queue" in terraform
    assert poison_queue() not in bicep + terraform
    # Identity based: the scoring identity reads the queue; no secret or connection string.
    assert "identity: identityId" in bicep and "accountName: storage.name" in bicep
    assert "identity = azurerm_user_assigned_identity.scoring.id" in terraform
    assert "accountName = azurerm_storage_account.main.name" in terraform
    assert "auth" not in bicep and "auth" not in terraform and "secretRef" not in bicep
    # A replica per worker slot's worth of messages.
    assert "queueLength: string(workerSlots)" in bicep
    assert "queueLength = tostring(var.scoring_worker_slots)" in terraform
    assert "allowScalingRuleOverride: true" in app_bicep
    assert "allowScalingRuleOverride = true" in app_tf
    for text in (app_bicep, app_tf):
        version = re.search(r"Microsoft\.App/containerApps@(\d{4}-\d{2}-\d{2})", text)[1]
        assert version >= "2026-03-02", "allowScalingRuleOverride needs 2026-03-02-preview"
    # The scoring identity may read that queue (KEDA reads its length with it).
    assert SCORING_QUEUE_GRANTS[layout.MINIBATCH_QUEUE] == "Storage Queue Data Contributor"


def test_the_control_app_keeps_the_flex_minimum_instances_and_the_providers_data_plane_off():
    main_bicep = read(BICEP / "main.bicep")
    app_bicep = read(BICEP / "app" / "function-app.bicep")
    variables_tf = read(TERRAFORM / "variables.tf")
    for text in (main_bicep, app_bicep):
        assert re.search(r"@minValue\(40\)\s*@maxValue\(1000\)\s*(?:@description\([^\n]*\)\s*)?"
                         r"param maximumInstanceCount int", text)
    assert "var.maximum_instance_count >= 40" in block(variables_tf,
                                                       'variable "maximum_instance_count" {')
    provider = block(read(TERRAFORM / "main.tf"), 'provider "azurerm" {')
    assert re.search(r"storage \{\s*(#[^\n]*\s*)*data_plane_available = false\s*\}", provider)


def test_the_webhook_key_is_read_only_when_the_drop_subscription_is_enabled():
    event_grid = read(BICEP / "app" / "event-grid.bicep")
    url = re.search(r"endpointUrl: (.+)$", event_grid, re.M)[1]
    assert url.startswith("subscribeBlobDrop ? ") and url.endswith(" : ''")
    assert "listKeys(" in url
    event_grid_tf = read(TERRAFORM / "event_grid.tf")
    assert re.search(r'data "azurerm_function_app_host_keys" "control" \{\s*count\s*= '
                     r"var\.subscribe_blob_drop \? 1 : 0", event_grid_tf)


def test_both_stacks_set_the_job_caps_of_the_control_app():
    bicep, terraform = control_settings_bicep(), control_settings_terraform()
    for setting, parameter, variable, default in [
            (MAX_FILES_SETTING, "maxFilesPerJob", "max_files_per_job", DEFAULT_MAX_FILES),
            (MAX_ROWS_SETTING, "maxRowsPerJob", "max_rows_per_job", DEFAULT_MAX_ROWS),
            (MAX_BATCHES_SETTING, "maxMiniBatchesPerJob", "max_mini_batches_per_job",
             DEFAULT_MAX_BATCHES)]:
        assert bicep[setting] == f"string({parameter})"
        assert terraform[setting] == f"tostring(var.{variable})"
        assert f"param {parameter} int = {default}" in read(BICEP / "main.bicep")
        assert re.search(rf'variable "{variable}"[^}}]*default\s+= {default}\n',
                         read(TERRAFORM / "variables.tf"), re.S)


# --- references a compiler would resolve ----------------------------------------------------

def bicep_params(text: str) -> dict[str, bool]:
    """Parameter name -> whether it has a default."""
    return {m[1]: m[2] is not None
            for m in re.finditer(r"^param (\w+) [\w]+(\s*=.*)?$", text, re.M)}


def test_bicep_modules_get_exactly_their_parameters():
    main = read(BICEP / "main.bicep")
    modules = re.findall(r"^module \w+ '([^']+)' = \{", main, re.M)
    assert {"app/identity.bicep", "app/storage.bicep", "app/monitoring.bicep", "rbac.bicep",
            "app/function-app.bicep", "app/event-grid.bicep", "app/registry.bicep",
            "app/scoring-app.bicep", "app/lifecycle-events.bicep"} == set(modules)
    for symbol, path in re.findall(r"^module (\w+) '([^']+)' = \{", main, re.M):
        params = bicep_params(read(BICEP / path))
        module_body = block(main, f"module {symbol} '{path}' = {{")
        passed = keys(block(module_body, "params: {"), ":")
        assert passed <= set(params), f"{path}: unknown parameters {passed - set(params)}"
        required = {name for name, has_default in params.items() if not has_default}
        assert required <= passed, f"{path}: missing parameters {required - passed}"
    symbols = dict(re.findall(r"^module (\w+) '([^']+)' = \{", main, re.M))
    for symbol, output in set(re.findall(r"\b(\w+)\.outputs\.(\w+)", main)):
        module_text = read(BICEP / symbols[symbol])
        assert re.search(rf"^output {output} ", module_text, re.M), f"{symbol}.outputs.{output}"


def test_bicep_parameters_file_names_declared_parameters():
    document = json.loads(read(BICEP / "main.parameters.json"))
    declared = bicep_params(read(BICEP / "main.bicep"))
    assert set(document["parameters"]) <= set(declared)
    required = {name for name, has_default in declared.items() if not has_default}
    assert required <= set(document["parameters"])


def test_terraform_references_resolve():
    text = terraform_text()
    variables = set(re.findall(r'^variable "(\w+)"', text, re.M))
    resources = set(re.findall(r'^resource "(\w+)" "(\w+)"', text, re.M))
    data_sources = set(re.findall(r'^data "(\w+)" "(\w+)"', text, re.M))
    local_names = set()
    for match in re.finditer(r"^locals \{", text, re.M):
        local_names |= keys(block(text[match.start():], "locals {"), "=")
    assert set(re.findall(r"\bvar\.(\w+)", text)) <= variables
    assert set(re.findall(r"\blocal\.(\w+)", text)) <= local_names
    referenced = set(re.findall(r"(?<!data\.)\b((?:azurerm|azapi)_\w+)\.(\w+)\b", text))
    assert referenced <= resources
    assert set(re.findall(r"\bdata\.(\w+)\.(\w+)", text)) <= data_sources
    providers = set(re.findall(r"^\s*(\w+) = \{\n\s*source", block(text, "required_providers {"),
                               re.M))
    assert {resource.split("_")[0] for resource, _ in resources} <= providers
    example = read(TERRAFORM / "terraform.tfvars.example")
    assert set(re.findall(r"^#?\s*(\w+)\s*=", example, re.M)) <= variables


def bicep_code(text: str) -> str:
    """`text` without comments and string contents (Bicep strings are '...' with \\ escapes,
    or '''...''' without)."""
    code, index = [], 0
    while index < len(text):
        if text.startswith("//", index):
            index = text.find("\n", index) if "\n" in text[index:] else len(text)
        elif text.startswith("'''", index):
            index = text.index("'''", index + 3) + 3
            code.append("''")
        elif text[index] == "'":
            index += 1
            while text[index] != "'":
                index += 2 if text[index] == "\\" else 1
            index += 1
            code.append("''")
        else:
            code.append(text[index])
            index += 1
    return "".join(code)


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(BICEP)))
def test_bicep_brackets_balance(path: Path):
    code = bicep_code(read(path))
    for opening, closing in ("{}", "[]", "()"):
        assert code.count(opening) == code.count(closing), f"{path.name}: {opening}{closing}"


def test_both_stacks_publish_lifecycle_events_to_a_cloudevents_topic_of_the_control_app():
    topic_bicep = read(BICEP / "app" / "lifecycle-events.bicep")
    topic_tf = block(read(TERRAFORM / "event_grid.tf"),
                     'resource "azurerm_eventgrid_topic" "lifecycle" {')
    assert "inputSchema: 'CloudEventSchemaV1_0'" in topic_bicep
    assert "disableLocalAuth: true" in topic_bicep
    assert assignments(topic_tf, "=")["input_schema"] == "CloudEventSchemaV1_0"
    assert assignments(topic_tf, "=")["local_auth_enabled"] == "false"
    rbac_bicep, rbac_tf = read(BICEP / "rbac.bicep"), read(TERRAFORM / "rbac.tf")
    sender = resource_block(rbac_bicep, "controlEventsSender")
    assert "scope: eventsTopic" in sender and "principalId: controlPrincipalId" in sender
    assert bicep_roles()["eventGridDataSender"] == "EventGrid Data Sender"
    sender_tf = block(rbac_tf, 'resource "azurerm_role_assignment" "control_events_sender" {')
    assert assignments(sender_tf, "=") == {
        "scope": "azurerm_eventgrid_topic.lifecycle.id",
        "role_definition_name": "EventGrid Data Sender",
        "principal_id": "azurerm_user_assigned_identity.control.principal_id",
        "principal_type": "ServicePrincipal"}
    assert control_settings_bicep()[EVENTGRID_ENDPOINT_SETTING] == "eventsTopicEndpoint"
    assert (control_settings_terraform()[EVENTGRID_ENDPOINT_SETTING]
            == "azurerm_eventgrid_topic.lifecycle.endpoint")
    assert EVENTGRID_ENDPOINT_SETTING not in scoring_settings_bicep()


# --- the deploy guide ------------------------------------------------------------------------

def test_the_deploy_guide_packages_what_the_control_app_serves_and_ends_with_a_smoke_test():
    guide = read(ROOT / "docs" / "deploy-azure.md")
    command = re.search(r"zip -r /tmp/batchfn-app\.zip (.*?) -x", guide.replace("\\\n", " "),
                        re.S)[1].split()
    # The control app reads these at run time; studio/ holds the console (/api/studio/).
    assert {"function_app.py", "host.json", "requirements.txt", "functions", "shared",
            "studio"} <= set(command)
    assert "STUDIO_DIR = Path(__file__).resolve().parent.parent / \"studio\"" in read(
        ROOT / "functions" / "studio.py")
    last = guide[guide.rindex("\n## "):]
    assert last.startswith("\n## Smoke test")
    assert 'infra/scripts/verify "$RG" "$APP" "$SCORING"' in last
    assert "batchfn job stream" in last and "batchfn batch-endpoint invoke" in last
    assert (ROOT / "infra" / "scripts" / "verify").stat().st_mode & 0o111
