"""Planning: list a job's input, write mini-batch manifests, create ledgers, fan out messages.

A small job (a listing of at most SMALL_JOB_BATCHES mini-batches of files) is planned in
the invoke request itself (`start_state`), which saves the orchestration its planning
activity, a round trip through the task hub's queues; any other job is planned in an
activity, outside the request. The listing is streamed: files (or, for
a tabular job, row ranges found by scanning each file, see shared/worker/tabular/split.py) fill a
manifest chunk, and each chunk is written as soon as it is full, so the planner holds one
chunk whatever the input's size. Once the listing ends, the totals (plan.json,
progress.json) are written and one small message per mini-batch goes out. A job whose
input has more files, rows or mini-batches than the operator's caps (app settings) fails
with the reason before any message is sent; a parquet file's footer is a claim, so the rows
it claims count against the caps before any of its ranges is planned (and the workers
check each range's rows as they read them).

Every step is idempotent, so a planner that crashed and runs again writes the same
manifests and re-sends messages that the ledger then deduplicates.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import posixpath
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.contract import layout
from shared.contract.errors import InputUnreadable, InvalidRequest, NotFound
from shared.contract.job_records import INPUT_FAILED_FILES, INPUT_FILE, JobRecord, JobStatus
from shared.contract.ledger import Completion, shard_of
from shared.contract.manifest import (
    MANIFEST_ITEMS,
    InputFile,
    ManifestChunk,
    PlannedBatch,
    RowPiece,
)
from shared.contract.messages import MiniBatchMessage
from shared.control.blob_drop import is_drop_control_file
from shared.control.event_sinks import EventSink, default_sink
from shared.control.finalize import ensure_usage_report
from shared.control.lifecycle import record_events
from shared.control.orchestrator import OrchestrationState, PlanResult
from shared.control.progress import Progress
from shared.storage.failure_records import UNPLANNED, InputFailure, write_record
from shared.storage.job_store import JobStore
from shared.storage.ledger_blobs import create_ledger, record_completion
from shared.storage.queue_clients import job_queue, send
from shared.worker.input_errors import UnsplittableInput
from shared.worker.tabular.formats import check_splittable, is_data_file

log = logging.getLogger(__name__)

MAX_PIECES_PER_BATCH = 1000  # files one tabular mini-batch reads at most
_SEND_THREADS = 16
_SENDS_WAITING = 4096  # messages submitted ahead of the sends at most: memory stays bounded
# Operator caps (app settings of the control app): a larger input fails its job.
MAX_FILES_SETTING = "BATCHFN_MAX_FILES_PER_JOB"
MAX_ROWS_SETTING = "BATCHFN_MAX_ROWS_PER_JOB"
MAX_BATCHES_SETTING = "BATCHFN_MAX_MINI_BATCHES_PER_JOB"
DEFAULT_MAX_FILES = 1_000_000
DEFAULT_MAX_ROWS = 1_000_000_000
DEFAULT_MAX_BATCHES = 1_000_000
SMALL_JOB_BATCHES = 16  # a job of files this short is planned in the invoke request


@dataclass(frozen=True)
class Plan:
    """plan.json: the job's `inputs` (files, or rows of a tabular job) and mini-batches."""

    unit: str
    inputs: int
    batches: int
    chunks: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ListedFile:
    """One file of the input, with the size and ETag a tabular job plans against."""

    file: InputFile
    size: int = 0
    etag: str | None = None


@dataclass(frozen=True)
class JobCaps:
    """The operator's caps on one job's input (app settings of the control app)."""

    files: int = DEFAULT_MAX_FILES
    rows: int = DEFAULT_MAX_ROWS
    batches: int = DEFAULT_MAX_BATCHES

    @classmethod
    def from_settings(cls, env: Mapping[str, str] | None = None) -> JobCaps:
        """The caps the app settings give (a default for each one unset); ValueError for a
        setting that is not a whole number > 0."""
        env = os.environ if env is None else env
        return cls(files=_cap(MAX_FILES_SETTING, env.get(MAX_FILES_SETTING), DEFAULT_MAX_FILES),
                   rows=_cap(MAX_ROWS_SETTING, env.get(MAX_ROWS_SETTING), DEFAULT_MAX_ROWS),
                   batches=_cap(MAX_BATCHES_SETTING, env.get(MAX_BATCHES_SETTING),
                                DEFAULT_MAX_BATCHES))


def _cap(setting: str, text: str | None, default: int) -> int:
    text = (text or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0  # refused below, with the setting's name
    if value < 1:
        raise ValueError(f"{setting} must be a positive whole number, not {text!r}")
    return value


def start_state(store: JobStore, queue: QueueClient, job_id: str) -> OrchestrationState:
    """The orchestration input of a job just created: planned already when it is small
    (see plan_small_job), else to be planned by the orchestration. Never raises: a job
    that could not be planned here is planned there (planning is idempotent)."""
    try:
        planned = plan_small_job(store, queue, job_id)
    except (AzureError, InputUnreadable, NotFound) as exc:
        log.info("job %s: planned by its orchestration (%s)", job_id, exc)
        planned = None
    return OrchestrationState(planned=planned is not None)


def plan_small_job(store: JobStore, queue: QueueClient, job_id: str) -> PlanResult | None:
    """Plan `job_id` now if its input is files that make at most SMALL_JOB_BATCHES
    mini-batches (one listing call tells); None, with nothing written, for any other job."""
    job = store.get(job_id)
    if (job.status != JobStatus.NOT_STARTED or job.settings.tabular
            or job.input.kind == INPUT_FAILED_FILES):
        return None
    limit = SMALL_JOB_BATCHES * job.settings.mini_batch_size
    listed = list(itertools.islice(_listed_files(store, job), limit + 1))
    if len(listed) > limit:
        return None
    # Its `created` event goes out with the orchestration's first check (lifecycle events
    # follow the job record, whichever path planned it): the invoke does not wait on a sink.
    return _plan(store, queue, job, iter(listed))


def plan_job(store: JobStore, queue: QueueClient, job_id: str,
             events: EventSink | None = None) -> PlanResult:
    """Plan and fan out `job_id`; a job whose input cannot be planned is Failed with the
    reason, which the result carries too. The job's `created` event goes out first (to
    `events`, the app's sink by default)."""
    sink = events or default_sink(store.account)
    job = store.get(job_id)
    pending = record_events(store, sink, job, None)
    if job.status in JobStatus.STOPPED:
        return PlanResult(ok=True, skipped=job.status, events_pending=pending)
    return _plan(store, queue, job, _listed_files(store, job), sink, pending)


def _plan(store: JobStore, queue: QueueClient, job: JobRecord, listed: Iterator[ListedFile],
          sink: EventSink | None = None, pending: bool = False) -> PlanResult:
    """Plan `job` from its `listed` inputs; `pending`: its events wait for delivery (a job
    that cannot be planned records its end on `sink`, the app's by default)."""
    job_id = job.id
    caps = JobCaps.from_settings()
    writer = _PlanWriter(store, job_queue(store.account, queue, job.compute.queue), job,
                         caps.batches)
    try:
        with writer:
            if job.settings.tabular:
                _plan_rows(writer, job, listed, caps)
            else:
                _plan_files(writer, job, listed, caps.files)
    except (InputUnreadable, InvalidRequest) as exc:
        reason = str(exc)
        failed = store.update(job_id, lambda j: None if j.status in JobStatus.TERMINAL
                              else j.with_status(JobStatus.FAILED, reason=reason))
        pending = record_events(store, sink or default_sink(store.account), failed, None,
                                ensure_usage_report(store, failed, None))
        return PlanResult(ok=False, reason=reason, events_pending=pending)
    except _Stopped as stopped:
        return PlanResult(ok=True, skipped=str(stopped), events_pending=pending)
    plan = writer.plan
    warning = None
    if not plan.batches:
        warning = ("the input folder has no files: the job completes with zero rows"
                   if plan.unit == "files" else "the input has no rows: the job completes "
                   "with zero rows")

    def queued(current: JobRecord) -> JobRecord | None:
        if current.status != JobStatus.NOT_STARTED:
            return None
        updated = current.with_status(JobStatus.QUEUED)
        if warning:
            updated = replace(updated, warnings=(warning,))
        return updated

    store.update(job_id, queued)
    return PlanResult(ok=True, inputs=plan.inputs, batches=plan.batches, events_pending=pending)


def _plan_files(writer: _PlanWriter, job: JobRecord, listed: Iterator[ListedFile],
                cap: int) -> None:
    size = job.settings.mini_batch_size
    batch: list[InputFile] = []
    for count, item in enumerate(listed, 1):
        if count > cap:
            raise _too_large(job, "files", cap, MAX_FILES_SETTING)
        batch.append(item.file)
        if len(batch) == size:
            writer.add(PlannedBatch(tuple(batch)), len(batch))
            batch = []
    if batch:
        writer.add(PlannedBatch(tuple(batch)), len(batch))


def _plan_rows(writer: _PlanWriter, job: JobRecord, listed: Iterator[ListedFile],
               caps: JobCaps) -> None:
    from shared.worker.input_errors import InputChanged
    from shared.worker.tabular.formats import PARQUET
    from shared.worker.tabular.sources import BlobSource
    from shared.worker.tabular.split import RowBatcher, iter_ranges, parquet_rows

    settings = job.settings
    batcher: RowBatcher[ListedFile] = RowBatcher(settings.mini_batch_size, MAX_PIECES_PER_BATCH)
    file_cap, row_cap = caps.files, caps.rows
    rows = files = 0

    def add(batch) -> None:  # noqa: ANN001 - a tuple of RangePiece[ListedFile]
        pieces = tuple(RowPiece(p.file.file, p.file.size, p.file.etag,
                                tuple(p.range.to_list())) for p in batch)
        writer.add(PlannedBatch(tuple(dict.fromkeys(p.file for p in pieces)), pieces),
                   sum(p.rows for p in pieces))

    folder = job.input.kind != INPUT_FILE
    for item in listed:
        if folder and not is_data_file(item.file.blob_name):
            continue  # markers and metadata (_SUCCESS, .crc files) beside the data
        files += 1
        if files > file_cap:
            raise _too_large(job, "files", file_cap, MAX_FILES_SETTING)
        planned = 0
        try:
            check_splittable(item.file.display_name)
            source = BlobSource(writer.blob(item.file), size=item.size, etag=item.etag)
            claimed = None
            if settings.input_format == PARQUET:
                claimed = parquet_rows(source)
                if rows + claimed > row_cap:
                    raise _too_large(job, "rows", row_cap, MAX_ROWS_SETTING)
                writer.check_room(-(-claimed // settings.mini_batch_size))
            for row_range in iter_ranges(source, settings.input_format,
                                         settings.mini_batch_size,
                                         first_range_rows=batcher.room,
                                         parquet_rows_known=claimed):
                rows += row_range.rows
                if rows > row_cap:
                    raise _too_large(job, "rows", row_cap, MAX_ROWS_SETTING)
                planned += row_range.rows
                for batch in batcher.add(item, (row_range,)):
                    add(batch)
        except (UnsplittableInput, InputChanged) as exc:
            reason = exc.reason if isinstance(exc, UnsplittableInput) else str(exc)
            if planned:
                reason = f"rows from {planned} on: {reason}"
            writer.fail_file(item.file, reason, row=planned if planned else None)
    last = batcher.finish()
    if last:
        add(last)


def _too_large(job: JobRecord, unit: str, cap: int, setting: str) -> InvalidRequest:
    verb = "makes" if unit == "mini-batches" else "has"
    return InvalidRequest(f"the input {job.input.uri} {verb} more than {cap:,} {unit}, the "
                          f"most one job may have (app setting {setting}): split it into "
                          "several jobs" + (", or use a larger mini_batch_size"
                                            if unit == "mini-batches" else ""),
                          code="input_too_large")


class _Stopped(Exception):
    """The job was canceled (or ended) while it was being planned."""


class _PlanWriter:
    """Fills manifest chunks with mini-batches and writes each chunk as soon as it is full.

    Leaving the `with` block after a clean listing writes the last chunk and the ledger
    shards, sends one message per mini-batch on threads, then writes the totals. Messages
    wait for the end of the listing so that planning keeps the host to itself: scoring that started
    early would stretch a long listing, and the planning activity with it.
    """

    def __init__(self, store: JobStore, queue: QueueClient, job: JobRecord,
                 max_batches: int) -> None:
        self.store = store
        self.queue = queue
        self.job = job
        self.unit = "rows" if job.settings.tabular else "files"
        self._chunk: list[PlannedBatch] = []
        self._chunk_items = 0
        self._chunks: list[tuple[int, int]] = []  # (first index, mini-batches) per chunk
        self._unplanned: set[int] = set()  # mini-batches of files that failed at planning
        self._next_index = 0  # index of the chunk's first mini-batch, then of the next one
        self._inputs = 0
        self._shards = 0  # ledger shards created so far
        self._containers: dict[str, Any] = {}
        self._max_batches = max_batches
        self.plan = Plan(self.unit, 0, 0, 0)

    def __enter__(self) -> _PlanWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self._flush()
            self._ensure_shards(max(self._next_index, 1) - 1)  # an empty job has one too
            # Scoring needs the manifests and ledgers only: the totals are written while the
            # first messages are taken (a crash before them replans; duplicates are harmless).
            self._send_messages()
            self._write_totals()

    def blob(self, file: InputFile):  # noqa: ANN201 - a BlobClient
        """The blob client of an input file (for the tabular scan)."""
        container = self._containers.get(file.container)
        if container is None:
            container = self.store.service.get_container_client(file.container)
            self._containers[file.container] = container
        return container.get_blob_client(file.blob_name)

    def check_room(self, batches: int) -> None:
        """Raise input_too_large unless `batches` more mini-batches fit under the cap."""
        if self._next_index + len(self._chunk) + batches > self._max_batches:
            raise _too_large(self.job, "mini-batches", self._max_batches, MAX_BATCHES_SETTING)

    def add(self, batch: PlannedBatch, inputs: int) -> None:
        """Add one mini-batch of `inputs` files or rows (input_too_large past the cap)."""
        self.check_room(1)
        items = len(batch.pieces) or len(batch.files)
        if self._chunk and self._chunk_items + items > MANIFEST_ITEMS:
            self._flush()
        self._chunk.append(batch)
        self._chunk_items += items
        self._inputs += inputs

    def fail_file(self, file: InputFile, reason: str, row: int | None) -> None:
        """Record a file that cannot be planned: a mini-batch of its own, failed at once.

        It counts as one failed input (its rows are unknown) and is listed in the errors
        report; no message is sent for it.
        """
        index = self._next_index + len(self._chunk)
        self._ensure_shards(index)
        error = f"cannot split {file.display_name} into rows: {reason}"
        write_record(self.store.state, self.job.id, index, attempts=0, status=UNPLANNED,
                     error=error, traceback=None, inputs=[InputFailure(file, error, row)])
        record_completion(self.store.state, self.job.id, Completion(
            index, False, 0, 1, 0, f"{file.display_name}: {reason}"))
        log.info("job %s: %s cannot be planned: %s", self.job.id, file.display_name, reason)
        self._unplanned.add(index)
        self.add(PlannedBatch(()), 1)

    def _flush(self) -> None:
        if not self._chunk:
            return
        self._check_still_wanted()
        first = self._next_index
        self.store.write_manifest(self.job.id, len(self._chunks),
                                  ManifestChunk(first, tuple(self._chunk)))
        self._chunks.append((first, len(self._chunk)))
        self._next_index += len(self._chunk)
        self._chunk, self._chunk_items = [], 0

    def _check_still_wanted(self) -> None:
        """Stop planning a job that was canceled or ended meanwhile (one read per chunk)."""
        if not self._chunks:
            return
        try:
            status = self.store.get(self.job.id).status
        except NotFound:
            raise _Stopped("job deleted") from None
        if status in JobStatus.STOPPED:
            raise _Stopped(status)

    def _ensure_shards(self, last_index: int) -> None:
        """Create the ledger shards up to the one of mini-batch `last_index`."""
        while self._shards <= shard_of(last_index):
            create_ledger(self.store.state, self.job.id, self._shards)
            self._shards += 1

    def _write_totals(self) -> None:
        batches = self._next_index
        self.plan = Plan(self.unit, self._inputs, batches, len(self._chunks))
        self.store.write_json(layout.plan(self.job.id), self.plan.to_dict())
        body = json.dumps(Progress.start(self._inputs, batches, self.unit).to_dict()).encode()
        try:  # a replanned job keeps the progress it has
            self.store.state.upload_blob(layout.progress(self.job.id), body, overwrite=False)
        except ResourceExistsError:
            pass

    def _send_messages(self) -> None:
        """One message per mini-batch (a few dozen bytes each: the files stay in manifests),
        _SEND_THREADS at a time; messages are made as they are sent, not held."""
        messages = (MiniBatchMessage(self.job.id, index, number).encode()
                    for number, (first, count) in enumerate(self._chunks)
                    for index in range(first, first + count) if index not in self._unplanned)
        with ThreadPoolExecutor(_SEND_THREADS, thread_name_prefix="batchfn-plan") as pool:
            for _ in _bounded_map(pool, lambda text: send(self.queue, text), messages,
                                  _SENDS_WAITING):
                pass


def _bounded_map(pool: ThreadPoolExecutor, function: Callable[[str], None],
                 items: Iterable[str], window: int) -> Iterator[None]:
    """`pool.map` that submits at most `window` items ahead of the results (bounded memory);
    the first error is raised."""
    pending: deque[Future[None]] = deque()
    for item in items:
        pending.append(pool.submit(function, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _listed_files(store: JobStore, job: JobRecord) -> Iterator[ListedFile]:
    """The job's input files in a stable order (blob name order for folders), streamed.

    A tabular job gets each file's size and ETag too, from the same listing.
    """
    location = job.input.location
    container = store.service.get_container_client(location.container)
    if job.input.kind == INPUT_FAILED_FILES:
        yield from _failed_files(store, job)
        return
    if job.input.kind == INPUT_FILE:
        try:
            props = container.get_blob_client(location.path).get_blob_properties()
        except ResourceNotFoundError:
            raise InputUnreadable(f"input file {job.input.uri} does not exist") from None
        yield ListedFile(InputFile(location.container, location.path,
                                   posixpath.basename(location.path)), props.size, props.etag)
        return
    prefix = location.folder_prefix
    try:
        if job.settings.tabular:
            listing = ((blob.name, blob.size, blob.etag)
                       for blob in container.list_blobs(name_starts_with=prefix))
        else:
            listing = ((name, 0, None)
                       for name in container.list_blob_names(name_starts_with=prefix))
        for name, size, etag in listing:
            relative = name[len(prefix):]
            if not relative or relative.endswith("/"):
                continue
            if "/" in relative and not job.input.include_subfolders:
                continue
            if is_drop_control_file(location.container, relative):
                continue
            yield ListedFile(InputFile(location.container, name, relative), size, etag)
    except ResourceNotFoundError:
        raise InputUnreadable(
            f"input container {location.container!r} does not exist ({job.input.uri})") from None


def _failed_files(store: JobStore, job: JobRecord) -> Iterator[ListedFile]:
    """The files in the source job's errors report, each once, read chunk by chunk."""
    source_job = job.input.source_job or ""
    try:
        report = store.state.download_blob(layout.errors_report(source_job))
    except ResourceNotFoundError:
        raise InputUnreadable(f"job {source_job!r} has no errors report yet") from None
    seen: set[tuple[str, str]] = set()
    for line in _lines(report.chunks()):
        entry = json.loads(line)
        key = (entry["container"], entry["blob_name"])
        if key in seen or not all(key):
            continue
        seen.add(key)
        file = InputFile(entry["container"], entry["blob_name"], entry["file"])
        if not job.settings.tabular:
            yield ListedFile(file)
            continue
        try:
            props = store.service.get_blob_client(*key).get_blob_properties()
        except ResourceNotFoundError:
            continue  # deleted since: nothing left to rerun
        yield ListedFile(file, props.size, props.etag)


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending
