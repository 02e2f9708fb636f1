"""`batchfn environment ...`: create, show and list environments, as `az ml environment`."""

from __future__ import annotations

from pathlib import Path

import click

from batchfn.cli.common import FILE, emit, get_client, load_file


@click.group("environment")
def environment() -> None:
    """Manage environments: the Python and packages a deployment's workers run with."""


@environment.command("create")
@FILE
@click.option("--name", "-n", help="Environment name (overrides the file's).")
@click.option("--conda-file", help="A conda environment file (Python version, pip packages).")
@click.option("--image", help="Accepted as in Azure ML; kept, not used (see the docs).")
@click.option("--description", help="A description.")
def environment_create(file: str | None, name: str | None, conda_file: str | None,
                       image: str | None, description: str | None) -> None:
    """Register an environment from environment.yml or --name and --conda-file.

    The service resolves its requirements with uv first: an environment that cannot be
    installed is refused with uv's explanation, and nothing is stored.
    """
    document = load_file(file) if file else {}
    if conda_file is not None:  # a path given here is relative to the current folder
        document["conda_file"] = str(Path(conda_file).resolve())
    for key, value in (("image", image), ("description", description)):
        if value is not None:
            document[key] = value
    emit(get_client().create_environment(document=document, name=name,
                                         base_dir=Path(file).parent if file else None))


@environment.command("show")
@click.option("--name", "-n", required=True, help="Environment name.")
@click.option("--version", "-v", help="Version number (default: the latest).")
@click.option("--label", "-l", type=click.Choice(["latest"]), help="latest: the newest.")
def environment_show(name: str, version: str | None, label: str | None) -> None:
    """Show an environment version."""
    emit(get_client().get_environment(name, version or label or "latest"))


@environment.command("list")
@click.option("--name", "-n", help="List the versions of this environment.")
def environment_list(name: str | None) -> None:
    """List environments (the latest version of each), or the versions of --name."""
    emit(get_client().list_environments(name))
