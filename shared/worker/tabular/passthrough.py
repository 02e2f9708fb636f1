"""Input columns carried to the output: ids beside the predictions, so that users join
results to inputs without relying on row order (SageMaker's JoinSource, Vertex's
key_field, the OpenAI batch API's custom_id).

The setting `passthrough_columns` (checked in contract/settings.py) names input columns; each
output row gets their values from the input row it belongs to, before the columns run()
returned. That needs one output row per input row, in order: run() returning any other
number of rows is an error with a clear message, never a silent misalignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from shared.worker.encoding import as_table

_LISTED_COLUMNS = 20  # how many of the input's columns an error message names


class PassthroughError(ValueError):
    """Passthrough columns cannot be attached: a column is missing or the rows differ."""


def attach_passthrough(inputs: pd.DataFrame, result: pd.DataFrame | Sequence[Any],
                       columns: Sequence[str]) -> pd.DataFrame:
    """Output rows: `columns` of `inputs` row by row, then the columns of run()'s `result`.

    `inputs` is the frame run() was given; a list `result` becomes one column named
    encoding.LIST_COLUMN. A column that `result` has itself is kept as run() returned it.
    Raises PassthroughError when a column is not in `inputs` or when `result` does not
    hold exactly one row per input row.
    """
    if not columns:
        raise ValueError("no passthrough columns given")
    missing = [name for name in columns if name not in inputs.columns]
    if missing:
        shown = ", ".join(map(str, inputs.columns[:_LISTED_COLUMNS]))
        more = len(inputs.columns) - _LISTED_COLUMNS
        raise PassthroughError(
            f"passthrough column(s) {', '.join(missing)} not in the input; its columns are: "
            f"{shown or '(none)'}" + (f" and {more} more" if more > 0 else ""))
    table = as_table(result, not isinstance(result, pd.DataFrame))
    if len(table) != len(inputs):
        raise PassthroughError(
            f"run() returned {len(table)} rows for {len(inputs)} input rows: passthrough "
            "columns need exactly one output row per input row, in input order")
    carried = [name for name in columns if name not in table.columns]
    return pd.concat([inputs[carried].reset_index(drop=True), table.reset_index(drop=True)],
                     axis=1)
