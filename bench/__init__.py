"""Benchmarks of PRODUCT.md §5: run each script with .venv/bin/python bench/<script>.py."""
