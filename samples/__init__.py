"""Samples that exercise batchfn end to end (importable for their tests and the demo)."""
