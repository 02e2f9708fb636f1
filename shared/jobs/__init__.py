"""Batch scoring jobs: invoke, planning, progress, results, finalize, cancel and rerun.

Host-agnostic: the Functions blueprints in functions/ only translate bindings into calls
here. docs/jobs.md describes the lifecycle and the storage layout under batchfn-state.
"""
