"""`batchfn job ...`: follow and manage batch scoring jobs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from batchfn.cli.common import emit, get_client
from batchfn.client import JOB_TERMINAL_STATUSES
from batchfn.output import progress_line


@click.group("job")
def job() -> None:
    """Follow and manage batch scoring jobs."""


@job.command("show")
@click.option("--name", "-n", required=True, help="Job name.")
@click.option("--web", "-w", is_flag=True,
              help="Also open the job's page in batchfn studio (its URL is printed where no "
                   "browser opens).")
def job_show(name: str, web: bool) -> None:
    """Status, files and mini-batches, rate, ETA, output location and error summary."""
    client = get_client()
    emit(client.get_job(name))
    if web:
        from batchfn.cli.studio import open_page

        open_page(client, job=name)


@job.command("list")
@click.option("--endpoint-name", "-e", help="Only jobs of this endpoint.")
@click.option("--status", help="Only jobs in this status (Completed, Failed, Running, ...).")
@click.option("--max-results", "-r", type=click.IntRange(min=1),
              help="Only the newest N jobs (default: all, fetched page by page).")
def job_list(endpoint_name: str | None, status: str | None, max_results: int | None) -> None:
    """Jobs, newest first."""
    emit(get_client().list_jobs(endpoint_name, status=status, max_results=max_results))


@job.command("stream")
@click.option("--name", "-n", required=True, help="Job name.")
@click.option("--poll", default=0.5, show_default=True, help="Seconds between updates.")
def job_stream(name: str, poll: float) -> None:
    """Show a live progress line until the job ends; exit 1 unless it Completed (Failed,
    Canceled or Expired)."""
    interactive = sys.stderr.isatty()
    last = [""]

    def show(current: dict[str, Any]) -> None:
        line = progress_line(current, current["status"] in JOB_TERMINAL_STATUSES)
        if line != last[0]:
            click.echo(("\r" if interactive else "") + line, err=True, nl=not interactive)
            last[0] = line

    final = get_client().wait_job(name, poll=poll, on_progress=show)
    if interactive:
        click.echo("", err=True)
    emit({"name": final["name"], "status": final["status"], "reason": final.get("reason"),
          "output": final.get("output")})
    if final["status"] != "Completed":
        raise SystemExit(1)


@job.command("download")
@click.option("--name", "-n", required=True, help="Job name.")
@click.option("--output-name", default="score", show_default=True,
              help="Named output: score (the merged file and every file the script wrote to "
                   "AZUREML_BI_OUTPUT_PATH) or errors (errors.jsonl).")
@click.option("--download-path", default=".", show_default=True,
              type=click.Path(file_okay=False), help="Folder to save into.")
def job_download(name: str, output_name: str, download_path: str) -> None:
    """Save an output folder to <download-path>/named-outputs/<output-name>/ (as az ml)."""
    path = get_client().download_job_output(name, output_name, download_path)
    emit({"path": str(path),
          "folder": str(Path(download_path) / "named-outputs" / output_name)})


@job.command("cancel")
@click.option("--name", "-n", required=True, help="Job name.")
def job_cancel(name: str) -> None:
    """Cancel a job: CancelRequested now, Canceled once its workers have stopped."""
    emit(get_client().cancel_job(name))


@job.command("rerun")
@click.option("--name", "-n", required=True, help="Job name.")
@click.option("--failed-only", is_flag=True, help="Score only the files that failed.")
@click.option("--job-name", help="Name of the new job (idempotent).")
def job_rerun(name: str, failed_only: bool, job_name: str | None) -> None:
    """Start a new job over the same input (or only its failed files)."""
    emit(get_client().rerun_job(name, failed_only=failed_only, new_name=job_name))


@job.command("events")
@click.option("--name", "-n", required=True, help="Job name.")
@click.option("--watch", is_flag=True,
              help="Print each event (one JSON line) as it happens, until the job ends.")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between reads (--watch).")
def job_events(name: str, watch: bool, poll: float) -> None:
    """The job's lifecycle events (CloudEvents 1.0: created, running, progress, completed,
    failed, canceled, expired), oldest first."""
    client = get_client()
    if not watch:
        emit(client.job_events(name))
        return
    for event in client.watch_job_events(name, poll=poll):
        click.echo(json.dumps(event, separators=(",", ":")))


@job.command("usage")
@click.option("--name", "-n", required=True, help="Job name.")
def job_usage(name: str) -> None:
    """What the job used (wall time, queue wait, scoring and GPU seconds, inputs and bytes,
    rows, storage operations, retries) and an estimate of its cost at list prices."""
    emit(get_client().job_usage(name))


@job.command("errors")
@click.option("--name", "-n", required=True, help="Job name.")
@click.option("--top", type=click.IntRange(min=1), help="Only the first N rows (default: all).")
def job_errors(name: str, top: int | None) -> None:
    """The per-file errors report: file, mini-batch, attempts, error, the traceback's frames
    from your code (the failures so far while the job runs), fetched page by page."""
    emit(get_client().job_errors(name, top))
