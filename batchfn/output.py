"""Printing results like `az`: a JMESPath `--query`, then `-o json|tsv|table|yaml`; and the
one-line progress of a running job.

jmespath and PyYAML are imported only when a query or YAML output asks for them, so a
plain `batchfn job show` starts without them.
"""

from __future__ import annotations

import json
from typing import Any

OUTPUT_FORMATS = ("json", "tsv", "table", "yaml")
_PROGRESS_WIDTH = 20


class QueryError(ValueError):
    """The --query expression is not valid JMESPath."""


def render(data: Any, output: str = "json", query: str | None = None) -> str:
    """The text to print for `data` (without a trailing newline)."""
    if query:
        import jmespath
        from jmespath.exceptions import JMESPathError

        try:
            data = jmespath.search(query, data)
        except JMESPathError as exc:
            raise QueryError(f"invalid --query {query!r}: {exc}") from None
    if output == "tsv":
        return _tsv(data)
    if output == "table":
        return _table(data)
    if output == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False).rstrip("\n")
    return json.dumps(data, indent=2)


def progress_line(job: dict[str, Any], terminal: bool) -> str:
    """`Running [#####.....] 50/100 files, 2 failed, 12.5 files/s, ETA 4s` (rows instead of
    files for a tabular job).

    `terminal`: the job has ended (a job without inputs then shows a full bar).
    """
    progress = job.get("progress") or {}
    unit = progress.get("unit", "files")
    counts = progress.get("inputs") or progress.get("files") or {}
    total = counts.get("total", 0)
    done = counts.get("succeeded", 0) + counts.get("failed", 0)
    if total:
        filled = int(_PROGRESS_WIDTH * done / total)
    else:
        filled = _PROGRESS_WIDTH if terminal else 0
    eta = progress.get("eta_seconds")
    rate = progress.get("rate_per_second", progress.get("rate_files_per_second", 0))
    not_started = counts.get("not_started", 0)
    return (f"{job['status']:<15} [{'#' * filled}{'.' * (_PROGRESS_WIDTH - filled)}] "
            f"{done}/{total} {unit}, {counts.get('failed', 0)} failed, {rate} {unit}/s"
            + (f", {not_started} not started" if not_started else "")
            + (f", ETA {eta:.0f}s" if eta else ""))


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _tsv_row(item: Any) -> str:
    # As az: a dict prints its scalar values in order, nested values are left out.
    if isinstance(item, dict):
        return "\t".join(_scalar(v) for v in item.values() if _is_scalar(v))
    if isinstance(item, list):
        return "\t".join(_scalar(v) for v in item if _is_scalar(v))
    return _scalar(item)


def _tsv(data: Any) -> str:
    if isinstance(data, list):
        return "\n".join(_tsv_row(item) for item in data)
    return _tsv_row(data)


def _table(data: Any) -> str:
    rows = data if isinstance(data, list) else [data]
    if not rows:
        return ""
    if not all(isinstance(r, dict) for r in rows):
        return "\n".join(["Result", "------"] + [_scalar(r) for r in rows])
    columns: list[str] = []
    for row in rows:
        columns += [k for k, v in row.items() if _is_scalar(v) and k not in columns]
    cells = [[_scalar(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines)
