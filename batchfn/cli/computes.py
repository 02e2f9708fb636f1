"""`batchfn compute ...`: create, show, list, update and delete computes, as `az ml compute`.

A compute is a scoring pool: `max_instances` caps the scoring hosts its jobs use at once,
`min_instances` is what to keep warm where the platform can, `size` picks the scoring
profile (a T4 or A100 GPU, or CPU). Deployments name one with `compute:`.
"""

from __future__ import annotations

from typing import Any

import click

from batchfn.cli.common import (
    SET,
    TAGS,
    YES,
    confirm,
    deep_merge,
    emit,
    get_client,
    load_file,
    note_ignored,
    parse_sets,
    parse_tags,
)

_COUNT = click.IntRange(0)


def _flags(**given: Any) -> dict[str, Any]:
    return {key: value for key, value in given.items() if value is not None}


@click.group("compute")
def compute() -> None:
    """Manage computes: named scoring pools deployments run on."""


@compute.command("create")
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False),
              help="compute.yml (Azure ML's AmlCompute format); the flags below override it.")
@click.option("--name", "-n", help="Compute name.")
@click.option("--type", "-t", "type_", type=click.Choice(["amlcompute"], case_sensitive=False),
              help="amlcompute (the one type batchfn has).")
@click.option("--size", help="Azure VM size: picks the scoring profile (T4, A100 or CPU).")
@click.option("--min-instances", type=_COUNT, help="Hosts to keep warm (default 0).")
@click.option("--max-instances", type=_COUNT,
              help="Most scoring hosts working on the pool's jobs at once (default 1).")
@click.option("--tier", type=click.Choice(["dedicated", "low_priority"]),
              help="Recorded; batchfn's hosts have no low-priority tier.")
@click.option("--idle-time-before-scale-down", type=_COUNT, help="Seconds (recorded).")
@click.option("--description", "-d", help="Description.")
@TAGS
@SET
def compute_create(file: str | None, name: str | None, type_: str | None, size: str | None,
                   min_instances: int | None, max_instances: int | None, tier: str | None,
                   idle_time_before_scale_down: int | None, description: str | None,
                   tags: tuple[str, ...], sets: tuple[str, ...]) -> None:
    """Create a compute (a scoring pool)."""
    document: dict[str, Any] = load_file(file) if file else {}
    document.update(_flags(type=type_, size=size, min_instances=min_instances,
                           max_instances=max_instances, tier=tier,
                           idle_time_before_scale_down=idle_time_before_scale_down,
                           description=description))
    if tags:
        document["tags"] = {**(document.get("tags") or {}), **parse_tags(tags)}
    result = get_client().create_compute(document=deep_merge(document, parse_sets(sets)),
                                         name=name)
    note_ignored(result)
    emit(result)


@compute.command("show")
@click.option("--name", "-n", required=True, help="Compute name.")
def compute_show(name: str) -> None:
    """Show a compute."""
    emit(get_client().get_compute(name))


@compute.command("list")
@click.option("--type", "-t", "type_", type=click.Choice(["amlcompute"], case_sensitive=False),
              help="Only computes of this type.")
def compute_list(type_: str | None) -> None:
    """List computes, the built-in default among them."""
    emit([item for item in get_client().list_computes()
          if type_ is None or item["type"] == type_.lower()])


@compute.command("update")
@click.option("--name", "-n", required=True, help="Compute name.")
@click.option("--size", help="Azure VM size: picks the scoring profile.")
@click.option("--min-instances", type=_COUNT, help="Hosts to keep warm.")
@click.option("--max-instances", type=_COUNT, help="Most scoring hosts at once.")
@click.option("--idle-time-before-scale-down", type=_COUNT, help="Seconds (recorded).")
@click.option("--description", "-d", help="Description.")
@TAGS
@SET
def compute_update(name: str, size: str | None, min_instances: int | None,
                   max_instances: int | None, idle_time_before_scale_down: int | None,
                   description: str | None, tags: tuple[str, ...],
                   sets: tuple[str, ...]) -> None:
    """Update a compute: flags, or --set max_instances=4 --set tags.team=ml ..."""
    changes = _flags(size=size, min_instances=min_instances, max_instances=max_instances,
                     idle_time_before_scale_down=idle_time_before_scale_down,
                     description=description)
    changes = deep_merge(changes, parse_sets(sets))
    client = get_client()
    if tags or isinstance(changes.get("tags"), dict):
        current = client.get_compute(name)["tags"]
        changes["tags"] = {**current, **(changes.get("tags") or {}), **parse_tags(tags)}
    if not changes:
        raise click.UsageError("nothing to update: give a flag or --set KEY=VALUE")
    result = client.update_compute(name, changes)
    note_ignored(result)
    emit(result)


@compute.command("delete")
@click.option("--name", "-n", required=True, help="Compute name.")
@YES
def compute_delete(name: str, yes: bool) -> None:
    """Delete a compute no deployment uses."""
    confirm(yes, f"Delete compute {name}?")
    emit(get_client().delete_compute(name))
