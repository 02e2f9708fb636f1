"""A job's throughput over time: a bounded series of cumulative input counts.

Each progress check that counts new completions adds one sample — the time of the latest
completion and the inputs (files, or rows of a tabular job) succeeded and failed so far —
to progress.json. Cumulative counts
survive thinning: when the series is full, the sample whose neighbours are closest in time
is dropped (never the first or the newest), so a job of any length keeps at most
MAX_SAMPLES samples spread evenly over its run, and a job opened after it ended still shows
how it ran. Rates are the differences between neighbouring samples.
"""

from __future__ import annotations

from typing import Any

from shared.contract.timestamps import parse_time

MAX_SAMPLES = 240

# One sample: [ISO time, inputs succeeded, inputs failed] (a list: progress.json stays small).
Sample = list[Any]


def add_sample(samples: list[Sample], at: str | None, succeeded: int,
               failed: int) -> list[Sample]:
    """`samples` with one more; a sample at the same time as the newest replaces it."""
    if not at:
        return samples
    sample = [at, succeeded, failed]
    if samples and samples[-1][0] == at:
        return samples[:-1] + [sample]
    grown = samples + [sample]
    if len(grown) <= MAX_SAMPLES:
        return grown
    times = [parse_time(at).timestamp() for at, _, _ in grown]
    drop = min(range(1, len(grown) - 1), key=lambda i: times[i + 1] - times[i - 1])
    return grown[:drop] + grown[drop + 1:]


def throughput_view(planned_at: str, first_completed_at: str | None, inputs: int,
                    samples: list[Sample], unit: str = "files") -> dict[str, Any]:
    """The API's form of a series: when planning ended and the first mini-batch finished
    (the first sample's counts were reached between then and its time), the job's unit
    (files, or rows of a tabular job), its input total, and the samples."""
    return {
        "planned_at": planned_at,
        "first_completed_at": first_completed_at,
        "unit": unit,
        "inputs": inputs,
        "samples": [{"at": at, "succeeded": succeeded, "failed": failed}
                    for at, succeeded, failed in samples],
    }
