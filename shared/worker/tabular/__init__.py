"""Tabular inputs: cutting CSV, JSONL and parquet files into row ranges, and reading them.

A tabular job scores rows, not files: planning splits each input file into row ranges of
about `mini_batch_size` rows without holding the file in memory (`split.py`), a worker
reads one range into a pandas DataFrame (`read.py`) over any `ByteSource` (`sources.py`:
a blob, a SAS URL or a local file), and input columns may be carried to the output beside
the predictions (`passthrough.py`). Rows that cannot be parsed are reported as
`FailedInput`s with their file and row number (`failures.py`). The control app's planner
cuts ranges with this same code, so the ranges it plans are the ranges a worker reads;
the settings `input_format` and `passthrough_columns` are the contract's
(shared/contract/settings.py).

Modules are imported directly (`shared.worker.tabular.split`, ...): this package loads
nothing, so a scoring worker that never sees tabular input does not pay for numpy.
"""
