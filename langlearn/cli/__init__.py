"""`langlearn`: one command for deploy pipelines, operators and developers.

    langlearn upgrade | check | status        # the startup's locked upgrade and schema check
    langlearn verify                          # schema, migrations and data invariants
    langlearn seed [--users N]                # demo or scale data (the [seed] extra)
    langlearn server url|status|stop|psql|pg_dump|pg_restore   # the private server (the [local] extra)
    langlearn db create|drop|reset NAME       # databases on the configured server

Every subcommand has `--help` and the same exit codes: 0 done, 1 found or refused, 2 usage,
configuration or unreachable server. Errors are one line on stderr (`error: ...`), never a
traceback and never a password. Built on argparse (the standard library): nested subcommands and
typed options are all this needs, and it keeps the base install free of a CLI dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import NoReturn, TextIO

from langlearn.errors import LanglearnError, UsageError

PROG = "langlearn"


@dataclass(frozen=True)
class Streams:
    """Where a command writes: results on `out`, progress and errors on `err` (tests pass buffers)."""

    out: TextIO
    err: TextIO


Handler = Callable[[argparse.Namespace, Streams], Awaitable[int]]


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (as UsageError) instead of a usage block and exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def positive_seconds(text: str) -> float:
    """An argparse type: a finite, positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds above 0")
    return value


def build_parser() -> Parser:
    from langlearn.cli import deploy, seed, server, verify

    parser = Parser(
        prog=PROG,
        description="The langlearn data layer: migrate, check, verify and seed the database named by "
        "DATABASE_URL (the private server when it is unset). Exit codes: 0 done, 1 found or refused, "
        "2 usage, configuration or unreachable server.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    deploy.register(commands)
    verify.register(commands)
    seed.register(commands)
    server.register(commands)
    return parser


async def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command line; return the exit code. Every LanglearnError becomes one line on `err`."""
    streams = Streams(out or sys.stdout, err or sys.stderr)
    _show_progress(streams.err)
    try:
        with redirect_stdout(streams.out):  # argparse prints --help on stdout
            args = build_parser().parse_args(argv)
        handler: Handler = args.handler
        return await handler(args, streams)
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0
    except LanglearnError as error:
        print(f"error: {' '.join(str(error).split())}", file=streams.err)
        return error.exit_code


def entrypoint() -> None:
    """The `langlearn` console script."""
    sys.exit(asyncio.run(main(sys.argv[1:])))


def _show_progress(err: TextIO) -> None:
    """Print langlearn's progress lines (lock waits, each migration applied) on `err`, and nothing else's."""
    logger = logging.getLogger("langlearn")
    for handler in list(logger.handlers):
        if getattr(handler, "langlearn_cli", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.langlearn_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
