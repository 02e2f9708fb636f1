"""Results files of the benchmarks: figures, claims, settings, commit, date and machine.

Kept apart from the harness (Azurite, devhost, storage SDK) so that a benchmark that needs
none of those — bench/gpu_worker.py on a GPU machine with only PyTorch — writes the same
kind of file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"


def machine_facts() -> dict[str, Any]:
    """What the figures depend on: CPU, memory, load, Python and library versions."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m_5m_15m": [round(value, 2) for value in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "azure_storage_blob": _version("azure.storage.blob"),
        "azurite": _azurite_version(),
    }


def _version(module: str) -> str | None:
    """A module's version, or None where it is not installed (a GPU machine has no SDK)."""
    from importlib import import_module

    try:
        return import_module(module).__version__
    except Exception:  # noqa: BLE001 - missing, or broken: the figure is just not known
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _azurite_version() -> str | None:
    package = REPO / "node_modules" / "azurite" / "package.json"
    try:
        return json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def git_commit() -> str:
    """The commit the benchmark ran on, with `+dirty` when the tree had local changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "shared", "functions",
                "devhost", "function_app.py", "host.json")
    return f"{commit}+dirty" if dirty else commit


def write_results(name: str, figures: dict[str, Any], settings: dict[str, Any],
                  started_at: datetime, claims: dict[str, Any] | None = None,
                  path: Path | None = None) -> Path:
    """Write bench/results/<name>.json (or `path`); returns its path."""
    path = path or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "date": started_at.isoformat(timespec="seconds"),
        "duration_s": round((datetime.now(UTC) - started_at).total_seconds(), 1),
        "commit": git_commit(),
        "settings": settings,
        "figures": figures,
        "claims": claims or {},
        "machine": machine_facts(),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def now_utc() -> datetime:
    return datetime.now(UTC)
