"""What the scoring runtime is asked to score and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass

from shared.scoring.encoding import EncodedPart

SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"


@dataclass(frozen=True)
class InputFile:
    """One input file of a mini-batch, stored in the app's storage account."""

    container: str
    blob_name: str
    display_name: str  # what appears in outputs/errors (path relative to the input folder)


@dataclass(frozen=True)
class MiniBatch:
    """One `run()` call's worth of files, as carried by a queue message.

    `output_format` is the format run()'s rows are encoded in (encoding.py), or None when
    only their number matters (`output_action: summary_only`).
    """

    job_id: str
    index: int
    files: tuple[InputFile, ...]
    attempt: int  # 1-based, from the queue message's dequeue count
    timeout: float  # seconds for one run() call (retry_settings.timeout)
    output_format: str | None = "azureml"


@dataclass(frozen=True)
class ScoringOutcome:
    """The result of one attempt at one mini-batch.

    `status` is "succeeded" when run() returned (even with fewer rows than inputs: the gap is
    counted in `failed`), "failed" when loading the script, init() or run() raised, the result
    was unusable or the worker process died, and "timed_out" when run() exceeded the timeout.
    `part` holds run()'s rows encoded for the batch's output format (None when it failed or
    no format was asked for), `rows` their number, and `missing` the inputs a short return
    left out (see encoding.EncodedResult).
    """

    job_id: str
    index: int
    attempt: int
    status: str
    part: EncodedPart | None
    rows: int
    missing: tuple[InputFile, ...]
    succeeded: int
    failed: int
    error: str | None
    traceback: str | None
    log: str
    duration: float
    download_seconds: float
