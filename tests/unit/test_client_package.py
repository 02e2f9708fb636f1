"""The client package stays light: what importing the CLI, the client and the SDK facade
loads (in a fresh interpreter), no import cycles, and the client/server split of the
dependencies."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("azure", "numpy", "pandas", "aiohttp", "pyarrow", "PIL", "torch", "yaml")
# The pure contract modules the client shares with the server.
CONTRACT = ("shared.names", "shared.errors", "shared.settings", "shared.deployment_spec",
            "shared.script_check", "shared.asset_manifest")


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
