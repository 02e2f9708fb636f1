"""The scoring host's job side: one queue message in, one ledger line (with its part) out.

Storage round trips per mini-batch: the job record and the manifest chunk come from small
per-process caches, so a mini-batch costs its N input downloads (in the worker process) and
its share of a ledger append that carries its encoded rows (plus the host's message
delete): mini-batches of one shard that finish close together share one append
(ledger_commits.py). Only a part over storage.parts.INLINE_PART_BYTES costs a blob write of
its own. A failed attempt's log is written at once; successful attempts' output is batched
(attempt_logs.py).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.storage.blob import BlobClient, ContentSettings
from azure.storage.queue import QueueClient

from shared.contract.errors import NotFound
from shared.contract.job_records import JobRecord, JobStatus
from shared.contract.layout import JOB_METADATA_KEY
from shared.contract.ledger import AttemptUsage, Completion, Part
from shared.contract.manifest import ManifestChunk, PlannedBatch
from shared.contract.messages import MiniBatchMessage
from shared.contract.names import relative_path_problem, shown
from shared.contract.registry_records import DeploymentRecord
from shared.contract.timestamps import utc_now
from shared.scoring.attempt_logs import AttemptLogs
from shared.scoring.batch import STOPPED, SUCCEEDED, MiniBatch, ScoringOutcome
from shared.scoring.compute_admission import ComputeAdmission
from shared.scoring.fail_fast import FailFast
from shared.scoring.heartbeats import Holding, Holdings, StartRefused
from shared.scoring.isolation import UnsafeWorkerFile, open_worker_file, worker_files
from shared.scoring.ledger_commits import LedgerCommits
from shared.scoring.tracebacks import readable_traceback
from shared.storage.failure_records import (
    INPUT_FAILED,
    MISSING_ROWS,
    InputFailure,
    whole,
    write_record,
)
from shared.storage.job_store import JobStore
from shared.storage.ledger_blobs import append_lines
from shared.storage.parts import with_part

log = logging.getLogger(__name__)

JOB_CACHE_SECONDS = 2.0  # how stale a host's view of a job may be (cancel, threshold)
MANIFEST_CACHE_CHUNKS = 16
RETRY_DELAY_SECONDS = 5  # visibility delay of a self-re-enqueued retry, like host.json's
ADMISSION_DELAY_SECONDS = 2  # the most a mini-batch of a full pool waits before another try
_HASH_CHUNK = 4 * 1024 * 1024
# Files a script may keep in a job's AZUREML_BI_OUTPUT_PATH folder on one host.
MAX_SCRIPT_OUTPUT_FILES = 10_000
MAX_BLOB_NAME = 1024  # Azure Storage's limits on a blob name
MAX_BLOB_SEGMENTS = 254


class Runtime(Protocol):
    def score(self, deployment: DeploymentRecord, batch: MiniBatch,
              holding: Holding | None = None) -> ScoringOutcome: ...

    def job_output_dir(self, job_id: str) -> Path: ...


class RetryMiniBatch(Exception):
    """This attempt failed and retries remain: let the host redeliver the message."""


class ScriptOutputRefused(Exception):
    """A file the script wrote cannot be uploaded: the mini-batch's inputs fail (`status`)."""

    status = "output_refused"


class ScriptOutputExists(ScriptOutputRefused):
    """A file the script wrote is in the output folder already, with other content."""

    status = "output_exists"


@dataclass(frozen=True)
class _Stamp:
    """What a ledger line says of the attempt beside its result: which copy of the message
    it came from, how long it took from its worker slot on, and what it used."""

    copy: int = 0
    scoring_ms: int | None = None
    usage: AttemptUsage | None = None  # what the attempt used (the job's usage report)


@dataclass(frozen=True)
class WorkResult:
    """What the handler did with one message (for logs and tests)."""

    action: str  # scored | retry | requeued | deferred | failed | skipped | stopped
    detail: str = ""


class MiniBatchHandler:
    """Processes mini-batch messages; thread-safe, one per process."""

    def __init__(self, store: JobStore, runtime: Runtime, queue: QueueClient,
                 max_dequeue_count: int = 5, logs: AttemptLogs | None = None,
                 ledger: LedgerCommits | None = None,
                 holdings: Holdings | None = None,
                 admission: ComputeAdmission | None = None) -> None:
        self.store = store
        self.logs = logs or AttemptLogs(store.state)
        self.holdings = holdings or Holdings(store.state, self.logs.host)
        self.ledger = ledger or LedgerCommits(
            lambda job_id, shard, lines: append_lines(store.state, job_id, shard, lines))
        self.admission = admission or ComputeAdmission(store.state)
        self.runtime = runtime
        self.queue = queue
        self.max_dequeue_count = max_dequeue_count
        self.fail_fast = FailFast(store)
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[float, JobRecord]] = {}
        self._manifests: OrderedDict[tuple[str, int], ManifestChunk] = OrderedDict()
        # Script output files this process sent: (size, mtime) of the local file, and the
        # ETag of the blob it wrote (None: refused, the name was taken).
        self._uploaded: dict[tuple[str, str], tuple[tuple[int, int], str | None]] = {}

    def hold(self, body: str | bytes, dequeue_count: int) -> Holding:
        """Report the message in this host's heartbeats from now on (the trigger calls it as
        the message arrives, before it waits for a thread); `process` releases it."""
        message = MiniBatchMessage.decode(body)
        return self.holdings.hold(message.job, message.index, message.copy,
                                  message.prior_attempts + dequeue_count, slots=0)

    def process(self, body: str | bytes, dequeue_count: int,
                holding: Holding | None = None) -> WorkResult:
        """Score one message (held by `holding`, else from now on). Raises RetryMiniBatch
        when the host should retry it."""
        holding = holding or self.hold(body, dequeue_count)
        try:
            return self._process(MiniBatchMessage.decode(body), dequeue_count, holding)
        finally:
            self.holdings.release(holding)

    def _process(self, message: MiniBatchMessage, dequeue_count: int,
                 holding: Holding) -> WorkResult:
        job = self._job(message.job)
        if job is None:
            return WorkResult("skipped", "job not found")
        if job.status in JobStatus.STOPPED:
            return WorkResult("skipped", f"job is {job.status}")
        if job.deadline_passed():
            # Before admission: a mini-batch that will not start needs no host slot.
            return self._record_not_started(job.id, message, self._batch(message))
        if not self.admission.enter(job.compute):
            return self._defer(message, dequeue_count, job, holding)
        try:
            return self._score(message, job, dequeue_count, holding)
        finally:
            self.admission.leave(job.compute)

    def _score(self, message: MiniBatchMessage, job: JobRecord, dequeue_count: int,
               holding: Holding) -> WorkResult:
        """Score an admitted mini-batch (`holding` reports it, from its arrival on)."""
        planned = self._batch(message)
        attempt = message.prior_attempts + dequeue_count
        holding.slots = job.settings.max_concurrency_per_instance
        merged = job.settings.output_action == "append_row"
        batch = MiniBatch(job_id=job.id, index=message.index, files=planned.files,
                          attempt=attempt, timeout=job.settings.retry_settings.timeout,
                          output_format=job.settings.output_format if merged else None,
                          input_format=job.settings.input_format, pieces=planned.pieces,
                          passthrough_columns=job.settings.passthrough_columns)
        # A mini-batch that waited for a worker slot past its job's deadline does not start.
        holding.may_start = lambda: not job.deadline_passed()
        try:
            outcome = self.runtime.score(DeploymentRecord.from_dict(job.deployment_record),
                                         batch, holding)
        except StartRefused:
            return self._record_not_started(job.id, message, planned)
        if outcome.status == STOPPED:
            return WorkResult("stopped", "another copy of the mini-batch finished first")
        holding.recording(outcome.rows)
        stamp = _Stamp(message.copy, round(holding.seconds() * 1000),
                       outcome.usage(time.monotonic() - holding.received))
        with self.ledger.recording(job.id, message.index):
            return self._record(job, message, planned, batch, outcome, dequeue_count, stamp)

    def _record(self, job: JobRecord, message: MiniBatchMessage, planned: PlannedBatch,
                batch: MiniBatch, outcome: ScoringOutcome, dequeue_count: int,
                stamp: _Stamp) -> WorkResult:
        """Record an attempt's outcome, or ask for a retry."""
        attempt = batch.attempt
        if outcome.status == SUCCEEDED:
            self.logs.add_succeeded(job.id, message.index, attempt, outcome.log)
            try:
                self._upload_script_outputs(job)
            except ScriptOutputRefused as exc:
                # Deterministic: a retry would find the same file. The inputs count as failed.
                self._record_failure(job.id, message.index, planned, attempt,
                                     exc.status, str(exc), None, stamp)
                return WorkResult("failed", str(exc))
            self._record_success(job, batch, outcome, stamp)
            return WorkResult("scored", f"{outcome.succeeded} ok, {outcome.failed} failed")
        self._write_failed_log(job.id, message.index, attempt, outcome)
        if attempt <= job.settings.retry_settings.max_retries:
            if dequeue_count >= self.max_dequeue_count:
                # The host would poison this message after this try: carry on in a new one.
                retry = MiniBatchMessage(message.job, message.index, message.chunk, attempt,
                                         message.copy)
                self.queue.send_message(retry.encode(), visibility_timeout=RETRY_DELAY_SECONDS)
                return WorkResult("requeued", f"attempt {attempt}: {outcome.error}")
            raise RetryMiniBatch(f"job {job.id} mini-batch {message.index} attempt {attempt} "
                                 f"{outcome.status}: {outcome.error}")
        self.fail_fast.record(job.id, outcome)  # before the ledger line the monitor reads
        self._record_failure(job.id, message.index, planned, attempt, outcome.status,
                             outcome.error or outcome.status, outcome.traceback, stamp)
        return WorkResult("failed", outcome.error or outcome.status)

    def _defer(self, message: MiniBatchMessage, dequeue_count: int, job: JobRecord,
               holding: Holding) -> WorkResult:
        """Every host slot of the job's pool is taken: the mini-batch waits in a copy of
        its message, visible again in a moment; this delivery counts as no attempt. The
        next heartbeat reports the deferral, so the job's monitor sends no copy of it."""
        later = MiniBatchMessage(message.job, message.index, message.chunk,
                                 message.prior_attempts + dequeue_count - 1, message.copy)
        self.queue.send_message(later.encode(), visibility_timeout=random.randint(
            1, ADMISSION_DELAY_SECONDS))
        self.holdings.release(holding, deferred=True)
        return WorkResult("deferred", f"compute {job.compute.name} has no free host slot")

    # --- internals -----------------------------------------------------------------------

    def _job(self, job_id: str) -> JobRecord | None:
        now = time.monotonic()
        with self._lock:
            cached = self._jobs.get(job_id)
        if cached and now - cached[0] < JOB_CACHE_SECONDS:
            return cached[1]
        try:
            job = self.store.get(job_id)
        except NotFound:
            return None
        with self._lock:
            self._jobs[job_id] = (now, job)
        return job

    def _batch(self, message: MiniBatchMessage) -> PlannedBatch:
        key = (message.job, message.chunk)
        with self._lock:
            chunk = self._manifests.get(key)
            if chunk is not None:
                self._manifests.move_to_end(key)
        if chunk is None:
            chunk = self.store.read_manifest(message.job, message.chunk)
            with self._lock:
                self._manifests[key] = chunk
                while len(self._manifests) > MANIFEST_CACHE_CHUNKS:
                    self._manifests.popitem(last=False)
        return chunk.batch(message.index)

    def _upload_script_outputs(self, job: JobRecord) -> None:
        """Copy files the script wrote to AZUREML_BI_OUTPUT_PATH into the job's output folder.

        Runs after each successful mini-batch, before its completion is recorded, so every
        file is in storage by the time finalize runs — whichever host scored it. Only new or
        changed files are uploaded; the merged output's name is left to finalize. A file
        whose name is not a plain relative path (_check_output_name) is not uploaded and
        raises ScriptOutputRefused once the others are, as does a folder of more than
        MAX_SCRIPT_OUTPUT_FILES files (before any upload). Uploads are create-only: a file
        already in storage is never replaced, unless it is the very blob this process wrote
        (ETag-conditional), or holds the same bytes (a redelivered mini-batch); anything
        else raises ScriptOutputExists.
        """
        folder = self.runtime.job_output_dir(job.id)
        merged = job.settings.output_file_name if job.settings.output_action == "append_row" \
            else None
        # worker_files leaves links out; the walk stops past the cap.
        files = list(itertools.islice(worker_files(folder), MAX_SCRIPT_OUTPUT_FILES + 1))
        if len(files) > MAX_SCRIPT_OUTPUT_FILES:
            raise ScriptOutputRefused(
                f"the script wrote more than {MAX_SCRIPT_OUTPUT_FILES:,} files to "
                "AZUREML_BI_OUTPUT_PATH for this job; write fewer, larger files")
        changed = []
        for relative, stat in sorted(files):
            signature = (stat.st_size, stat.st_mtime_ns)
            key = (job.id, relative)
            with self._lock:
                sent = self._uploaded.get(key)
            if relative == merged or (sent is not None and sent[0] == signature):
                continue
            changed.append((relative, key, signature, sent))
        if not changed:
            return
        container = self.store.service.get_container_client(job.output.container)
        self.store.ensure_output_container(job.output.container)
        refused: list[ScriptOutputRefused] = []
        for relative, key, signature, sent in changed:
            try:
                _check_output_name(job, relative)
                blob = container.get_blob_client(job.output.child(relative).path)
                etag = _upload_script_output(blob, folder, relative,
                                             None if sent is None else sent[1], job.id)
            except (UnsafeWorkerFile, FileNotFoundError) as exc:
                log.warning("job %s: script output %s not uploaded: %s", job.id, relative, exc)
                continue
            except ScriptOutputRefused as exc:
                # Blamed on this mini-batch once, not on every later one of this process.
                etag = None
                refused.append(exc)
            with self._lock:
                self._uploaded[key] = (signature, etag)
        if refused:
            raise refused[0]

    def _record_not_started(self, job_id: str, message: MiniBatchMessage,
                            planned: PlannedBatch) -> WorkResult:
        """Record a mini-batch a host did not start because the job's deadline had passed."""
        inputs = sum(p.rows for p in planned.pieces) if planned.pieces else len(planned.files)
        self.ledger.record(job_id, Completion(
            message.index, False, 0, 0, 0, at=utc_now(), host=self.logs.host,
            copy=message.copy, not_started=inputs))
        return WorkResult("skipped", "the job's deadline has passed")

    def _record_success(self, job: JobRecord, batch: MiniBatch, outcome: ScoringOutcome,
                        stamp: _Stamp) -> None:
        """Record a scored mini-batch: its part, and the inputs that failed in it."""
        error = None
        failures = list(outcome.failures)
        reported = _counted(batch, outcome)
        gap = outcome.failed - reported
        if gap > 0:
            # run() returned fewer rows than the inputs it was given (and did not say which).
            unit = "rows" if batch.pieces else "files"
            error = (f"run() returned {outcome.rows} rows for {batch.inputs - reported} "
                     f"{unit}: {gap} counted as failed")
            failures += _short_return(batch, outcome, error)
        if failures:
            status = MISSING_ROWS if not outcome.failures else INPUT_FAILED
            summary = error or (f"{outcome.failed} of {batch.inputs} "
                                f"{'rows' if batch.pieces else 'files'} failed: "
                                f"{failures[0].error}")
            write_record(self.store.state, job.id, outcome.index, attempts=outcome.attempt,
                         status=status, error=summary, traceback=None, inputs=failures,
                         unlisted=outcome.unlisted)
            error = summary
        completion = Completion(outcome.index, True, outcome.succeeded, outcome.failed,
                                outcome.rows, error, utc_now(), host=self.logs.host,
                                copy=stamp.copy, scoring_ms=stamp.scoring_ms,
                                usage=stamp.usage)
        if job.settings.output_action == "append_row" and outcome.part is not None:
            completion = with_part(self.store.state, job.id, completion,
                                   Part(outcome.part.data, outcome.part.header))
        self.ledger.record(job.id, completion)

    def _record_failure(self, job_id: str, index: int, planned: PlannedBatch,
                        attempts: int, status: str, error: str, traceback: str | None,
                        stamp: _Stamp | None = None) -> None:
        rows = [(p.first_row, p.rows) for p in planned.pieces]
        files = [p.file for p in planned.pieces] if planned.pieces else planned.files
        write_record(self.store.state, job_id, index, attempts=attempts, status=status,
                     error=error, traceback=readable_traceback(traceback),
                     inputs=whole(files, error, rows))
        inputs = sum(rows for _, rows in rows) if rows else len(planned.files)
        stamp = stamp or _Stamp()
        self.ledger.record(job_id, Completion(index, False, 0, inputs, 0, error, utc_now(),
                                              host=self.logs.host, copy=stamp.copy,
                                              scoring_ms=stamp.scoring_ms, usage=stamp.usage))

    def _write_failed_log(self, job_id: str, index: int, attempt: int,
                          outcome: ScoringOutcome) -> None:
        # The runtime's log already holds the script's traceback.
        text = (outcome.log or "") + (f"\n[batchfn] attempt {attempt} {outcome.status}: "
                                      f"{outcome.error}\n")
        self.logs.write_failed(job_id, index, attempt, text)


def _check_output_name(job: JobRecord, name: str) -> None:
    """Raise ScriptOutputRefused unless `name` (a file the script wrote) is a plain name
    inside the job's output folder.

    Storage reads a backslash as `/` and resolves `..` segments, so a file named
    `..\\other-job\\x` would land outside the folder: names follow the rules of job
    locations (no backslash, no `.`, `..`, empty or dot-ended segments, no control
    characters), and the blob name they make stays within storage's limits.
    """
    problem = relative_path_problem(name, allow_dot_ended=False)
    blob_name = job.output.child(name).path
    if problem is None and (len(blob_name) > MAX_BLOB_NAME
                            or blob_name.count("/") >= MAX_BLOB_SEGMENTS):
        problem = (f"makes a blob name longer than {MAX_BLOB_NAME} characters or "
                   f"{MAX_BLOB_SEGMENTS} segments")
    if problem is not None:
        raise ScriptOutputRefused(
            f"the script wrote a file named {shown(name)} to AZUREML_BI_OUTPUT_PATH that "
            f"was not uploaded: its name {problem}; output file names must be plain "
            "relative paths inside the folder")


def _upload_script_output(blob: BlobClient, folder: Path, relative: str,
                          own_etag: str | None, job_id: str) -> str:
    """Upload one script output file without replacing anything this process did not write;
    returns the blob's ETag. The file is opened link-proof (open_worker_file), twice: once
    to hash it, once to send it. Its metadata names the job (layout.JOB_METADATA_KEY)."""
    md5 = hashlib.md5(usedforsecurity=False)
    with open_worker_file(folder, relative) as data:
        while chunk := data.read(_HASH_CHUNK):
            md5.update(chunk)
    settings = ContentSettings(content_md5=bytearray(md5.digest()))
    try:
        with open_worker_file(folder, relative) as data:
            metadata = {JOB_METADATA_KEY: job_id}
            if own_etag is None:
                written = blob.upload_blob(data, overwrite=False, content_settings=settings,
                                           metadata=metadata)
            else:
                written = blob.upload_blob(data, overwrite=True, content_settings=settings,
                                           metadata=metadata, etag=own_etag,
                                           match_condition=MatchConditions.IfNotModified)
        return written["etag"]
    except (ResourceExistsError, ResourceModifiedError):
        properties = blob.get_blob_properties()
        stored = properties.content_settings.content_md5
        if stored and bytes(stored) == md5.digest():
            return properties.etag  # the same bytes: a redelivered mini-batch wrote it
        raise ScriptOutputExists(
            f"the script wrote {relative!r}, but {blob.container_name}/{blob.blob_name} "
            "already exists with other content; batchfn never replaces a file it did not "
            "write (use a new output_path, or file names unique to each mini-batch)") from None


def _counted(batch: MiniBatch, outcome: ScoringOutcome) -> int:
    """The failed inputs the worker reported (rows, or files of the batch)."""
    if batch.pieces:
        return sum(f.rows for f in outcome.failures) + outcome.unlisted
    return len({f.file for f in outcome.failures} & set(batch.files)) + outcome.unlisted


def _short_return(batch: MiniBatch, outcome: ScoringOutcome, error: str) -> list[InputFailure]:
    """What a short return failed: the files it left out (when a column of file names shows
    which), else every input of the batch, each with the gap in the message."""
    if batch.pieces:
        return whole([p.file for p in batch.pieces], error,
                     [(p.first_row, p.rows) for p in batch.pieces])
    return whole(outcome.missing or batch.files, error)

