"""The worker runtime runs inside deployments' environments on Python 3.9 to 3.13: no
syntax or known library call newer than 3.9 in shared/worker (only 3.11 exists on this
machine, so the syntax is checked with the parser's 3.9 grammar)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[2] / "shared" / "worker"
FILES = sorted(p for p in WORKER.rglob("*.py") if "__pycache__" not in p.parts)
# Keyword arguments and names that need Python 3.10 or later.
NEWER_KEYWORDS = {"strict", "slots", "kw_only"}
NEWER_NAMES = {"UTC", "StrEnum", "TypeAlias", "ParamSpec", "Self", "ExceptionGroup",
               "TaskGroup", "tomllib", "pairwise", "aiter", "anext"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(WORKER)))
def test_worker_module_parses_as_python_3_9(path):
    source = path.read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword):
            assert node.arg not in NEWER_KEYWORDS, f"{path.name}:{node.lineno} {node.arg}="
        if isinstance(node, (ast.Name, ast.alias)):
            name = node.id if isinstance(node, ast.Name) else node.name
            assert name not in NEWER_NAMES, f"{path.name}:{node.lineno} uses {name}"
        if isinstance(node, (ast.ImportFrom, ast.Import)):
            modules = [node.module] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names]
            assert not any(m and m.startswith(("shared.contract", "shared.storage",
                                               "shared.control", "shared.scoring"))
                           for m in modules), f"{path.name}: an engine import"
    if path.name != "__init__.py" and ("|" in source or "list[" in source):
        assert "from __future__ import annotations" in source, path.name
