"""`langlearn`: one command for deploy pipelines, operators and developers.

    langlearn upgrade | downgrade | check | status   # the startup's locked upgrade and schema check
    langlearn migrations check|plan|sql|lint|state-diff|repair   # review and guard the history
    langlearn verify                          # schema, migrations and data invariants
    langlearn seed [--users N]                # demo or scale data (the [seed] extra)
    langlearn leagues close-week [--week D]   # the weekly cron: final ranks, promotions, demotions
    langlearn partitions ensure|retire|status # monthly partitions of the history tables (the daily cron: ensure)
    langlearn server url|status|stop|psql|pg_dump|pg_restore   # the private server (the [local] extra)
    langlearn db create|drop|reset NAME       # databases on the configured server
    langlearn backup | restore FILE           # pg_dump / pg_restore of the configured database

Every subcommand has `--help` and the same exit codes: 0 done, 1 found or refused, 2 usage,
configuration or unreachable server. Errors are one line on stderr (`error: ...`), never a
traceback and never a password. Built on argparse (the standard library): nested subcommands and
typed options are all this needs, and it keeps the base install free of a CLI dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import NoReturn, TextIO

from langlearn.errors import Interrupted, LanglearnError, UsageError
from langlearn.settings import database_url, direct_database_url
from langlearn.verify.findings import FINDING_RECORD

PROG = "langlearn"


@dataclass(frozen=True)
class Streams:
    """Where a command writes: results on `out`, progress and errors on `err` (tests pass buffers)."""

    out: TextIO
    err: TextIO

    def configured_url(self) -> str:
        """DATABASE_URL, or the private server's (whose start is announced on `err`)."""
        return database_url(announce=lambda line: print(line, file=self.err))

    def direct_url(self) -> str:
        """DATABASE_DIRECT_URL (PostgreSQL itself, for migrations and their lock), else `configured_url()`."""
        return direct_database_url(announce=lambda line: print(line, file=self.err))


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
    from langlearn.cli import backup, deploy, leagues, migrations, partitions, seed, server, verify

    parser = Parser(
        prog=PROG,
        description="The langlearn data layer: migrate, check, verify and seed the database named by "
        "DATABASE_URL (the private server when it is unset). Exit codes: 0 done, 1 found or refused, "
        "2 usage, configuration or unreachable server.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    deploy.register(commands)
    migrations.register(commands)
    verify.register(commands)
    seed.register(commands)
    leagues.register(commands)
    partitions.register(commands)
    server.register(commands)
    backup.register(commands)
    return parser


# What an interrupted command leaves behind, for its one line; commands with more to say (the seed's
# step) raise `Interrupted` themselves.
RESUME_HINTS = {
    "upgrade": "the migrations applied before it are kept and the one in flight was rolled back; run it again to apply the rest",
    "downgrade": "the migrations reverted before it stay reverted and the one in flight was rolled back; run it again to revert the rest",
    "seed": "the steps committed before it are kept; run the same command again to resume",
    "leagues": "the close runs in one transaction, so the week is as it was; run it again",
    "partitions": "each partition is created, detached or dropped in steps the next run resumes; run it again",
    "db": "creating or dropping a database is all or nothing; run it again",
    "backup": "no backup was written; run it again",
    "restore": "the restore runs in one transaction, so the database is as it was; run it again",
}
NOTHING_CHANGED = "nothing was changed; run it again"


async def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command line; return the exit code. Every LanglearnError becomes one line on `err`.

    SIGINT (Ctrl-C) and SIGTERM cancel the command: it prints where it stopped in one line and
    returns 130 or 143, leaving the database as each command's own transactions left it."""
    streams = Streams(out or sys.stdout, err or sys.stderr)
    _show_progress(streams.err)
    command = ""
    with _SigtermCancels() as signals:
        try:
            with redirect_stdout(streams.out):  # argparse prints --help on stdout
                args = build_parser().parse_args(argv)
            command = args.command
            handler: Handler = args.handler
            return await handler(args, streams)
        except SystemExit as done:  # --help, --version
            return done.code if isinstance(done.code, int) else 0
        except (asyncio.CancelledError, Interrupted) as stop:
            where = str(stop) if isinstance(stop, Interrupted) else RESUME_HINTS.get(command, NOTHING_CHANGED)
            print(f"error: interrupted by {signals.received or 'SIGINT'} during `langlearn {command}`: {where}", file=streams.err)
            return 143 if signals.received == "SIGTERM" else Interrupted.exit_code
        except LanglearnError as error:
            print(f"error: {' '.join(error.for_command_line().split())}", file=streams.err)
            return error.exit_code


class _SigtermCancels:
    """While a command runs, SIGTERM cancels it the way asyncio.run already cancels it on SIGINT."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._installed = False

    def __enter__(self) -> _SigtermCancels:
        task = asyncio.current_task()
        if task is not None and threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._cancel, task)
            self._installed = True
        return self

    def _cancel(self, task: asyncio.Task[int]) -> None:
        self.received = "SIGTERM"
        task.cancel()

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)


def entrypoint() -> None:
    """The `langlearn` console script."""
    try:
        code = asyncio.run(main(sys.argv[1:]))
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's cleanup runs
        print("error: interrupted by SIGINT; run the same command again (every step is all or nothing)", file=sys.stderr)
        code = Interrupted.exit_code
    except BrokenPipeError:  # the reader went away (`| head`): what it wanted was written
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        code = 0
    sys.exit(code)


def _show_progress(err: TextIO) -> None:
    """Print langlearn's progress lines (lock waits, each migration applied) on `err`, and nothing else's."""
    logger = logging.getLogger("langlearn")
    for handler in list(logger.handlers):
        if getattr(handler, "langlearn_cli", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(lambda record: not hasattr(record, FINDING_RECORD))  # printed with the result, on stdout
    handler.langlearn_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
