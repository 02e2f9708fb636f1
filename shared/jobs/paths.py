"""Blob names of a job's internal state in the state container (layout in docs/jobs.md)."""

from __future__ import annotations

JOB_INDEX_PREFIX = "_jobs/"  # one empty blob per job; its metadata makes `job list` one call


def job_record(job_id: str) -> str:
    return f"{job_id}/job.json"


def job_index(job_id: str) -> str:
    return f"{JOB_INDEX_PREFIX}{job_id}"


def plan(job_id: str) -> str:
    return f"{job_id}/plan.json"


def manifest(job_id: str, chunk: int) -> str:
    return f"{job_id}/manifests/{chunk:06d}.json"


def ledger(job_id: str, shard: int) -> str:
    return f"{job_id}/ledger/{shard:04d}"


def progress(job_id: str) -> str:
    return f"{job_id}/progress.json"


def part(job_id: str, index: int) -> str:
    return f"{job_id}/parts/{index:08d}"


def failure(job_id: str, index: int) -> str:
    return f"{job_id}/failures/{index:08d}.json"


def failures_prefix(job_id: str) -> str:
    return f"{job_id}/failures/"


def logs_prefix(job_id: str) -> str:
    return f"{job_id}/logs/"


def attempt_log(job_id: str, index: int, attempt: int) -> str:
    return f"{logs_prefix(job_id)}{index:08d}/attempt-{attempt}.log"


def succeeded_log(job_id: str, worker: str) -> str:
    return f"{logs_prefix(job_id)}succeeded-{worker}.log"


def errors_report(job_id: str) -> str:
    return f"{job_id}/errors.jsonl"
