"""checkov over infra/: Bicep, Terraform and the Dockerfile pass with 0 failed checks.

Every accepted finding is a `checkov:skip=<check>:<reason>` comment at the resource; this
test also refuses skips without a reason and skips that no longer match a finding. checkov
runs from its own venv (`make test` installs it: .venv/tools/checkov), offline, with
batchfn's own checks (infra/checkov: the GPU app's queue scale rule, the image's pinned
inputs, the storage data plane off), which must each run and pass.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

# checkov takes about 20 s: `make quick` leaves it to `make test`.
pytestmark = pytest.mark.slow

INFRA = REPO / "infra"
CUSTOM_CHECKS = INFRA / "checkov"
FRAMEWORKS = ("bicep", "terraform", "dockerfile")
# batchfn's checks and where each must pass.
OWN_CHECKS = {("bicep", "CKV_BATCHFN_1"), ("terraform", "CKV_BATCHFN_1"),
              ("dockerfile", "CKV_BATCHFN_2"), ("dockerfile", "CKV_BATCHFN_3"),
              ("terraform", "CKV_BATCHFN_4")}
SKIP_COMMENT = re.compile(r"checkov:skip=([A-Z0-9_]+):?(.*)$", re.M)
MIN_REASON_LENGTH = 30


def checkov_command() -> str:
    """$CHECKOV, the tool venv `make test` builds, or `checkov` on PATH."""
    candidates = [os.environ.get("CHECKOV"), str(REPO / ".venv" / "tools" / "checkov" / "bin"
                                               / "checkov"), shutil.which("checkov")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("checkov is not installed: run `make test` (it installs .venv/tools/checkov)")


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    result = subprocess.run(
        [checkov_command(), "--directory", str(INFRA), "--framework", *FRAMEWORKS,
         "--external-checks-dir", str(CUSTOM_CHECKS), "--output", "json", "--skip-download"],
        capture_output=True, text=True, timeout=300)
    assert result.stdout.strip(), result.stderr[-3000:]
    document = json.loads(result.stdout)
    runs = document if isinstance(document, list) else [document]
    return {run["check_type"]: run for run in runs}


def _infra_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and (
        p.suffix in (".bicep", ".tf") or p.name == "Dockerfile"))


def test_every_framework_passes_with_no_failed_check(reports):
    assert set(reports) == set(FRAMEWORKS)
    for framework, run in reports.items():
        summary = run["summary"]
        failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
                  for c in run["results"]["failed_checks"]]
        assert summary["failed"] == 0, f"{framework}:\n" + "\n".join(failed)
        assert summary["parsing_errors"] == 0, framework
        assert summary["passed"] > 0, framework


def test_batchfns_own_checks_run_and_pass(reports):
    passed = {(framework, check["check_id"]) for framework, run in reports.items()
              for check in run["results"]["passed_checks"]}
    assert OWN_CHECKS <= passed, OWN_CHECKS - passed


def test_every_skip_has_a_reason_and_matches_a_finding(reports):
    applied = {(check["check_id"], Path(check["file_path"]).name)
               for run in reports.values() for check in run["results"]["skipped_checks"]}
    for path in _infra_files():
        for match in SKIP_COMMENT.finditer(path.read_text()):
            check_id, reason = match[1], match[2].strip()
            assert len(reason) >= MIN_REASON_LENGTH, f"{path.name}: {check_id} needs a reason"
            assert (check_id, path.name) in applied, (
                f"{path.name}: the skip of {check_id} matches no finding; remove it")
