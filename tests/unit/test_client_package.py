"""The client package stays light and installs alone: what importing the CLI, the client
and the SDK facade loads (in a fresh interpreter), no import cycles, the client/server
split of the dependencies, and `pip install .` into an empty virtual environment."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("azure", "numpy", "pandas", "aiohttp", "pyarrow", "PIL", "torch", "yaml")
# The contract modules the client uses (shared/contract, shipped as batchfn.contract).
CONTRACT = ("batchfn.contract.names", "batchfn.contract.errors", "batchfn.contract.settings",
            "batchfn.contract.deployment_spec", "batchfn.contract.script_check",
            "batchfn.contract.asset_manifest", "batchfn.contract.mlmodel",
            "batchfn.devhost_state")


def _loaded_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                               text=True, timeout=60, check=True)
    return {name.split(".")[0] for name in json.loads(completed.stdout.splitlines()[-1])}


@pytest.mark.parametrize("code", [
    # every command module, as `batchfn --help` loads them
    "from batchfn.cli import COMMANDS, cli\nfor name in COMMANDS: cli.get_command(None, name)",
    "import batchfn.client",
    "import batchfn.ml, batchfn.ml.entities, batchfn.ml.constants, batchfn.ml.operations",
    "import batchfn.deployment_files",
    "import " + ", ".join(CONTRACT),
])
def test_imports_load_no_sdk_and_no_data_library(code):
    assert _loaded_after(code) & set(HEAVY) == set()


def test_the_cli_answers_help_without_them():
    code = ("import sys\nfrom batchfn.cli import main\nsys.argv = ['batchfn', 'job', 'show', "
            "'--help']\ntry:\n    main()\nexcept SystemExit:\n    pass")
    assert _loaded_after(code) & set(HEAVY) == set()


def _imports(path: Path, package: str) -> set[str]:
    """Modules of `package` that `path` imports at module level (TYPE_CHECKING excluded)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == package or name.startswith(package + ".")}


def test_the_client_package_has_no_import_cycles():
    modules = {}
    for path in (REPO / "batchfn").rglob("*.py"):
        relative = path.relative_to(REPO).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        modules[name] = _imports(path, "batchfn")
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, "import cycle: " + " -> ".join([*visiting, name])
        if name in done or name not in modules:
            return
        visiting.append(name)
        for target in modules[name]:
            visit(target)
        visiting.pop()
        done.add(name)

    for name in modules:
        visit(name)


def _requirement_names(lines: list[str]) -> dict[str, str]:
    specs = {}
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            name = re.split(r"[<>=!~\[ ]", text, maxsplit=1)[0].lower()
            specs[name] = text.replace(" ", "")
    return specs


def test_the_client_installs_without_the_servers_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    client = _requirement_names(project["dependencies"])
    server = _requirement_names(project["optional-dependencies"]["server"])
    assert set(client) == {"click", "pyyaml", "jmespath", "azure-storage-blob"}
    # requirements.txt is what Azure Functions installs: the [server] extra, in step.
    functions_app = _requirement_names((REPO / "requirements.txt").read_text().splitlines())
    assert functions_app == server
    # The scoring image adds the built-in MLflow scorer's: the [mlflow] extra, in step.
    scoring = (REPO / "requirements-scoring.txt").read_text().splitlines()
    assert "-r requirements.txt" in scoring
    mlflow = _requirement_names(project["optional-dependencies"]["mlflow"])
    assert _requirement_names(line for line in scoring if not line.startswith("-r")) == mlflow


@pytest.fixture(scope="module")
def installed_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install .` into an empty virtual environment (outside the source tree)."""
    root = tmp_path_factory.mktemp("client-install")
    # What the package is built from, copied so the build leaves nothing in the checkout.
    source = root / "source"
    for part in ("pyproject.toml", "README.md", "batchfn", "shared/contract",
                 "devhost/state_file"):
        if (REPO / part).is_dir():
            shutil.copytree(REPO / part, source / part,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (source / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / part, source / part)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    str(source)], check=True, timeout=600, cwd=root, capture_output=True)
    return venv


def _run_installed(venv: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(venv.parent),
           "BATCHFN_URL": "http://127.0.0.1:9", "BATCHFN_KEY": "k"}
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120,
                          cwd=venv.parent, env=env, **kw)


@pytest.mark.slow
def test_pip_install_installs_the_client_alone(installed_client: Path):
    python = str(installed_client / "bin" / "python")
    probe = ("import importlib.util as u, json\n"
             "import batchfn.ml, batchfn.client, batchfn.contract.deployment_spec\n"
             "print(json.dumps({n: u.find_spec(n) is not None for n in "
             "('shared', 'functions', 'devhost', 'function_app')}))")
    found = _run_installed(installed_client, python, "-c", probe, check=True)
    assert json.loads(found.stdout) == {"shared": False, "functions": False,
                                        "devhost": False, "function_app": False}
    assert not list((installed_client / "bin").glob("devhost*"))


@pytest.mark.slow
def test_the_installed_cli_answers_and_checks_files_locally(installed_client: Path,
                                                            tmp_path: Path):
    cli = str(installed_client / "bin" / "batchfn")
    assert "batch-endpoint" in _run_installed(installed_client, cli, "--help").stdout
    # A broken deployment file is refused on this machine, by the shipped contract.
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(b"w")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text("def init():\n    pass\n")
    (tmp_path / "deployment.yml").write_text(
        "name: dep1\nendpoint_name: endpoint1\nmodel: {path: model}\n"
        "code_configuration: {code: code, scoring_script: score.py}\n"
        "settings: {mini_batch_size: 0}\n")
    refused = _run_installed(installed_client, cli, "batch-deployment", "create", "--file",
                             str(tmp_path / "deployment.yml"))
    assert refused.returncode != 0 and "mini_batch_size" in refused.stderr
    # No server at that address: a transport error, with a message and no traceback.
    unreachable = _run_installed(installed_client, cli, "job", "show", "-n", "j1")
    assert unreachable.returncode != 0 and "Traceback" not in unreachable.stderr
