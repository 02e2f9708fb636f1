"""Job records in blob storage: create-only creation, etag-guarded updates (through
storage.blob_records), a cheap index."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobProperties, BlobServiceClient, ContainerClient

from shared.contract import layout
from shared.contract.errors import InputUnreadable, NotFound
from shared.contract.job_records import JobRecord, check_job_name
from shared.contract.layout import JOBS_CONTAINER, STATE_CONTAINER
from shared.contract.manifest import ManifestChunk
from shared.storage.account import StorageAccount
from shared.storage.blob_records import BlobRecords

# A job record has more writers than a registry record (orchestrator, cancel, rerun).
_UPDATE_ATTEMPTS = 20
INDEX_PAGE_SIZE = 1000  # index blobs one listing request returns
MAX_INDEX_PAGES = 10  # listing requests one page of `job list` makes at most


@dataclass(frozen=True)
class IndexPosition:
    """Where a listing of the job index goes on: the storage page `marker` ("" for the
    first) and the last index blob already listed in it (`after`, "" for none)."""

    marker: str
    after: str


class JobStore:
    """Reads and writes job records and small JSON state blobs of jobs."""

    def __init__(self, account: StorageAccount, service: BlobServiceClient | None = None) -> None:
        self.account = account
        self.service = service or account.blob_service()
        self.state: ContainerClient = self.service.get_container_client(STATE_CONTAINER)
        self._records = BlobRecords(self.state, load=JobRecord.from_dict,
                                    dump=JobRecord.to_dict, what="job",
                                    attempts=_UPDATE_ATTEMPTS)
        self._containers_ready = False
        self._output_containers: set[str] = set()

    def ensure_containers(self) -> None:
        """Create the state and jobs containers once per store (idempotent)."""
        if self._containers_ready:
            return
        for name in (STATE_CONTAINER, JOBS_CONTAINER):
            try:
                self.service.create_container(name)
            except ResourceExistsError:
                pass
        self._containers_ready = True

    def ensure_output_container(self, name: str) -> None:
        """Create an output container on first use in this process (idempotent)."""
        if name in self._output_containers:
            return
        try:
            self.service.create_container(name)
        except ResourceExistsError:
            pass
        self._output_containers.add(name)

    # --- job records -------------------------------------------------------------------

    def create(self, job: JobRecord) -> tuple[JobRecord, bool]:
        """Write `job` only if no job has its id; return (the stored job, created?)."""
        self.ensure_containers()
        if not self._records.create(layout.job_record(job.id), job):
            return self.get(job.id), False
        self._write_index(job)
        return job, True

    def get(self, job_id: str) -> JobRecord:
        """The job `job_id`; NotFound when there is none (or the id cannot be one)."""
        check_job_name(job_id)
        job = self._records.read(layout.job_record(job_id))
        if job is None:
            raise _job_not_found(job_id)
        return job

    def update(self, job_id: str,
               change: Callable[[JobRecord], JobRecord | None]) -> JobRecord:
        """Apply `change` to the stored job under an etag condition, retrying on races.

        `change` returns the new record, or None to leave the job as it is; a job that keeps
        changing under every try raises RecordBusy (409).
        """
        check_job_name(job_id)
        before: list[str] = []

        def tracked(job: JobRecord) -> JobRecord | None:
            before[:] = [job.status]
            return change(job)

        new = self._records.update(layout.job_record(job_id), tracked,
                                   missing=lambda: _job_not_found(job_id))
        if before and new.status != before[0]:
            self._write_index(new)
        return new

    def list_page(self, *, top: int, marker: str = "", after: str = "",
                  endpoint: str | None = None, deployment: str | None = None,
                  status: str | None = None) -> tuple[list[dict[str, str]], IndexPosition | None]:
        """Up to `top` job summaries, newest first (the index's name order), of one
        endpoint, deployment and status if given, from the index page `marker` (a storage
        continuation token; "" for the first) after the index blob `after`; with where the
        next page starts (None: the listing ended). One call reads at most
        MAX_INDEX_PAGES pages of the index, so a rare filter answers fewer rows, not a
        longer wait."""
        self.ensure_containers()
        pages = self.state.list_blobs(name_starts_with=layout.JOB_INDEX_PREFIX,
                                      include=["metadata"],
                                      results_per_page=INDEX_PAGE_SIZE).by_page(
            continuation_token=marker or None)
        rows: list[dict[str, str]] = []
        for number, page in enumerate(pages, 1):
            for blob in page:
                if after and blob.name <= after:
                    continue
                row = self._summary(blob)
                if row is None or (endpoint and row["endpoint_name"] != endpoint) or (
                        deployment and row["deployment_name"] != deployment) or (
                        status and row["status"] != status):
                    continue
                rows.append(row)
                if len(rows) >= top:
                    return rows, IndexPosition(marker, blob.name)
            marker, after = pages.continuation_token or "", ""
            if not marker:
                return rows, None
            if number >= MAX_INDEX_PAGES:
                return rows, IndexPosition(marker, "")
        return rows, None

    def _summary(self, blob: BlobProperties) -> dict[str, str] | None:
        """A job's summary from its index blob (None for an index blob of the older layout,
        `_jobs/<job id>`, which is moved to its newest-first name instead)."""
        meta = blob.metadata or {}
        key, _, name = blob.name[len(layout.JOB_INDEX_PREFIX):].rpartition("/")
        if not key:
            self.state.upload_blob(layout.job_index(name, meta.get("created", "")), b"",
                                   overwrite=True, metadata=meta)
            with contextlib.suppress(ResourceNotFoundError):
                self.state.delete_blob(blob.name)
            return None
        return {"name": name, "endpoint_name": meta.get("endpoint", ""),
                "deployment_name": meta.get("deployment", ""), "status": meta.get("status", ""),
                "created_at": meta.get("created", "")}

    def _write_index(self, job: JobRecord) -> None:
        # Metadata mirrors the record's status; a lost update is repaired by the next one.
        self.state.upload_blob(layout.job_index(job.id, job.created_at), b"", overwrite=True,
                               metadata={
                                   "endpoint": job.endpoint,
                                   "deployment": job.deployment,
                                   "status": job.status,
                                   "created": job.created_at,
                               })

    # --- small JSON state blobs ----------------------------------------------------------

    def read_json(self, blob_name: str) -> Any | None:
        """The JSON content of a state blob, or None when it does not exist."""
        try:
            return json.loads(self.state.download_blob(blob_name).readall())
        except ResourceNotFoundError:
            return None

    def write_json(self, blob_name: str, data: Any) -> None:
        self.state.upload_blob(blob_name, _dumps(data), overwrite=True)

    # --- manifest chunks -----------------------------------------------------------------

    def write_manifest(self, job_id: str, number: int, chunk: ManifestChunk) -> None:
        """Write manifest chunk `number` of `job_id` (a replanned job writes the same)."""
        self.write_json(layout.manifest(job_id, number), chunk.to_dict())

    def read_manifest(self, job_id: str, number: int) -> ManifestChunk:
        """Manifest chunk `number` of `job_id`; InputUnreadable if it is missing."""
        body = self.read_json(layout.manifest(job_id, number))
        if body is None:
            raise InputUnreadable(f"manifest chunk {number} of job {job_id!r} is missing")
        return ManifestChunk.from_dict(body)


def _job_not_found(job_id: str) -> NotFound:
    return NotFound(f"job {job_id!r} not found", code="job_not_found")


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
