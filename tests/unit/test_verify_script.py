"""infra/scripts/verify, the post-deploy check, against an `az` and a `curl` that answer as
Azure would for a deployment (the Azure CLI's JMESPath queries run on canned documents)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "infra" / "scripts" / "verify"
FAKE_AZ = """#!{python}
import json, sys
import jmespath
args = sys.argv[1:]
documents = json.load(open({documents!r}))
command = " ".join(a for a in args[:3] if not a.startswith("--"))
document = documents.get(command)
if document is None:
    sys.exit(3)
query = args[args.index("--query") + 1] if "--query" in args else "@"
value = jmespath.search(query, document)
values = value if isinstance(value, list) else [value]
for item in values:
    if item is not None:
        print(item)
"""


def deployment(override: bool = True, queue: str = "minibatches", identity: str = "/id/scoring",
               instances: int = 100, poison_on_control: bool = True) -> dict:
    rule = {"name": "minibatch-queue", "custom": {
        "type": "azure-queue", "identity": identity,
        "metadata": {"accountName": "st", "queueName": queue, "queueLength": "1"}}}
    functions = ["health", "invoke_endpoint"] + (
        ["record_poisoned_minibatch"] if poison_on_control else [])
    return {
        "containerapp show": {"properties": {"template": {"scale": {
            "minReplicas": 0, "maxReplicas": 4, "allowScalingRuleOverride": override,
            "rules": [rule]}}}},
        "functionapp show": {"defaultHostName": "func.example.net", "functionAppConfig": {
            "scaleAndConcurrency": {"maximumInstanceCount": instances}}},
        "functionapp config appsettings": [{"name": name} for name in (
            "BATCHFN_ROLE", "BATCHFN_MAX_FILES_PER_JOB", "BATCHFN_MAX_ROWS_PER_JOB",
            "BATCHFN_MAX_MINI_BATCHES_PER_JOB")],
        "functionapp function list": [{"name": name} for name in functions],
    }


def run_verify(tmp_path: Path, answers: dict, *args: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    documents = tmp_path / "documents.json"
    documents.write_text(json.dumps(answers))
    az = bin_dir / "az"
    az.write_text(FAKE_AZ.format(python=sys.executable, documents=str(documents)))
    curl = bin_dir / "curl"
    curl.write_text("#!/bin/sh\nprintf 200\n")
    for tool in (az, curl):
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_a_deployment_that_scales_on_its_queue_passes(tmp_path):
    result = run_verify(tmp_path, deployment(), "rg", "func", "ca-scoring")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scoring app: azure-queue rule on minibatches: minibatches" in result.stdout
    assert "GET /api/studio/: 200" in result.stdout and "all checks passed" in result.stdout


@pytest.mark.parametrize(("broken", "message"), [
    ({"override": False}, "generated scale rules off: expected true"),
    ({"queue": "minibatches-poison"}, "azure-queue rule on minibatches: expected minibatches"),
    ({"identity": ""}, "the azure-queue rule has no identity"),
    ({"instances": 20}, "Flex Consumption needs 40 at least"),
    ({"poison_on_control": False}, "record_poisoned_minibatch is not deployed"),
])
def test_what_azure_would_show_of_a_broken_deployment_fails(tmp_path, broken, message):
    result = run_verify(tmp_path, deployment(**broken), "rg", "func", "ca-scoring")
    assert result.returncode == 1 and message in result.stderr, result.stdout + result.stderr


def test_without_a_scoring_app_its_checks_are_skipped_and_usage_is_shown(tmp_path):
    result = run_verify(tmp_path, deployment(), "rg", "func")
    assert result.returncode == 0 and "skip  scoring app" in result.stdout
    usage = run_verify(tmp_path, deployment())
    assert usage.returncode == 2 and "Usage: infra/scripts/verify" in usage.stdout
