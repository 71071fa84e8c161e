"""`python -m core`: the startup's locked upgrade and schema check, for deploy pipelines.

Run `python -m core upgrade` as an init container or release step (the same locked upgrade as
`database(migrate="apply")`, safe when several run at once), `python -m core check` as a gate (the
same refusals as `database(migrate="check")`), and `python -m core status` to see where a database
stands. Exit codes: 0 success, 1 refused or failed (one line on stderr), 2 bad arguments or
configuration (including an unreachable server).
"""

from __future__ import annotations

import argparse
import logging
import sys

from core import migrations
from core.settings import ConfigError, database_url
from core.startup import StartupError, StartupOptions, connect, lock_holder, prepare

DEFAULTS = StartupOptions()


def seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="Migrate or check the database named by DATABASE_URL (the private server when unset).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--connect-timeout", type=seconds, default=DEFAULTS.connect_timeout, metavar="S",
            help=f"keep retrying the connection this long while the server starts (default {DEFAULTS.connect_timeout:g})",
        )
        sub.add_argument(
            "--migrations", default=DEFAULTS.migrations, metavar="DIR",
            help="the migrations folder, as Aerich's `location` (default: this project's migrations/)",
        )
        return sub

    upgrade = command("upgrade", "apply the pending migrations under the migration lock, then check the schema")
    upgrade.add_argument(
        "--lock-wait", type=seconds, default=DEFAULTS.lock_wait, metavar="S",
        help=f"give up if another process holds the migration lock longer than this (default {DEFAULTS.lock_wait:g})",
    )
    upgrade.add_argument(
        "--lock-timeout", type=seconds, default=DEFAULTS.lock_timeout, metavar="S",
        help=f"a migration statement waits at most this long for a table lock (default {DEFAULTS.lock_timeout:g})",
    )
    upgrade.add_argument(
        "--statement-timeout", type=seconds, default=DEFAULTS.statement_timeout, metavar="S",
        help=f"a migration statement runs at most this long (default {DEFAULTS.statement_timeout:g})",
    )
    command("check", "apply nothing; fail unless the database is at head and its schema matches the models")
    command("status", "list the migrations applied, pending and unknown, and who holds the migration lock")
    return parser


async def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_progress()
    try:
        url = database_url(announce=lambda line: print(line, file=sys.stderr))
        if args.command == "status":
            await status(url, args)
            return 0
        options = StartupOptions(**{name: value for name, value in vars(args).items() if name != "command"})  # options share its names
        startup = await prepare(url, "apply" if args.command == "upgrade" else "check", options)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    warned = f", {len(startup.warnings)} warning(s)" if startup.warnings else ""
    applied = ""
    if args.command == "upgrade":
        applied = f"applied {len(startup.applied)} migration(s); " if startup.applied else "nothing to apply; "
    print(f"{applied}database at {startup.state.current} (head); schema matches the models{warned}")
    return 0


def _show_progress() -> None:
    """Print core's progress lines (lock waits, each migration applied) on stderr, and nothing else's."""
    logger = logging.getLogger("core")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


async def status(url: str, args: argparse.Namespace) -> None:
    connection = await connect(url, timeout=args.connect_timeout, application_name="langlearn-status")
    try:
        state = await migrations.read_state(connection, location=args.migrations)
        holder = await lock_holder(connection)
    finally:
        await connection.close()
    applied = set(state.applied)
    for version in state.on_disk:
        print(f"{'applied' if version in applied else 'pending':9} {version}")
    for version in state.unknown:
        print(f"{'unknown':9} {version} (recorded by the database, not in this code)")
    for version in state.duplicates:
        print(f"{'twice':9} {version} (recorded more than once)")
    print(f"migration lock: {'held by ' + holder if holder else 'free'}")
    if state.unknown:
        print("database is ahead of the code")
    elif state.pending:
        print(f"{len(state.pending)} pending: run `python -m core upgrade`")
    else:
        print(f"at head: {state.head}")
