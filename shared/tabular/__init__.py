"""Tabular inputs: planning row ranges over CSV, JSONL and parquet files, reading them.

A tabular job scores rows, not files: planning splits each input file into row ranges of
about `mini_batch_size` rows without holding the file in memory (`split.py`), a worker
reads one range into a pandas DataFrame (`read.py`) over any `ByteSource` (`sources.py`:
a blob, a SAS URL or a local file), and input columns may be carried to the output beside
the predictions (`passthrough.py`). Rows that cannot be parsed are reported as
`FailedInput`s with their file and row number (`failures.py`). The job settings
`input_format` and `passthrough_columns` are validated by `options.py`, which loads no
pandas (the CLI validates settings too).

Modules are imported directly (`shared.tabular.split`, ...): this package module loads
nothing, so a scoring worker that never sees tabular input does not pay for numpy.
"""
