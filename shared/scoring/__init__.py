"""The scoring runtime: runs users' Azure ML scoring scripts on mini-batches.

Public names are loaded on first use (PEP 562): every spawned worker process imports this
package on its way to `shared.scoring.worker`, and should not pay for the storage SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.scoring.batch import InputFile, MiniBatch, ScoringOutcome
    from shared.scoring.runtime import ScoringRuntime, default_runtime

_EXPORTS = {
    "InputFile": "shared.scoring.batch",
    "MiniBatch": "shared.scoring.batch",
    "ScoringOutcome": "shared.scoring.batch",
    "ScoringRuntime": "shared.scoring.runtime",
    "default_runtime": "shared.scoring.runtime",
}
__all__ = ["InputFile", "MiniBatch", "ScoringOutcome", "ScoringRuntime", "default_runtime"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
