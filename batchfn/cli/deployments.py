"""`batchfn batch-deployment ...`: create, show, list, update, delete deployments and list
their jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


@click.group("batch-deployment")
def batch_deployment() -> None:
    """Manage deployments of batch endpoints."""


@batch_deployment.command("create")
@FILE
@click.option("--endpoint-name", "-e", help="Endpoint name (overrides the file's).")
@click.option("--name", "-n", help="Deployment name (overrides the file's).")
@click.option("--set-default", is_flag=True, help="Make it the endpoint's default deployment.")
@SET
def deployment_create(file: str | None, endpoint_name: str | None, name: str | None,
                      set_default: bool, sets: tuple[str, ...]) -> None:
    """Create a deployment from deployment.yml: uploads its model and code folders."""
    result = _put_deployment(file, endpoint_name, name, set_default, sets, replace=False)
    note_ignored(result)
    emit(result)


@batch_deployment.command("show")
@click.option("--name", "-n", required=True, help="Deployment name.")
@click.option("--endpoint-name", "-e", required=True, help="Endpoint name.")
def deployment_show(name: str, endpoint_name: str) -> None:
    """Show a deployment."""
    emit(get_client().get_deployment(endpoint_name, name))


@batch_deployment.command("list")
@click.option("--endpoint-name", "-e", required=True, help="Endpoint name.")
def deployment_list(endpoint_name: str) -> None:
    """List the deployments of an endpoint."""
    emit(get_client().list_deployments(endpoint_name))


@batch_deployment.command("update")
@FILE
@click.option("--name", "-n", help="Deployment name (or the file's).")
@click.option("--endpoint-name", "-e", help="Endpoint name (or the file's).")
@SET
def deployment_update(file: str | None, name: str | None, endpoint_name: str | None,
                      sets: tuple[str, ...]) -> None:
    """Update a deployment: --set settings.mini_batch_size=20 ..., or --file to replace it."""
    from batchfn.contract.deployment_spec import LEGACY_SETTING_KEYS

    if file:
        result = _put_deployment(file, endpoint_name, name, False, sets, replace=True)
        note_ignored(result)
        emit(result)
        return
    if not name or not endpoint_name:
        raise click.UsageError("give --name and --endpoint-name (or --file)")
    changes = parse_sets(sets)
    if not changes:
        raise click.UsageError("nothing to update: give --set KEY=VALUE or --file")
    # Azure ML's older files put settings at the top level; accept them the same way here.
    for key in [k for k in changes if k in LEGACY_SETTING_KEYS or k == "output_format"]:
        changes.setdefault("settings", {})[key] = changes.pop(key)
    emit(get_client().update_deployment(endpoint_name, name, changes))


@batch_deployment.command("delete")
@click.option("--name", "-n", required=True, help="Deployment name.")
@click.option("--endpoint-name", "-e", required=True, help="Endpoint name.")
@click.option("--force", is_flag=True,
              help="Delete even the default deployment of an endpoint that has others.")
@YES
def deployment_delete(name: str, endpoint_name: str, force: bool, yes: bool) -> None:
    """Delete a deployment (its jobs are kept)."""
    confirm(yes, f"Delete deployment {name} of endpoint {endpoint_name}?")
    emit(get_client().delete_deployment(endpoint_name, name, force=force))


@batch_deployment.command("list-jobs")
@click.option("--name", "-n", required=True, help="Deployment name.")
@click.option("--endpoint-name", "-e", required=True, help="Endpoint name.")
@click.option("--max-results", "-r", type=click.IntRange(min=1),
              help="Only the newest N jobs (default: all, fetched page by page).")
def deployment_list_jobs(name: str, endpoint_name: str, max_results: int | None) -> None:
    """Jobs of one deployment, newest first."""
    emit(get_client().list_jobs(endpoint_name, name, max_results=max_results))


def _put_deployment(file: str | None, endpoint_name: str | None, name: str | None,
                    set_default: bool, sets: tuple[str, ...], *, replace: bool) -> dict[str, Any]:
    if not file:
        raise click.UsageError("give --file deployment.yml")
    document = deep_merge(load_file(file), parse_sets(sets))
    return get_client().create_deployment(document=document, base_dir=Path(file).parent,
                                          endpoint_name=endpoint_name, name=name,
                                          set_default=set_default, replace=replace)
