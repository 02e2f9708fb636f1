"""infra/bicep and infra/terraform deploy the same thing, and what the app uses.

Neither the bicep CLI nor terraform runs here, so these checks read the files as text: the
containers, queues, roles, app settings and Flex settings of both stacks against each other
and against the names in shared/, plus the cross-file references a compiler would resolve
(module parameters, variables, locals, resources).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared import layout
from shared.jobs.drop import DROP_CONTAINER
from shared.jobs.messages import poison_queue_name

ROOT = Path(__file__).resolve().parents[2]
BICEP = ROOT / "infra" / "bicep"
TERRAFORM = ROOT / "infra" / "terraform"

APP_CONTAINERS = {layout.REGISTRY_CONTAINER, layout.ASSETS_CONTAINER, layout.DATA_CONTAINER,
                  layout.JOBS_CONTAINER, layout.STATE_CONTAINER, DROP_CONTAINER}
APP_QUEUES = {layout.MINIBATCH_QUEUE, poison_queue_name()}
STORAGE_DATA_ROLES = {"Storage Blob Data Owner", "Storage Queue Data Contributor",
                      "Storage Table Data Contributor"}
# Built-in role definition ids (the same in every tenant).
ROLE_IDS = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
IDENTITY_SETTINGS = {"__accountName", "__blobServiceUri", "__queueServiceUri",
                     "__tableServiceUri", "__credential", "__clientId"}


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


def quoted(text: str) -> set[str]:
    """The quoted strings in `text`, ignoring whole-line comments."""
    code = re.sub(r"^\s*(#|//).*$", "", text, flags=re.M)
    return set(re.findall(r"""['"]([^'"]+)['"]""", code))


def keys(text: str, separator: str) -> set[str]:
    return set(re.findall(rf"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*{separator}", text, re.M))


# --- what the app uses --------------------------------------------------------------------

def test_both_stacks_declare_the_apps_containers():
    storage_bicep = read(BICEP / "app" / "storage.bicep")
    storage_tf = read(TERRAFORM / "storage.tf")
    assert quoted(block(storage_bicep, "var appContainers = [")) == APP_CONTAINERS
    assert quoted(block(storage_tf, "app_containers = [")) == APP_CONTAINERS


def test_both_stacks_declare_the_apps_queues():
    assert quoted(block(read(BICEP / "app" / "storage.bicep"), "var appQueues = [")) == APP_QUEUES
    assert quoted(block(read(TERRAFORM / "storage.tf"), "app_queues = [")) == APP_QUEUES


def test_both_stacks_watch_the_drop_container_for_the_blob_drop_function():
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
    for text in (event_grid_bicep, event_grid_tf):
        assert "Microsoft.Storage.BlobCreated" in text
        assert "/runtime/webhooks/blobs?functionName=Host.Functions." in text


def test_every_trigger_connection_is_configured_by_identity():
    connections = set()
    for path in (ROOT / "functions").glob("*.py"):
        connections |= set(re.findall(r'connection="(\w+)"', read(path)))
    assert connections, "no trigger connections found in functions/"
    bicep_settings = bicep_app_settings()
    tf_settings = terraform_app_settings()
    for connection in connections:
        expected = {connection + suffix for suffix in IDENTITY_SETTINGS}
        assert expected <= bicep_settings
        assert expected <= tf_settings


# --- the two stacks agree -------------------------------------------------------------------

def bicep_app_settings() -> set[str]:
    text = read(BICEP / "app" / "function-app.bicep")
    return (keys(block(text, "var storageSettings = {"), ":")
            | keys(block(text, "var monitoringSettings = {"), ":"))


def terraform_app_settings() -> set[str]:
    text = read(TERRAFORM / "function_app.tf")
    settings = (keys(block(text, "storage_settings = {"), "=")
                | keys(block(text, "monitoring_settings = {"), "="))
    if "application_insights_connection_string" in block(text, "site_config {"):
        # The provider writes this app setting from site_config.
        settings.add("APPLICATIONINSIGHTS_CONNECTION_STRING")
    return settings


def test_both_stacks_set_the_same_app_settings():
    assert bicep_app_settings() == terraform_app_settings()
    assert {"APPLICATIONINSIGHTS_CONNECTION_STRING",
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"} <= bicep_app_settings()


def test_both_stacks_grant_the_same_roles():
    rbac_bicep = read(BICEP / "rbac.bicep")
    role_vars = {name: ROLE_IDS[role_id] for name, role_id in
                 re.findall(r"(\w+): '([0-9a-f-]{36})'", block(rbac_bicep, "var roles = {"))}
    storage_role_block = block(rbac_bicep, "var storageDataRoles = [")
    bicep_storage_roles = {role_vars[name]
                           for name in re.findall(r"roles\.(\w+)", storage_role_block)}
    rbac_tf = read(TERRAFORM / "rbac.tf")
    tf_storage_roles = quoted(block(rbac_tf, "storage_data_roles = toset(["))
    tf_roles = tf_storage_roles | set(re.findall(r'role_definition_name = "([^"]+)"', rbac_tf))
    assert bicep_storage_roles == tf_storage_roles == STORAGE_DATA_ROLES
    assert set(role_vars.values()) == tf_roles == STORAGE_DATA_ROLES | {
        "Monitoring Metrics Publisher"}
    # The optional user gets the storage data roles in both.
    assert "userPrincipalId" in rbac_bicep and "var.principal_id" in rbac_tf


def test_both_stacks_run_python_311_on_flex_consumption_with_the_same_defaults():
    app_bicep = read(BICEP / "app" / "function-app.bicep")
    main_bicep = read(BICEP / "main.bicep")
    app_tf = read(TERRAFORM / "function_app.tf")
    variables_tf = read(TERRAFORM / "variables.tf")
    assert "name: 'FC1'" in app_bicep and 'sku_name            = "FC1"' in app_tf
    assert re.search(r"name: 'python'\s+version: '3.11'", app_bicep)
    assert 'runtime_name           = "python"' in app_tf
    assert 'runtime_version        = "3.11"' in app_tf
    assert "@allowed([2048, 4096])\n" in main_bicep and "[2048, 4096]" in variables_tf
    assert "param instanceMemoryMB int = 2048" in main_bicep
    assert "param maximumInstanceCount int = 100" in main_bicep
    assert re.search(r'"instance_memory_mb"[^}]*default\s+= 2048', variables_tf, re.S)
    assert re.search(r'"maximum_instance_count"[^}]*default\s+= 100', variables_tf, re.S)
    for text in (app_bicep, app_tf):
        assert "UserAssignedIdentity" in text


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
    for secret in ("listKeys", "AccountKey=", "primary_access_key", "primary_connection_string",
                   "instrumentation_key", "InstrumentationKey"):
        assert secret not in everything


def test_both_stacks_output_what_the_docs_use():
    main_bicep = read(BICEP / "main.bicep")
    outputs_tf = read(TERRAFORM / "outputs.tf")
    for bicep_output, tf_output in [("FUNCTION_APP_NAME", "function_app_name"),
                                    ("FUNCTION_APP_HOSTNAME", "function_app_hostname"),
                                    ("STORAGE_ACCOUNT_NAME", "storage_account_name"),
                                    ("IDENTITY_CLIENT_ID", "identity_client_id"),
                                    ("BATCHFN_URL", "batchfn_url"),
                                    ("RESOURCE_GROUP", "resource_group")]:
        assert re.search(rf"^output {bicep_output} string", main_bicep, re.M)
        assert f'output "{tf_output}"' in outputs_tf


# --- references a compiler would resolve ----------------------------------------------------

def bicep_params(text: str) -> dict[str, bool]:
    """Parameter name -> whether it has a default."""
    return {m[1]: m[2] is not None
            for m in re.finditer(r"^param (\w+) [\w]+(\s*=.*)?$", text, re.M)}


def test_bicep_modules_get_exactly_their_parameters():
    main = read(BICEP / "main.bicep")
    modules = re.findall(r"^module \w+ '([^']+)' = \{", main, re.M)
    assert {"app/identity.bicep", "app/storage.bicep", "app/monitoring.bicep", "rbac.bicep",
            "app/function-app.bicep", "app/event-grid.bicep"} == set(modules)
    for path in modules:
        params = bicep_params(read(BICEP / path))
        module_body = block(main, f"'{path}' = {{")
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
    referenced = set(re.findall(r"(?<!data\.)\b(azurerm_\w+)\.(\w+)\b", text))
    assert referenced <= resources
    assert set(re.findall(r"\bdata\.(\w+)\.(\w+)", text)) <= data_sources
    example = read(TERRAFORM / "terraform.tfvars.example")
    assert set(re.findall(r"^#?\s*(\w+)\s*=", example, re.M)) <= variables


def bicep_code(text: str) -> str:
    """`text` without comments and string contents (Bicep strings are '...' with \\ escapes)."""
    code, index = [], 0
    while index < len(text):
        if text.startswith("//", index):
            index = text.find("\n", index) if "\n" in text[index:] else len(text)
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
