"""What every CLI command shares: the target and output options, the client they name,
az-style printing, `--set KEY=VALUE` parsing and the common option decorators."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click

from batchfn.client import BatchfnClient
from batchfn.errors import local_checks
from batchfn.output import OUTPUT_FORMATS, render

_OPTIONS_KEY = "batchfn.options"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # Options may be given on the root and on the command; the one given last wins.
    if value is not None:
        ctx.meta.setdefault(_OPTIONS_KEY, {})[param.name] = value
    return value


def _target_options() -> list[click.Option]:
    return [
        click.Option(["--url"], default=None, expose_value=False, callback=_remember,
                     help="API base URL (default: BATCHFN_URL, else the local devhost "
                          "http://127.0.0.1:7071)."),
        click.Option(["--key"], default=None, expose_value=False, callback=_remember,
                     help="Function key (default: BATCHFN_KEY, else the local devhost's key)."),
        click.Option(["--query"], default=None, expose_value=False, callback=_remember,
                     help="JMESPath query applied to the result, as in az."),
        click.Option(["-o", "--output"], default=None, expose_value=False, callback=_remember,
                     type=click.Choice(OUTPUT_FORMATS), help="Output format (default json)."),
    ]


def attach_target_options(command: click.Command) -> click.Command:
    """Give `command` (and, for a group, every command under it) the target options."""
    if not any(param.name == "url" for param in command.params):
        command.params.extend(_target_options())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            attach_target_options(sub)
    return command


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
    if not values:
        return result
    import yaml

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


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def note_ignored(result: dict[str, Any]) -> None:
    """Tell on stderr which fields of a file batchfn accepted but does not use, and why
    (and the API's other notes on what a setting does here)."""
    ignored = result.pop("ignored", None)
    if ignored:
        lines = [f"  {item['field']}: {item['reason']}" for item in ignored]
        click.echo("note: batchfn ignores these fields:\n" + "\n".join(lines), err=True)
    for note in result.pop("notes", None) or ():
        click.echo(f"note: {note}", err=True)


class GreedyOption(click.Option):
    """An option that, like az's `--tags a=1 b=2`, takes every value up to the next option
    (and may be repeated)."""

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            if option is None:
                continue
            plain = option.process

            def process(value: Any, state: Any, plain: Any = plain) -> None:
                values = [value]
                while state.rargs and not state.rargs[0].startswith("-"):
                    values.append(state.rargs.pop(0))
                for item in values:
                    plain(item, state)

            option.process = process


def parse_tags(values: Iterable[str]) -> dict[str, str]:
    """`--tags key=value ...` as a mapping (az's form)."""
    tags: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected key=value", param_hint="--tags")
        tags[key] = value
    return tags


def confirm(yes: bool, question: str) -> None:
    """Ask before a destructive command unless --yes was given."""
    if not yes and not click.confirm(question, default=False):
        raise click.Abort()


def load_file(file: str) -> dict[str, Any]:
    """An endpoint.yml / deployment.yml as a mapping, checked like the API checks it."""
    from batchfn.contract.deployment_spec import load_document

    with local_checks():
        return load_document(file)


SET = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                   help="Set a property, e.g. defaults.deployment_name=blue (repeatable).")
YES = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
FILE = click.option("--file", "-f", "file", type=click.Path(dir_okay=False),
                    help="endpoint.yml / deployment.yml (Azure ML format).")
TAGS = click.option("--tags", "tags", cls=GreedyOption, multiple=True, metavar="KEY=VALUE",
                    help="Tags: key=value pairs, space separated (as in az).")
