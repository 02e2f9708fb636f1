"""What the scoring runtime is asked to score and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass

from shared.contract.ledger import AttemptUsage
from shared.contract.manifest import InputFile, RowPiece
from shared.storage.failure_records import InputFailure
from shared.worker.encoding import EncodedPart

SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
STOPPED = "stopped"  # another copy of the mini-batch finished first: nothing to record


@dataclass(frozen=True)
class MiniBatch:
    """One `run()` call's worth of files (or of rows), as carried by a queue message.

    `output_format` is the format run()'s rows are encoded in (shared/worker/encoding.py),
    or None when only their number matters (`output_action: summary_only`). A tabular mini-batch
    (`input_format` csv, jsonl or parquet) holds `pieces`, row ranges of `files`, and
    `passthrough_columns` are copied from its input rows to its output rows.
    """

    job_id: str
    index: int
    files: tuple[InputFile, ...]
    attempt: int  # 1-based, from the queue message's dequeue count
    timeout: float  # seconds for one run() call (retry_settings.timeout)
    output_format: str | None = "azureml"
    input_format: str = "files"
    pieces: tuple[RowPiece, ...] = ()
    passthrough_columns: tuple[str, ...] = ()

    @property
    def inputs(self) -> int:
        """What the mini-batch scores, in the job's unit: rows (tabular) or files."""
        return sum(piece.rows for piece in self.pieces) if self.pieces else len(self.files)


@dataclass(frozen=True)
class ScoringOutcome:
    """The result of one attempt at one mini-batch.

    `status` is "succeeded" when run() returned (even with fewer rows than inputs: the gap is
    counted in `failed`), "failed" when loading the script, init() or run() raised, the result
    was unusable or the worker process died, and "timed_out" when run() exceeded the timeout.
    `part` holds run()'s rows encoded for the batch's output format (None when it failed or
    no format was asked for), `rows` their number, and `missing` the inputs a short return
    left out (see encoding.EncodedResult). `succeeded` and `failed` count the batch's
    inputs (files, or rows of a tabular batch); `failures` are the inputs that failed on
    their own (rows that could not be read, files of a type the built-in MLflow scorer does
    not read), reported by the worker, `unlisted` those beyond the ones it listed.
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
    failures: tuple[InputFailure, ...] = ()
    unlisted: int = 0
    # The script never started: its environment, loading it or init() failed (fail_fast.py).
    startup_failed: bool = False
    input_bytes: int = 0  # what the worker read
    gpu: str | None = None  # the device type of the worker's GPU (None: none)
    run_seconds: float | None = None  # run() and its encoding, timed in the worker

    def usage(self, handled_seconds: float) -> AttemptUsage:
        """What this attempt used, for its ledger line; `handled_seconds` since the host
        took the message. run()'s time is the worker's own measure around it, or (a worker
        that timed out or died) the attempt's duration less the wait for its inputs."""
        seconds = self.run_seconds if self.run_seconds is not None else max(
            0.0, self.duration - self.download_seconds)
        return AttemptUsage(attempt=self.attempt, handled_seconds=handled_seconds,
                            run_seconds=seconds, input_bytes=self.input_bytes, gpu=self.gpu)
