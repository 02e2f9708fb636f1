"""CLI job commands: `batch-endpoint invoke`, `batch-deployment list-jobs` and `job ...`."""

from __future__ import annotations

import sys
from typing import Any

import click

from batchfn.cli import batch_deployment, batch_endpoint, emit, get_client, job, parse_sets
from batchfn.job_client import TERMINAL_STATUSES


@batch_endpoint.command("invoke")
@click.option("--name", "-n", required=True, help="Endpoint name.")
@click.option("--input", "input_", required=True,
              help="Storage URL, azureml://datastores/<name>/paths/<path>, or a local "
                   "file/folder (uploaded first).")
@click.option("--input-type", type=click.Choice(["uri_folder", "uri_file"]),
              help="Default: uri_folder (a local file: uri_file).")
@click.option("--deployment-name", "-d", help="Deployment (default: the endpoint's default).")
@click.option("--job-name", help="Job name; invoking again with it returns the same job.")
@click.option("--output-path", help="Folder for the merged output (URL or datastore path).")
@click.option("--include-subfolders", is_flag=True,
              help="Also score files in sub-folders of the input folder.")
@click.option("--mini-batch-size", type=int, help="Files per run() call.")
@click.option("--instance-count", type=int, help="Hosts asked for.")
@click.option("--set", "sets", multiple=True, metavar="SETTING=VALUE",
              help="Per-job setting, e.g. output_file_name=out.csv, error_threshold=5, "
                   "retry_settings.max_retries=2, retry_settings.timeout=60 (repeatable).")
def endpoint_invoke(name: str, input_: str, input_type: str | None,
                    deployment_name: str | None, job_name: str | None, output_path: str | None,
                    include_subfolders: bool, mini_batch_size: int | None,
                    instance_count: int | None, sets: tuple[str, ...]) -> None:
    """Start a batch scoring job on an endpoint (returns at once; see `job stream`)."""
    settings = parse_sets(sets)
    if mini_batch_size is not None:
        settings["mini_batch_size"] = mini_batch_size
    if instance_count is not None:
        settings["instance_count"] = instance_count
    try:
        result = get_client().invoke(
            name, input_, input_type=input_type, deployment_name=deployment_name,
            job_name=job_name, output_path=output_path, include_subfolders=include_subfolders,
            settings=settings)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    emit(result)


@batch_deployment.command("list-jobs")
@click.option("--name", "-n", required=True, help="Deployment name.")
@click.option("--endpoint-name", "-e", required=True, help="Endpoint name.")
def deployment_list_jobs(name: str, endpoint_name: str) -> None:
    """Jobs of one deployment, newest first."""
    emit(get_client().list_jobs(endpoint_name, name))


@job.command("show")
@click.option("--name", "-n", required=True, help="Job name.")
def job_show(name: str) -> None:
    """Status, files and mini-batches, rate, ETA, output location and error summary."""
    emit(get_client().get_job(name))


@job.command("list")
@click.option("--endpoint-name", "-e", help="Only jobs of this endpoint.")
def job_list(endpoint_name: str | None) -> None:
    """All jobs, newest first."""
    emit(get_client().list_jobs(endpoint_name))


@job.command("stream")
@click.option("--name", "-n", required=True, help="Job name.")
@click.option("--poll", default=0.5, show_default=True, help="Seconds between updates.")
def job_stream(name: str, poll: float) -> None:
    """Show a live progress line until the job ends; exit 1 unless it Completed."""
    interactive = sys.stderr.isatty()
    last = [""]

    def show(current: dict[str, Any]) -> None:
        line = progress_line(current)
        if line != last[0]:
            click.echo(("\r" if interactive else "") + line, err=True,
                       nl=not interactive)
            last[0] = line

    final = get_client().wait_job(name, poll=poll, on_progress=show)
    if interactive:
        click.echo("", err=True)
    emit({"name": final["name"], "status": final["status"], "reason": final.get("reason"),
          "output": final.get("output")})
    if final["status"] != "Completed":
        raise SystemExit(1)


def progress_line(current: dict[str, Any]) -> str:
    """`Running [#####.....] 50/100 files, 2 failed, 12.5 files/s, ETA 4s`."""
    progress = current.get("progress") or {}
    files = progress.get("files") or {}
    total = files.get("total", 0)
    done = files.get("succeeded", 0) + files.get("failed", 0)
    width = 20
    filled = int(width * done / total) if total else (width if current["status"] in
                                                          TERMINAL_STATUSES else 0)
    eta = progress.get("eta_seconds")
    return (f"{current['status']:<15} [{'#' * filled}{'.' * (width - filled)}] "
            f"{done}/{total} files, {files.get('failed', 0)} failed, "
            f"{progress.get('rate_files_per_second', 0)} files/s"
            + (f", ETA {eta:.0f}s" if eta else ""))


@job.command("download")
@click.option("--name", "-n", required=True, help="Job name.")
@click.option("--output-name", default="score", show_default=True,
              help="Named output: score (merged file) or errors (errors.jsonl).")
@click.option("--download-path", default=".", show_default=True,
              type=click.Path(file_okay=False), help="Folder to save into.")
def job_download(name: str, output_name: str, download_path: str) -> None:
    """Save an output to <download-path>/named-outputs/<output-name>/<file> (as az ml)."""
    path = get_client().download_job_output(name, output_name, download_path)
    emit({"path": str(path)})


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


@job.command("errors")
@click.option("--name", "-n", required=True, help="Job name.")
def job_errors(name: str) -> None:
    """The per-file errors report: file, mini-batch, attempts, error, the traceback's frames
    from your code (the failures so far while the job runs)."""
    emit(get_client().job_errors(name))
