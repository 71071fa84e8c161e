"""`langlearn seed`: registered here, implemented by `langlearn.seed` (the `[seed]` extra).

Without the extra the subcommand still exists, so `--help` says what to install instead of an
"invalid choice"."""

from __future__ import annotations

import argparse

from langlearn.cli import Parser, Streams
from langlearn.errors import ConfigError

HELP = "fill the database with a realistic, consistent, reproducible history (demo or scale)"
MISSING = "the seed needs the [seed] extra: pip install 'langlearn-data[seed]'"


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    try:
        from langlearn.seed import cli as seed_cli
    except ImportError:
        command = commands.add_parser("seed", help=f"{HELP} ({MISSING})", description=MISSING)
        command.add_argument("ignored", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        command.set_defaults(handler=missing_extra)
        return
    command = commands.add_parser("seed", help=HELP, description=seed_cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    seed_cli.add_arguments(command)
    command.set_defaults(handler=run)


async def run(args: argparse.Namespace, streams: Streams) -> int:
    from langlearn.seed import cli as seed_cli

    options = seed_cli.options_from(args)  # usage errors before the private server is started
    return await seed_cli.run(options, streams.configured_url(), streams.out)


async def missing_extra(args: argparse.Namespace, streams: Streams) -> int:
    raise ConfigError(MISSING)
