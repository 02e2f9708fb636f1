"""The scoring worker's job side: one queue message in, one ledger line (with its part) out.

Storage round trips per mini-batch: the job record and the manifest chunk come from small
per-process caches, so a mini-batch costs its N input downloads (in the worker process) and
one ledger append that carries its encoded rows (plus the host's message delete); only a
part over parts.INLINE_PART_BYTES costs a blob write of its own. A failed attempt's log is
written at once; successful attempts' output is batched (attempt_logs.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from shared.errors import NotFound
from shared.jobs import paths
from shared.jobs.attempt_logs import AttemptLogs
from shared.jobs.messages import MiniBatchMessage
from shared.jobs.model import JobRecord, JobStatus, utc_now
from shared.jobs.parts import restored_completion, with_part
from shared.jobs.planner import ManifestChunk, read_manifest
from shared.jobs.progress import (
    MISSING_ROWS,
    Completion,
    first_completion,
    record_completion,
)
from shared.jobs.store import JobStore
from shared.records import DeploymentRecord
from shared.scoring.batch import SUCCEEDED, InputFile, MiniBatch, ScoringOutcome
from shared.scoring.isolation import UnsafeWorkerFile, open_worker_file, worker_files
from shared.tracebacks import readable_traceback

log = logging.getLogger(__name__)

JOB_CACHE_SECONDS = 2.0  # how stale a worker's view of a job may be (cancel, threshold)
MANIFEST_CACHE_CHUNKS = 16
RETRY_DELAY_SECONDS = 5  # visibility delay of a self-re-enqueued retry, like host.json's


class Runtime(Protocol):
    def score(self, deployment: DeploymentRecord, batch: MiniBatch) -> ScoringOutcome: ...

    def job_output_dir(self, job_id: str) -> Path: ...


class RetryMiniBatch(Exception):
    """This attempt failed and retries remain: let the host redeliver the message."""


@dataclass(frozen=True)
class WorkResult:
    """What the worker did with one message (for logs and tests)."""

    action: str  # scored | retry | requeued | failed | skipped
    detail: str = ""
    ledger_blocks: int | None = None  # the ledger shard's block count after our append


class MiniBatchWorker:
    """Processes mini-batch messages; thread-safe, one per process."""

    def __init__(self, store: JobStore, runtime: Runtime, queue: QueueClient,
                 max_dequeue_count: int = 5, logs: AttemptLogs | None = None) -> None:
        self.store = store
        self.logs = logs or AttemptLogs(store.state)
        self.runtime = runtime
        self.queue = queue
        self.max_dequeue_count = max_dequeue_count
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[float, JobRecord]] = {}
        self._manifests: OrderedDict[tuple[str, int], ManifestChunk] = OrderedDict()
        self._uploaded: dict[tuple[str, str], tuple[int, int]] = {}  # script outputs sent

    def process(self, body: str | bytes, dequeue_count: int) -> WorkResult:
        """Score one message. Raises RetryMiniBatch when the host should retry it."""
        message = MiniBatchMessage.decode(body)
        job = self._job(message.job)
        if job is None:
            return WorkResult("skipped", "job not found")
        if job.status in JobStatus.STOPPED:
            return WorkResult("skipped", f"job is {job.status}")
        files = self._files(message)
        attempt = message.prior_attempts + dequeue_count
        merged = job.settings.output_action == "append_row"
        batch = MiniBatch(job_id=job.id, index=message.index, files=files, attempt=attempt,
                          timeout=job.settings.retry_settings.timeout,
                          output_format=job.settings.output_format if merged else None)
        outcome = self.runtime.score(DeploymentRecord.from_dict(job.deployment_record), batch)
        if outcome.status == SUCCEEDED:
            self.logs.add_succeeded(job.id, message.index, attempt, outcome.log)
            self._upload_script_outputs(job)
            blocks = self._record_success(job, files, outcome)
            return WorkResult("scored", f"{outcome.succeeded} ok, {outcome.failed} failed",
                              blocks)
        self._write_failed_log(job.id, message.index, attempt, outcome)
        if attempt <= job.settings.retry_settings.max_retries:
            if dequeue_count >= self.max_dequeue_count:
                # The host would poison this message after this try: carry on in a new one.
                retry = MiniBatchMessage(message.job, message.index, message.chunk, attempt)
                self.queue.send_message(retry.encode(), visibility_timeout=RETRY_DELAY_SECONDS)
                return WorkResult("requeued", f"attempt {attempt}: {outcome.error}")
            raise RetryMiniBatch(f"job {job.id} mini-batch {message.index} attempt {attempt} "
                                 f"{outcome.status}: {outcome.error}")
        blocks = self._record_failure(job.id, message.index, files, attempt, outcome.status,
                                      outcome.error or outcome.status, outcome.traceback)
        return WorkResult("failed", outcome.error or outcome.status, blocks)

    def record_poison(self, body: str | bytes) -> WorkResult:
        """Record a message the host gave up on (crashes or errors outside run())."""
        message = MiniBatchMessage.decode(body)
        try:
            job = self.store.get(message.job)
        except NotFound:
            return WorkResult("skipped", "job not found")
        state = self.store.state
        recorded = first_completion(state, job.id, message.index)
        if recorded is not None:
            # A delivery recorded it, then failed before the message was completed.
            return WorkResult("skipped", "already recorded")
        restored = restored_completion(state, job.id, message.index, utc_now())
        if restored is not None:
            # Scored with a part blob, but the ledger line was lost: restore it.
            record_completion(state, job.id, replace(restored, host=self.logs.worker))
            return WorkResult("scored", "restored from part")
        files = self._files(message)
        attempts = message.prior_attempts + self.max_dequeue_count
        self._record_failure(job.id, message.index, files, attempts, "poisoned",
                             "the message failed on every delivery (worker crashed or "
                             "storage errors); see the mini-batch logs", None)
        return WorkResult("failed", "poison")

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

    def _files(self, message: MiniBatchMessage) -> tuple[InputFile, ...]:
        key = (message.job, message.chunk)
        with self._lock:
            chunk = self._manifests.get(key)
            if chunk is not None:
                self._manifests.move_to_end(key)
        if chunk is None:
            chunk = read_manifest(self.store, message.job, message.chunk)
            with self._lock:
                self._manifests[key] = chunk
                while len(self._manifests) > MANIFEST_CACHE_CHUNKS:
                    self._manifests.popitem(last=False)
        return chunk.files(message.index)

    def _upload_script_outputs(self, job: JobRecord) -> None:
        """Copy files the script wrote to AZUREML_BI_OUTPUT_PATH into the job's output folder.

        Runs after each successful mini-batch, before its completion is recorded, so every
        file is in storage by the time finalize runs — whichever host scored it. Only new or
        changed files are uploaded; the merged output's name is left to finalize.
        """
        folder = self.runtime.job_output_dir(job.id)
        merged = job.settings.output_file_name if job.settings.output_action == "append_row" \
            else None
        changed = []
        for relative, stat in sorted(worker_files(folder)):  # links are left out
            signature = (stat.st_size, stat.st_mtime_ns)
            key = (job.id, relative)
            with self._lock:
                if relative == merged or self._uploaded.get(key) == signature:
                    continue
            changed.append((relative, key, signature))
        if not changed:
            return
        container = self.store.service.get_container_client(job.output.container)
        self.store.ensure_output_container(job.output.container)
        for relative, key, signature in changed:
            try:
                data = open_worker_file(folder, relative)
            except (UnsafeWorkerFile, FileNotFoundError) as exc:
                log.warning("job %s: script output %s not uploaded: %s", job.id, relative, exc)
                continue
            with data:
                container.upload_blob(job.output.child(relative).path, data, overwrite=True)
            with self._lock:
                self._uploaded[key] = signature

    def _record_success(self, job: JobRecord, files: tuple[InputFile, ...],
                        outcome: ScoringOutcome) -> int:
        error = None
        if outcome.failed:
            error = (f"run() returned {outcome.rows} rows for {len(files)} files: "
                     f"{outcome.failed} counted as failed")
            self._write_failure_record(job.id, outcome.index, outcome.missing or files,
                                       outcome.attempt, MISSING_ROWS, error, None)
        completion = Completion(outcome.index, True, outcome.succeeded, outcome.failed,
                                outcome.rows, error, utc_now(),
                                host=self.logs.worker)
        if job.settings.output_action == "append_row" and outcome.part is not None:
            completion = with_part(self.store.state, job.id, completion, outcome.part)
        return record_completion(self.store.state, job.id, completion)

    def _record_failure(self, job_id: str, index: int, files: tuple[InputFile, ...],
                        attempts: int, status: str, error: str, traceback: str | None) -> int:
        self._write_failure_record(job_id, index, files, attempts, status, error, traceback)
        return record_completion(self.store.state, job_id, Completion(
            index, False, 0, len(files), 0, error, utc_now(), host=self.logs.worker))

    def _write_failure_record(self, job_id: str, index: int, files: tuple[InputFile, ...],
                              attempts: int, status: str, error: str,
                              traceback: str | None) -> None:
        record = {
            "mini_batch": index, "attempts": attempts, "status": status, "error": error,
            "traceback": readable_traceback(traceback),
            "files": [[f.container, f.blob_name, f.display_name] for f in files],
        }
        try:
            self.store.state.upload_blob(paths.failure(job_id, index),
                                         json.dumps(record).encode(), overwrite=False)
        except ResourceExistsError:
            pass

    def _write_failed_log(self, job_id: str, index: int, attempt: int,
                          outcome: ScoringOutcome) -> None:
        # The runtime's log already holds the script's traceback.
        text = (outcome.log or "") + (f"\n[batchfn] attempt {attempt} {outcome.status}: "
                                      f"{outcome.error}\n")
        self.logs.write_failed(job_id, index, attempt, text)


