"""The `batchfn` CLI against a real devhost: Azure ML's sample files, unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from batchfn.cli import cli
from batchfn.client import BatchfnClient
from devhost.testing import running_devhost
from tests.conftest import ensure_compute

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples" / "mnist"


@pytest.fixture(scope="module")
def host(storage_connection: str) -> Iterator:
    with running_devhost("function_app", script_root=REPO,
                         connection_string=storage_connection) as running:
        yield running


@pytest.fixture
def env(host) -> dict[str, str]:
    # No key given: the CLI finds the local devhost's key in its state file.
    return {"BATCHFN_URL": host.url, "DEVHOST_STATE_DIR": str(host.state_path.parent)}


def run(env: dict[str, str], *args: str, ok: bool = True, input: str | None = None):
    result = CliRunner().invoke(cli, list(args), env=env, input=input)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_azure_ml_tutorial_flow(env, host, unique_name):
    ensure_compute(BatchfnClient(host.url, host.key))
    created = run(env, "batch-endpoint", "create", "--file", str(SAMPLES / "endpoint.yml"),
                  "--name", unique_name)
    assert json.loads(created.stdout)["name"] == unique_name
    torch = run(env, "batch-deployment", "create",
                "--file", str(SAMPLES / "deployment-torch" / "deployment.yml"),
                "--endpoint-name", unique_name, "--set-default")
    assert "note: batchfn ignores these fields:\n  $schema: " in torch.stderr
    assert "\n  environment.image: kept, not used" in torch.stderr
    deployment = json.loads(torch.stdout)
    assert "pytorch-lightning" in deployment["environment"]["requirements"]  # its conda file
    assert deployment["compute"] == "batch-cluster"
    assert deployment["model"]["name"] == "mnist-classifier-torch"
    assert deployment["code_configuration"]["scoring_script"] == "batch_driver.py"
    run(env, "batch-deployment", "create",
        "--file", str(SAMPLES / "deployment-keras" / "deployment.yml"),
        "--endpoint-name", unique_name, "--set", "settings.mini_batch_size=5")

    default = run(env, "batch-endpoint", "show", "-n", unique_name,
                  "--query", "defaults.deployment_name", "-o", "tsv")
    assert default.stdout == "mnist-torch-dpl\n"
    names = run(env, "batch-deployment", "list", "-e", unique_name, "--query", "[].name",
                "-o", "tsv")
    assert names.stdout.split() == ["mnist-keras-dpl", "mnist-torch-dpl"]
    table = run(env, "-o", "table", "batch-endpoint", "list")
    assert table.stdout.splitlines()[0].split()[:2] == ["name", "description"]
    keras = run(env, "batch-deployment", "show", "-n", "mnist-keras-dpl", "-e", unique_name,
                "--query", "settings.mini_batch_size", "-o", "tsv")
    assert keras.stdout == "5\n"

    run(env, "batch-endpoint", "update", "--name", unique_name,
        "--set", "defaults.deployment_name=mnist-keras-dpl")
    run(env, "batch-deployment", "update", "-n", "mnist-torch-dpl", "-e", unique_name,
        "--set", "mini_batch_size=20", "--set", "retry_settings.timeout=60")
    torch_settings = json.loads(run(env, "batch-deployment", "show", "-n", "mnist-torch-dpl",
                                    "-e", unique_name, "--query", "settings").stdout)
    assert torch_settings["mini_batch_size"] == 20
    assert torch_settings["retry_settings"]["timeout"] == 60

    refused = run(env, "batch-deployment", "delete", "-n", "mnist-keras-dpl", "-e",
                  unique_name, "--yes", ok=False)
    assert refused.exit_code == 1 and "switch the default first" in refused.stderr
    run(env, "batch-deployment", "delete", "-n", "mnist-torch-dpl", "-e", unique_name, "--yes")
    aborted = run(env, "batch-endpoint", "delete", "-n", unique_name, ok=False, input="n\n")
    assert aborted.exit_code == 1
    run(env, "batch-endpoint", "delete", "-n", unique_name, "--yes")
    gone = run(env, "batch-endpoint", "show", "-n", unique_name, ok=False)
    assert gone.exit_code == 1
    assert gone.stderr.strip() == (f"Error: endpoint '{unique_name}' does not exist "
                                   "[endpoint_not_found]")


@pytest.mark.parametrize(("args", "fragment"), [
    (["batch-endpoint", "show", "-n", "a/../b"], "invalid endpoint name"),
    (["batch-endpoint", "create", "--file", "/no/such/endpoint.yml"], "does not exist"),
    (["batch-endpoint", "update", "-n", "abc", "--set", "oops"], "expected KEY=VALUE"),
    (["batch-endpoint", "list", "--query", "[?"], "invalid --query"),
    (["batch-deployment", "create"], "give --file"),
])
def test_errors_are_one_clear_line(env, args, fragment):
    result = run(env, *args, ok=False)
    assert result.exit_code != 0
    # One error line (usage errors are preceded by click's usage hint).
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


def test_bad_files_are_refused_before_upload(env, host, tmp_path, unique_name):
    ensure_compute(BatchfnClient(host.url, host.key))
    run(env, "batch-endpoint", "create", "--name", unique_name)
    (tmp_path / "broken.yml").write_text("name: [unclosed\n")
    bad_yaml = run(env, "batch-deployment", "create", "--file", str(tmp_path / "broken.yml"),
                   "-e", unique_name, ok=False)
    assert "is not valid YAML (line 2" in bad_yaml.stderr
    deployment = (SAMPLES / "deployment-torch" / "deployment.yml").read_text()
    # The conda file it names, so that only the settings (then the model) are wrong.
    shutil.copytree(SAMPLES / "deployment-torch" / "environment", tmp_path / "environment")
    for bad_set, fragment in [("settings.mini_batch_size=0", "mini_batch_size=0"),
                              ("settings.output_action=explode", "output_action"),
                              ("settings.retry_settings.timeout=-1", "timeout")]:
        copy = tmp_path / "deployment.yml"
        copy.write_text(deployment)
        result = run(env, "batch-deployment", "create", "--file", str(copy), "-e", unique_name,
                     "--set", bad_set, ok=False)
        assert fragment in result.stderr and "invalid_setting" in result.stderr
    missing = run(env, "batch-deployment", "create", "--file", str(tmp_path / "deployment.yml"),
                  "-e", unique_name, ok=False)
    assert "folder 'model' does not exist" in missing.stderr
    listing = run(env, "batch-deployment", "list", "-e", unique_name, "-o", "tsv")
    assert listing.stdout == ""


def test_large_model_folder_uploads_in_bounded_memory(host, env, tmp_path, unique_name):
    model = tmp_path / "model"
    model.mkdir()
    chunk = os.urandom(4 * 1024 * 1024)
    for name, megabytes in (("weights.bin", 160), ("extra.bin", 40)):
        with (model / name).open("wb") as stream:
            for index in range(megabytes // 4):
                stream.write(index.to_bytes(8, "little") + chunk[8:])
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text("def init():\n    pass\n\ndef run(batch):\n    return batch\n")
    (tmp_path / "deployment.yml").write_text(
        "name: big\nmodel:\n  path: model\ncode_configuration:\n  code: code\n"
        "  scoring_script: score.py\n")
    run(env, "batch-endpoint", "create", "--name", unique_name)
    host_rss_before = psutil.Process(host.pid).memory_info().rss
    # VmHWM, not ru_maxrss: Linux carries the parent's peak into a forked-and-exec'd
    # child's ru_maxrss, so after a heavy test raised pytest's peak the CLI would be
    # charged for it. VmHWM is the peak of the CLI's own address space.
    harness = (
        "import sys\n"
        "from batchfn.cli import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "peak_kb = next(line.split()[1] for line in open('/proc/self/status')"
        " if line.startswith('VmHWM:'))\n"
        "print('MAXRSS_KB', peak_kb, code, file=sys.stderr)\n")
    result = subprocess.run(
        [sys.executable, "-c", harness, "batch-deployment", "create", "--file",
         str(tmp_path / "deployment.yml"), "-e", unique_name, "--query", "model"],
        env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True, timeout=300)
    marker = [line for line in result.stderr.splitlines() if line.startswith("MAXRSS_KB")][-1]
    _, max_rss_kb, code = marker.split()
    assert code in ("0", "None"), result.stderr
    model_asset = json.loads(result.stdout)
    assert model_asset["size"] == 200 * 1024 * 1024 and model_asset["files"] == 2
    assert int(max_rss_kb) < 150 * 1024, f"CLI peaked at {int(max_rss_kb) // 1024} MB"
    host_growth = psutil.Process(host.pid).memory_info().rss - host_rss_before
    assert host_growth < 50 * 1024 * 1024


def test_update_from_file_pins_new_versions(env, tmp_path, unique_name):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"one")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text("def init():\n    pass\n\ndef run(b):\n"
                                                "    return b\n")
    file = tmp_path / "deployment.yml"
    file.write_text("name: blue\nmodel:\n  path: model\ncode_configuration:\n  code: code\n"
                    "  scoring_script: score.py\nmini_batch_size: 3\n")
    run(env, "batch-endpoint", "create", "--name", unique_name)
    first = json.loads(run(env, "batch-deployment", "create", "-f", str(file), "-e",
                           unique_name).stdout)
    again = run(env, "batch-deployment", "create", "-f", str(file), "-e", unique_name,
                ok=False)
    assert "already exists" in again.stderr and "[already_exists]" in again.stderr
    (tmp_path / "model" / "w.bin").write_bytes(b"two")
    second = json.loads(run(env, "batch-deployment", "update", "-f", str(file), "-e",
                            unique_name).stdout)
    assert (first["model"]["version"], second["model"]["version"]) == ("1", "2")
    assert second["code_configuration"]["code"] == first["code_configuration"]["code"]
    assert second["created_at"] == first["created_at"]
    assert second["settings"]["mini_batch_size"] == 3


def test_azure_ml_settings_form_with_environment_variables(env, tmp_path, unique_name):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"w")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text("def init():\n    pass\n\ndef run(b):\n"
                                                "    return b\n")
    file = tmp_path / "deployment.yml"
    file.write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json\n"
        "name: blue\ntype: model\nmodel:\n  path: model\n  type: custom_model\n"
        "code_configuration:\n  code: code\n  scoring_script: score.py\n"
        "resources:\n  instance_type: Standard_NC6s_v3\n"
        "environment_variables:\n  TOP: one\n"
        "settings:\n  instance_count: 3\n  mini_batch_size: 4\n"
        "  environment_variables:\n    MODE: fast\n    THREADS: 2\n")
    run(env, "batch-endpoint", "create", "--name", unique_name)
    created = run(env, "batch-deployment", "create", "-f", str(file), "-e", unique_name)
    deployment = json.loads(created.stdout)
    assert deployment["environment_variables"] == {"TOP": "one", "MODE": "fast", "THREADS": "2"}
    assert (deployment["settings"]["instance_count"], deployment["settings"]["mini_batch_size"]) \
        == (3, 4)
    assert "\n  resources.instance_type: the host size" in created.stderr
    run(env, "batch-deployment", "update", "-n", "blue", "-e", unique_name,
        "--set", "settings.environment_variables.MODE=slow", "--set", "settings.instance_count=2")
    shown = json.loads(run(env, "batch-deployment", "show", "-n", "blue", "-e",
                           unique_name).stdout)
    assert shown["environment_variables"] == {"MODE": "slow"}
    assert shown["settings"]["instance_count"] == 2
    file.write_text(file.read_text().replace("type: model", "type: pipeline"))
    refused = run(env, "batch-deployment", "create", "-f", str(file), "-e", unique_name,
                  "-n", "green", ok=False)
    assert refused.exit_code == 1
    assert "pipeline deployments (type: pipeline) are not supported" in refused.stderr
    assert "[unsupported_deployment_type]" in refused.stderr
