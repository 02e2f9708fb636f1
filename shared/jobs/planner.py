"""Planning: list a job's input, write mini-batch manifests, create ledgers, fan out messages.

Runs in an activity, never in the invoke request. Every step is idempotent, so a planner
that crashed and runs again re-sends messages that the ledger then deduplicates.
"""

from __future__ import annotations

import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.jobs import paths
from shared.jobs.drop import is_drop_control_file
from shared.jobs.messages import MiniBatchMessage, ensure_queue
from shared.jobs.model import INPUT_FAILED_FILES, INPUT_FILE, JobRecord, JobStatus
from shared.jobs.progress import Progress, create_ledgers
from shared.jobs.store import JobStore
from shared.scoring.batch import InputFile

MANIFEST_FILES = 5000  # files per manifest chunk: one read serves many mini-batches
_SEND_THREADS = 16


class InputUnavailable(Exception):
    """The input folder/file cannot be read (missing container, file or source job)."""


@dataclass(frozen=True)
class Plan:
    files: int
    batches: int
    batches_per_chunk: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def plan_job(store: JobStore, queue: QueueClient, job_id: str) -> dict:
    """Plan and fan out `job_id`; returns {"ok", "files", "batches"} or {"ok": False, reason}."""
    job = store.get(job_id)
    if job.status in JobStatus.STOPPED:
        return {"ok": True, "files": 0, "batches": 0, "skipped": job.status}
    try:
        files = list_input(store, job)
    except InputUnavailable as exc:
        reason = str(exc)
        store.update(job_id, lambda j: None if j.status in JobStatus.TERMINAL
                     else j.with_status(JobStatus.FAILED, reason=reason))
        return {"ok": False, "reason": reason}
    size = job.settings.mini_batch_size
    batches = [files[i:i + size] for i in range(0, len(files), size)]
    per_chunk = max(1, MANIFEST_FILES // size)
    plan = Plan(files=len(files), batches=len(batches), batches_per_chunk=per_chunk)
    chunks = [batches[i:i + per_chunk] for i in range(0, len(batches), per_chunk)]
    with ThreadPoolExecutor(_SEND_THREADS) as pool:
        # Independent writes run together; messages go out once all of them are stored.
        writes = [pool.submit(_write_manifest, store, job_id, number, number * per_chunk, chunk)
                  for number, chunk in enumerate(chunks)]
        writes += [pool.submit(create_ledgers, store.state, job_id, plan.batches),
                   pool.submit(store.write_json, paths.plan(job_id), plan.to_dict()),
                   pool.submit(_start_progress, store, job_id, plan)]
        for write in writes:
            write.result()
        messages = [MiniBatchMessage(job_id, index, index // per_chunk).encode()
                    for index in range(plan.batches)]
        list(pool.map(lambda text: _send(queue, text), messages))
    warning = "the input folder has no files: the job completes with zero rows" \
        if not files else None

    def queued(current: JobRecord) -> JobRecord | None:
        if current.status != JobStatus.NOT_STARTED:
            return None
        updated = current.with_status(JobStatus.QUEUED)
        if warning:
            updated = replace(updated, warnings=(warning,))
        return updated

    store.update(job_id, queued)
    return {"ok": True, "files": plan.files, "batches": plan.batches}


def _start_progress(store: JobStore, job_id: str, plan: Plan) -> None:
    """Create progress.json; a replanned job keeps the one it has (create-only write)."""
    body = json.dumps(Progress.start(plan.files, plan.batches).to_dict()).encode()
    try:
        store.state.upload_blob(paths.progress(job_id), body, overwrite=False)
    except ResourceExistsError:
        pass


def _send(queue: QueueClient, text: str) -> None:
    try:
        queue.send_message(text)
    except ResourceNotFoundError:
        # The Functions host polls a missing queue as an empty one and never creates it.
        ensure_queue(queue)
        queue.send_message(text)


def list_input(store: JobStore, job: JobRecord) -> list[InputFile]:
    """The job's input files in a stable order (blob name order for folders)."""
    location = job.input.location
    container = store.service.get_container_client(location.container)
    if job.input.kind == INPUT_FAILED_FILES:
        return _failed_files(store, job.input.source_job or "")
    if job.input.kind == INPUT_FILE:
        try:
            container.get_blob_client(location.path).get_blob_properties()
        except ResourceNotFoundError:
            raise InputUnavailable(f"input file {job.input.uri} does not exist") from None
        return [InputFile(location.container, location.path, posixpath.basename(location.path))]
    prefix = location.folder_prefix
    files = []
    try:
        for name in container.list_blob_names(name_starts_with=prefix):
            relative = name[len(prefix):]
            if not relative or relative.endswith("/"):
                continue
            if "/" in relative and not job.input.include_subfolders:
                continue
            if is_drop_control_file(location.container, relative):
                continue
            files.append(InputFile(location.container, name, relative))
    except ResourceNotFoundError:
        raise InputUnavailable(
            f"input container {location.container!r} does not exist ({job.input.uri})") from None
    return files


def _failed_files(store: JobStore, source_job: str) -> list[InputFile]:
    report = store.state.get_blob_client(paths.errors_report(source_job))
    try:
        lines = report.download_blob().readall().splitlines()
    except ResourceNotFoundError:
        raise InputUnavailable(f"job {source_job!r} has no errors report yet") from None
    seen = set()
    files = []
    for line in lines:
        entry = json.loads(line)
        key = (entry["container"], entry["blob_name"])
        if key not in seen:
            seen.add(key)
            files.append(InputFile(entry["container"], entry["blob_name"], entry["file"]))
    return files


def _write_manifest(store: JobStore, job_id: str, chunk: int, first_index: int,
                    batches: list[list[InputFile]]) -> None:
    body = {"first": first_index,
            "batches": [[[f.container, f.blob_name, f.display_name] for f in batch]
                        for batch in batches]}
    store.write_json(paths.manifest(job_id, chunk), body)


@dataclass(frozen=True)
class ManifestChunk:
    """Consecutive mini-batches starting at `first_index`."""

    first_index: int
    batches: tuple[tuple[InputFile, ...], ...]

    def files(self, index: int) -> tuple[InputFile, ...]:
        offset = index - self.first_index
        if not 0 <= offset < len(self.batches):
            raise InputUnavailable(f"mini-batch {index} is not in this manifest chunk")
        return self.batches[offset]


def read_manifest(store: JobStore, job_id: str, chunk: int) -> ManifestChunk:
    """One manifest chunk of `job_id`."""
    body = store.read_json(paths.manifest(job_id, chunk))
    if body is None:
        raise InputUnavailable(f"manifest chunk {chunk} of job {job_id!r} is missing")
    return ManifestChunk(body["first"], tuple(tuple(InputFile(*entry) for entry in batch)
                                              for batch in body["batches"]))
