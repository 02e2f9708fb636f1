"""`batchfn`: the command line, mirroring `az ml batch-endpoint|batch-deployment|job|model|
data|compute`.

Each command group lives in its own module, named in `COMMANDS` and imported only when it
runs (or when `--help` lists it), so `batchfn job show` loads neither the YAML parser nor
the storage SDK. To add a command, write a click command or group in its own module and
add one line to `COMMANDS`; every command loaded from it accepts the target and output
options (`--url`, `--key`, `--query`, `-o`) before or after its name, as `az` does, and
helpers in batchfn.cli.common give it the client and az-style output.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from batchfn.cli.common import attach_target_options
from batchfn.errors import BatchfnClientError
from batchfn.output import QueryError

# command name -> "module:attribute" of its click command or group
COMMANDS = {
    "batch-endpoint": "batchfn.cli.endpoints:batch_endpoint",
    "batch-deployment": "batchfn.cli.deployments:batch_deployment",
    "job": "batchfn.cli.jobs:job",
    "model": "batchfn.cli.assets:model",
    "data": "batchfn.cli.assets:data",
    "compute": "batchfn.cli.computes:compute",
    "studio": "batchfn.cli.studio:studio",
    "environment": "batchfn.cli.environments:environment",
}


class LazyGroup(click.Group):
    """The root group: loads the command modules of `COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module_name, _, attribute = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            self.add_command(attach_target_options(command), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (BatchfnClientError, QueryError) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """batchfn: Azure ML batch endpoints, served by Azure Functions."""


attach_target_options(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `batchfn` command."""
    cli.main(args=argv, prog_name="batchfn")
