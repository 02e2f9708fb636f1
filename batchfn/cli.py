"""`batchfn`: the command line, mirroring `az ml batch-endpoint|batch-deployment|job`.

Every command takes the target options (`--url`, `--key`) and the output options
(`--query`, `-o`), before or after the command name, as `az` does. Commands of other
modules attach to the groups defined here (`batch_endpoint`, `batch_deployment`, `job`)
and use `get_client()`, `emit()` and `parse_sets()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
import yaml

from batchfn.client import ApiError, BatchfnClient, local_checks
from batchfn.output import OUTPUT_FORMATS, QueryError, render
from shared.deployment_spec import LEGACY_SETTING_KEYS, load_document

_OPTIONS_KEY = "batchfn.options"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # Options may be given on the root and on the command; the one given last wins.
    if value is not None:
        ctx.meta.setdefault(_OPTIONS_KEY, {})[param.name] = value
    return value


_TARGET_OPTIONS = (
    click.option("--url", default=None, expose_value=False, callback=_remember,
                 help="API base URL (default: BATCHFN_URL, else the local devhost "
                      "http://127.0.0.1:7071)."),
    click.option("--key", default=None, expose_value=False, callback=_remember,
                 help="Function key (default: BATCHFN_KEY, else the local devhost's key)."),
    click.option("--query", default=None, expose_value=False, callback=_remember,
                 help="JMESPath query applied to the result, as in az."),
    click.option("-o", "--output", default=None, expose_value=False, callback=_remember,
                 type=click.Choice(OUTPUT_FORMATS), help="Output format (default json)."),
)


def _with_target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_TARGET_OPTIONS):
        command = option(command)
    return command


class BatchfnGroup(click.Group):
    """A group whose commands all take the target and output options."""

    group_class = type  # sub-groups are BatchfnGroups too

    def command(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return super().command()(_with_target_options(args[0]))
        make = super().command(*args, **kwargs)
        return lambda function: make(_with_target_options(function))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ApiError, QueryError) as exc:
            raise click.ClickException(str(exc)) from None


def options() -> dict[str, Any]:
    """The target and output options given on the command line."""
    return click.get_current_context().meta.get(_OPTIONS_KEY, {})


def get_client() -> BatchfnClient:
    """A client for the target named by --url/--key (or the environment, or the devhost)."""
    given = options()
    return BatchfnClient(url=given.get("url"), key=given.get("key"))


def emit(data: Any) -> None:
    """Print a result with the --query and -o options applied."""
    given = options()
    text = render(data, given.get("output") or "json", given.get("query"))
    if text:
        click.echo(text)


def parse_sets(values: Iterable[str]) -> dict[str, Any]:
    """`--set a.b=value` pairs as a nested mapping; values are YAML scalars (20, true)."""
    result: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE (e.g. "
                                     "defaults.deployment_name=blue)", param_hint="--set")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)):
            value = raw
        target = result
        *parents, leaf = key.split(".")
        for part in parents:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise click.BadParameter(f"{item!r} conflicts with another --set",
                                         param_hint="--set")
            target = nested
        target[leaf] = value
    return result


def _deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _note_ignored(result: dict[str, Any]) -> None:
    ignored = result.pop("ignored", None)
    if ignored:
        click.echo(f"note: ignored keys batchfn does not use: {', '.join(ignored)}", err=True)


def _confirm(yes: bool, question: str) -> None:
    if not yes and not click.confirm(question, default=False):
        raise click.Abort()


_SET = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                    help="Set a property, e.g. defaults.deployment_name=blue (repeatable).")
_YES = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
_FILE = click.option("--file", "-f", "file", type=click.Path(dir_okay=False),
                     help="endpoint.yml / deployment.yml (Azure ML format).")


@click.group(cls=BatchfnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@_with_target_options
def cli() -> None:
    """batchfn: Azure ML batch endpoints, served by Azure Functions."""


@cli.group("batch-endpoint")
def batch_endpoint() -> None:
    """Manage batch endpoints."""


@cli.group("batch-deployment")
def batch_deployment() -> None:
    """Manage deployments of batch endpoints."""


@cli.group("job")
def job() -> None:
    """Follow and manage batch scoring jobs."""


# ----- batch-endpoint ----------------------------------------------------------------------

@batch_endpoint.command("create")
@_FILE
@click.option("--name", "-n", help="Endpoint name (overrides the file's).")
@_SET
def endpoint_create(file: str | None, name: str | None, sets: tuple[str, ...]) -> None:
    """Create an endpoint from endpoint.yml (or just --name)."""
    client = get_client()
    document = _load(file) if file else {}
    result = client.create_endpoint(document=_deep_merge(document, parse_sets(sets)), name=name)
    _note_ignored(result)
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
@_SET
def endpoint_update(name: str, sets: tuple[str, ...]) -> None:
    """Update an endpoint: --set defaults.deployment_name=D, description=..., tags.K=V."""
    changes = parse_sets(sets)
    if not changes:
        raise click.UsageError("nothing to update: give --set KEY=VALUE")
    emit(get_client().update_endpoint(name, changes))


@batch_endpoint.command("delete")
@click.option("--name", "-n", required=True, help="Endpoint name.")
@_YES
def endpoint_delete(name: str, yes: bool) -> None:
    """Delete an endpoint and all its deployments (its jobs are kept)."""
    _confirm(yes, f"Delete endpoint {name} and all its deployments?")
    emit(get_client().delete_endpoint(name))


# ----- batch-deployment --------------------------------------------------------------------

@batch_deployment.command("create")
@_FILE
@click.option("--endpoint-name", "-e", help="Endpoint name (overrides the file's).")
@click.option("--name", "-n", help="Deployment name (overrides the file's).")
@click.option("--set-default", is_flag=True, help="Make it the endpoint's default deployment.")
@_SET
def deployment_create(file: str | None, endpoint_name: str | None, name: str | None,
                      set_default: bool, sets: tuple[str, ...]) -> None:
    """Create a deployment from deployment.yml: uploads its model and code folders."""
    result = _put_deployment(file, endpoint_name, name, set_default, sets, replace=False)
    _note_ignored(result)
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
@_FILE
@click.option("--name", "-n", help="Deployment name (or the file's).")
@click.option("--endpoint-name", "-e", help="Endpoint name (or the file's).")
@_SET
def deployment_update(file: str | None, name: str | None, endpoint_name: str | None,
                      sets: tuple[str, ...]) -> None:
    """Update a deployment: --set settings.mini_batch_size=20 ..., or --file to replace it."""
    if file:
        result = _put_deployment(file, endpoint_name, name, False, sets, replace=True)
        _note_ignored(result)
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
@_YES
def deployment_delete(name: str, endpoint_name: str, force: bool, yes: bool) -> None:
    """Delete a deployment (its jobs are kept)."""
    _confirm(yes, f"Delete deployment {name} of endpoint {endpoint_name}?")
    emit(get_client().delete_deployment(endpoint_name, name, force=force))


def _put_deployment(file: str | None, endpoint_name: str | None, name: str | None,
                    set_default: bool, sets: tuple[str, ...], *, replace: bool) -> dict[str, Any]:
    if not file:
        raise click.UsageError("give --file deployment.yml")
    client = get_client()
    document = _deep_merge(_load(file), parse_sets(sets))
    return client.create_deployment(document=document, base_dir=Path(file).parent,
                                    endpoint_name=endpoint_name, name=name,
                                    set_default=set_default, replace=replace)


def _load(file: str) -> dict[str, Any]:
    with local_checks():
        return load_document(file)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `batchfn` command."""
    cli.main(args=argv, prog_name="batchfn")


# The job commands attach themselves to the groups above.
from batchfn import job_commands, studio  # noqa: E402, F401
