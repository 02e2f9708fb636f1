"""Static check of an Azure ML scoring script, done when a deployment is created.

The script is compiled and its module-level names inspected with `ast`; it is never
executed, so creating a deployment neither runs user code nor needs the model's libraries
(torch, tensorflow) in the API process.
"""

from __future__ import annotations

import ast

from .errors import Unprocessable

REQUIRED_ENTRY_POINTS = ("init", "run")


def check_scoring_script(source: str | bytes, filename: str) -> None:
    """Raise Unprocessable if `source` does not compile or lacks `init` and `run`."""
    try:
        tree = compile(source, filename, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        raise Unprocessable(
            f"scoring script {filename} does not compile: {exc.msg}{where}",
            details={"file": filename, "line": exc.lineno, "offset": exc.offset,
                     "text": (exc.text or "").rstrip("\n")},
            code="script_syntax_error",
        ) from None
    except ValueError as exc:  # null bytes in the source, on Python 3.10
        raise Unprocessable(
            f"scoring script {filename} is not valid Python source: {exc}",
            details={"file": filename},
            code="script_syntax_error",
        ) from None
    defined = _module_level_names(tree.body)
    missing = [name for name in REQUIRED_ENTRY_POINTS if name not in defined]
    if missing:
        raise Unprocessable(
            f"scoring script {filename} must define {' and '.join(REQUIRED_ENTRY_POINTS)}(); "
            f"missing: {', '.join(missing)}",
            details={"file": filename, "missing": missing},
            code="script_missing_entry_points",
        )


def _module_level_names(body: list[ast.stmt]) -> set[str]:
    # Names bound at module level, also inside top-level if/try/with blocks (guarded imports).
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.If):
            names |= _module_level_names(node.body) | _module_level_names(node.orelse)
        elif isinstance(node, ast.Try):
            names |= _module_level_names(node.body) | _module_level_names(node.orelse)
            names |= _module_level_names(node.finalbody)
            for handler in node.handlers:
                names |= _module_level_names(handler.body)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            names |= _module_level_names(node.body)
    return names
