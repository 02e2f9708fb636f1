"""`batchfn batch-endpoint ...`: create, show, list, update, delete and invoke endpoints."""

from __future__ import annotations

import click

from batchfn.cli.common import (
    FILE,
    SET,
    YES,
    confirm,
    deep_merge,
    emit,
    get_client,
    load_file,
    note_ignored,
    parse_sets,
)


@click.group("batch-endpoint")
def batch_endpoint() -> None:
    """Manage batch endpoints."""


@batch_endpoint.command("create")
@FILE
@click.option("--name", "-n", help="Endpoint name (overrides the file's).")
@SET
def endpoint_create(file: str | None, name: str | None, sets: tuple[str, ...]) -> None:
    """Create an endpoint from endpoint.yml (or just --name)."""
    client = get_client()
    document = load_file(file) if file else {}
    result = client.create_endpoint(document=deep_merge(document, parse_sets(sets)), name=name)
    note_ignored(result)
    emit(result)


@batch_endpoint.command("show")
@click.option("--name", "-n", required=True, help="Endpoint name.")
def endpoint_show(name: str) -> None:
    """Show an endpoint."""
    emit(get_client().get_endpoint(name))


@batch_endpoint.command("list")
def endpoint_list() -> None:
    """List endpoints."""
    emit(get_client().list_endpoints())


@batch_endpoint.command("update")
@click.option("--name", "-n", required=True, help="Endpoint name.")
@SET
def endpoint_update(name: str, sets: tuple[str, ...]) -> None:
    """Update an endpoint: --set defaults.deployment_name=D, description=..., tags.K=V."""
    changes = parse_sets(sets)
    if not changes:
        raise click.UsageError("nothing to update: give --set KEY=VALUE")
    emit(get_client().update_endpoint(name, changes))


@batch_endpoint.command("delete")
@click.option("--name", "-n", required=True, help="Endpoint name.")
@YES
def endpoint_delete(name: str, yes: bool) -> None:
    """Delete an endpoint and all its deployments (its jobs are kept)."""
    confirm(yes, f"Delete endpoint {name} and all its deployments?")
    emit(get_client().delete_endpoint(name))


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
@click.option("--deadline", metavar="DURATION",
              help="No new mini-batch starts after it (90s, 30m, 2h, 1d, PT2H; at most 7 "
                   "days): the job ends Expired with what was scored.")
@click.option("--set", "sets", multiple=True, metavar="SETTING=VALUE",
              help="Per-job setting, e.g. output_file_name=out.csv, error_threshold=5, "
                   "retry_settings.max_retries=2, retry_settings.timeout=60 (repeatable).")
def endpoint_invoke(name: str, input_: str, input_type: str | None,
                    deployment_name: str | None, job_name: str | None, output_path: str | None,
                    include_subfolders: bool, mini_batch_size: int | None,
                    instance_count: int | None, deadline: str | None,
                    sets: tuple[str, ...]) -> None:
    """Start a batch scoring job on an endpoint (returns at once; see `job stream`)."""
    settings = parse_sets(sets)
    if mini_batch_size is not None:
        settings["mini_batch_size"] = mini_batch_size
    if instance_count is not None:
        settings["instance_count"] = instance_count
    if deadline is not None:
        settings["deadline"] = deadline
    emit(get_client().invoke(
        name, input_, input_type=input_type, deployment_name=deployment_name,
        job_name=job_name, output_path=output_path, include_subfolders=include_subfolders,
        settings=settings))
