"""Every benchmark script imports: they run rarely and by hand, so a rename elsewhere must
not leave one broken until the day its numbers are needed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("module", sorted(p.stem for p in BENCH.glob("*.py")
                                          if p.stem != "__init__"))
def test_the_benchmark_imports(module):
    importlib.import_module(f"bench.{module}")
