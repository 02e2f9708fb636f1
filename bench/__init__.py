"""Benchmarks of batchfn's performance targets: run each with .venv/bin/python bench/<script>.py."""
