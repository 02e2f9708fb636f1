"""`batchfn model ...` and `batchfn data ...`: register, show, list, update, archive and
restore model and data assets, as `az ml model|data` does.

Both groups are made by `asset_group`: they differ only in the kind of asset, its types
(custom_model / mlflow_model; uri_folder / uri_file) and what a path may be (a model is a
local folder; a data asset a local folder or file, or a location jobs read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from batchfn.cli.common import (
    SET,
    TAGS,
    deep_merge,
    emit,
    get_client,
    load_file,
    note_ignored,
    parse_sets,
    parse_tags,
)
from batchfn.errors import local_checks

_TYPES = {"model": ("custom_model", "mlflow_model"), "data": ("uri_folder", "uri_file")}
_PATHS = {"model": "Local folder of the model.",
          "data": "Local folder or file (uploaded once to the default datastore), or a "
                  "datastore path (azureml://datastores/<name>/paths/<path>) or storage URL "
                  "recorded as it is."}


def asset_group(kind: str) -> click.Group:
    """The command group of one asset kind: create, show, list, update, archive, restore."""

    @click.group(kind, help=f"Manage {kind} assets (versioned, content-addressed).")
    def group() -> None:
        pass

    @group.command("create")
    @click.option("--file", "-f", "file", type=click.Path(dir_okay=False),
                  help=f"{kind}.yml (Azure ML format); the flags below override it.")
    @click.option("--name", "-n", help="Asset name.")
    @click.option("--version", "-v", help="Version number (default: the next one).")
    @click.option("--type", "-t", "type_", type=click.Choice(_TYPES[kind], case_sensitive=False),
                  help=f"Default: {_TYPES[kind][0]}.")
    @click.option("--path", "-p", help=_PATHS[kind])
    @click.option("--description", "-d", help="Description.")
    @TAGS
    @SET
    def create(file: str | None, name: str | None, version: str | None, type_: str | None,
               path: str | None, description: str | None, tags: tuple[str, ...],
               sets: tuple[str, ...]) -> None:
        """Register a version (identical content is the same version)."""
        from batchfn.contract.asset_spec import AssetSpec, is_location

        document: dict[str, Any] = load_file(file) if file else {}
        flags = {"name": name, "version": version, "type": type_, "path": path,
                 "description": description}
        document.update({key: value for key, value in flags.items() if value is not None})
        if tags:
            document["tags"] = {**(document.get("tags") or {}), **parse_tags(tags)}
        document = deep_merge(document, parse_sets(sets))
        with local_checks():
            spec = AssetSpec.from_document(kind, document)
        target = spec.path
        if file and not is_location(target):
            target = str(Path(file).parent / target)  # relative to the YAML file, as in az
        result = get_client().create_asset(kind, spec.name, target, spec.metadata)
        if spec.ignored:
            result["ignored"] = [item.to_dict() for item in spec.ignored]
        note_ignored(result)
        emit(result)

    @group.command("show")
    @click.option("--name", "-n", required=True, help="Asset name.")
    @click.option("--version", "-v", help="Version (default: the latest not archived).")
    @click.option("--label", "-l", type=click.Choice(["latest"]), help="latest: the newest "
                  "version not archived.")
    def show(name: str, version: str | None, label: str | None) -> None:
        """Show a version."""
        emit(get_client().get_asset(kind, name, version or label or "latest"))

    @group.command("list")
    @click.option("--name", "-n", help="List this asset's versions (default: every asset, "
                  "its latest version).")
    @click.option("--include-archived", is_flag=True, help="Archived versions too.")
    @click.option("--archived-only", is_flag=True, help="Only archived versions.")
    def list_(name: str | None, include_archived: bool, archived_only: bool) -> None:
        """List assets, or the versions of one."""
        client = get_client()
        wide = include_archived or archived_only
        found = (client.list_asset_versions(kind, name, include_archived=wide) if name
                 else client.list_assets(kind, include_archived=wide))
        emit([item for item in found if item["archived"] or not archived_only])

    @group.command("update")
    @click.option("--name", "-n", required=True, help="Asset name.")
    @click.option("--version", "-v", required=True, help="Version.")
    @SET
    def update(name: str, version: str, sets: tuple[str, ...]) -> None:
        """Change a version's description or tags: --set description=... --set tags.k=v."""
        changes = parse_sets(sets)
        if not changes:
            raise click.UsageError("nothing to update: give --set KEY=VALUE")
        client = get_client()
        if isinstance(changes.get("tags"), dict):
            current = client.get_asset(kind, name, version)
            changes["tags"] = {**current["tags"], **changes["tags"]}
        emit(client.update_asset(kind, name, version, changes))

    @group.command("archive")
    @click.option("--name", "-n", required=True, help="Asset name.")
    @click.option("--version", "-v", help="Version (default: every version).")
    def archive(name: str, version: str | None) -> None:
        """Archive a version, or all: @latest then skips it; a version number still works."""
        emit(get_client().archive_asset(kind, name, version, archived=True))

    @group.command("restore")
    @click.option("--name", "-n", required=True, help="Asset name.")
    @click.option("--version", "-v", help="Version (default: every version).")
    def restore(name: str, version: str | None) -> None:
        """Restore an archived version, or all."""
        emit(get_client().archive_asset(kind, name, version, archived=False))

    return group


model = asset_group("model")
data = asset_group("data")
