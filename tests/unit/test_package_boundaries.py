"""The engine's packages keep to their rooms, read from the code itself.

shared/ holds a pure contract, the storage access both apps share, the control app's
engine, the scoring app's engine and the worker runtime that runs inside a deployment's
environment. Allowed imports between them (every import counts: module level, inside
functions and under TYPE_CHECKING):

    contract → contract                       (standard library; PyYAML only)
    storage  → contract, storage
    control  → contract, storage, control, worker.tabular, worker.input_errors
    scoring  → contract, storage, scoring, worker
    worker   → worker                         (nothing else of batchfn's)

so control ↛ scoring and scoring ↛ control. The Functions blueprints of each role reach
only their app's engine, the client and devhost reach no engine module, and what a
process of each role loads is checked in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE = ("shared.contract", "shared.storage", "shared.control", "shared.scoring",
          "shared.worker")
ALLOWED = {
    "shared.contract": ("shared.contract",),
    "shared.storage": ("shared.contract", "shared.storage"),
    "shared.control": ("shared.contract", "shared.storage", "shared.control",
                       "shared.worker.tabular", "shared.worker.input_errors"),
    "shared.scoring": ("shared.contract", "shared.storage", "shared.scoring",
                       "shared.worker"),
    "shared.worker": ("shared.worker",),
}
# The contract is pure: besides the standard library it may read YAML, nothing else.
CONTRACT_THIRD_PARTY = {"yaml"}
FIRST_PARTY = ("shared", "functions", "devhost", "batchfn", "function_app", "samples",
               "bench", "tests")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, wherever the import statement is."""
    package = _module_name(path).rpartition(".")[0] if path.name != "__init__.py" \
        else _module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # `from pkg import submodule` imports the submodule
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _modules(folder: str) -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in sorted((REPO / folder).rglob("*.py"))}


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _first_party(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in FIRST_PARTY}


def _existing(names: set[str]) -> set[str]:
    """Keep module names (drop `from module import function` names that are no module)."""
    kept = set()
    for name in names:
        path = REPO.joinpath(*name.split("."))
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            kept.add(name)
    return kept


ENGINE_MODULES = _modules("shared")


def test_every_engine_module_lives_in_one_of_the_five_packages():
    stray = [name for name in ENGINE_MODULES if name != "shared" and not _within(name, ENGINE)]
    assert stray == []


@pytest.mark.parametrize("package", ENGINE)
def test_engine_packages_import_only_what_their_role_allows(package):
    crossings = {}
    for name, imports in ENGINE_MODULES.items():
        if not _within(name, (package,)):
            continue
        ours = _existing(_first_party(imports)) - {"shared"}
        bad = sorted(target for target in ours if not _within(target, ALLOWED[package]))
        if bad:
            crossings[name] = bad
    assert crossings == {}


def test_the_contract_uses_no_storage_sdk_and_no_data_library():
    third_party = set()
    for name, imports in ENGINE_MODULES.items():
        if _within(name, ("shared.contract",)):
            third_party |= {i.split(".")[0] for i in imports
                            if i.split(".")[0] not in FIRST_PARTY
                            and i.split(".")[0] not in sys.stdlib_module_names and i}
    assert third_party <= CONTRACT_THIRD_PARTY


def test_the_contract_imports_itself_relatively():
    # The client ships shared/contract as batchfn.contract: an absolute import of
    # shared.contract would not exist there.
    for path in (REPO / "shared" / "contract").glob("*.py"):
        tree = ast.parse(path.read_text())
        absolute = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and not node.level and (node.module or "").startswith("shared")]
        assert absolute == [], path.name


def test_the_engine_has_no_import_cycles():
    graph = {name: {t for t in _existing(_first_party(imports)) if t in ENGINE_MODULES}
             for name, imports in ENGINE_MODULES.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        # A package imports its submodules' parent implicitly, never the other way: only
        # module-to-module edges count.
        assert name not in visiting, "import cycle: " + " -> ".join([*visiting, name])
        if name in done:
            return
        visiting.append(name)
        for target in graph.get(name, ()):
            if target != name and not name.startswith(target + "."):
                visit(target)
        visiting.pop()
        done.add(name)

    for name in graph:
        visit(name)


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("batchfn", ("shared", "functions", "devhost")),
    ("devhost", ("shared", "functions", "batchfn")),
])
def test_the_client_and_devhost_import_no_engine_module(folder, forbidden):
    crossings = {name: sorted(i for i in imports if _within(i, forbidden))
                 for name, imports in _modules(folder).items()}
    assert {name: bad for name, bad in crossings.items() if bad} == {}


@pytest.mark.parametrize(("blueprint", "other"), [
    ("functions.scoring_queue", "shared.control"),
    ("functions.orchestration", "shared.scoring"),
    ("functions.jobs_api", "shared.scoring"),
    ("functions.control_api", "shared.scoring"),
    ("functions.environments_api", "shared.scoring"),
    ("functions.blob_drop", "shared.scoring"),
    ("functions.studio", "shared.scoring"),
    ("functions.openapi", "shared.scoring"),
    ("functions.poison_queue", "shared.scoring"),
    ("functions.health", "shared.control"),
])
def test_each_blueprint_reaches_only_its_apps_engine(blueprint, other):
    path = REPO.joinpath(*blueprint.split(".")).with_suffix(".py")
    assert not any(_within(i, (other,)) for i in _imports(path))


def _loaded(code: str, env: dict[str, str] | None = None) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                               text=True, timeout=120, check=True,
                               env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    return set(json.loads(completed.stdout.splitlines()[-1]))


def _engine_packages(modules: set[str]) -> set[str]:
    return {".".join(name.split(".")[:2]) for name in modules if _within(name, ENGINE)}


def test_a_scoring_app_loads_no_control_module(tmp_path):
    modules = _loaded("import function_app", {"BATCHFN_ROLE": "scoring",
                                              "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert _engine_packages(modules) <= {"shared.contract", "shared.storage", "shared.scoring",
                                         "shared.worker"}
    assert "shared.scoring.minibatch_handler" in modules
    assert not any(_within(m, ("azure.durable_functions",)) for m in modules)


def test_a_control_app_loads_no_scoring_module():
    modules = _loaded("import function_app", {"BATCHFN_ROLE": "control",
                                              "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert "shared.scoring" not in _engine_packages(modules)
    assert "shared.control.orchestrator" in modules


def test_the_worker_runtime_loads_nothing_of_the_engine():
    modules = _loaded("import shared.worker.serve, shared.worker.downloads, "
                      "shared.worker.tables, shared.worker.mlflow.batch_driver")
    assert _engine_packages(modules) == {"shared.worker"}
