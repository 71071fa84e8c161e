"""`langlearn upgrade | check | status`: the startup's locked upgrade and schema check, for deploy pipelines.

Run `langlearn upgrade` as an init container or release step (the same locked upgrade as
`database(migrate="apply")`, safe when several run at once), `langlearn check` as a gate (the same
refusals as `database(migrate="check")`), and `langlearn status` to see where a database stands.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from langlearn import history
from langlearn.cli import Parser, Streams, positive_seconds
from langlearn.history.lock import lock_holder
from langlearn.startup import Mode, StartupOptions, connect, prepare

DEFAULTS = StartupOptions()


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    def command(name: str, help: str) -> Parser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--connect-timeout", type=positive_seconds, default=DEFAULTS.connect_timeout, metavar="S",
            help=f"keep retrying the connection this long while the server starts (default {DEFAULTS.connect_timeout:g})",
        )
        sub.add_argument(
            "--migrations", default=DEFAULTS.migrations, metavar="DIR",
            help="the migrations folder, as Aerich's `location` (default: the one shipped in this package)",
        )
        return sub

    upgrade = command("upgrade", "apply the pending migrations under the migration lock, then check the schema")
    upgrade.add_argument(
        "--lock-wait", type=positive_seconds, default=DEFAULTS.lock_wait, metavar="S",
        help=f"give up if another process holds the migration lock longer than this (default {DEFAULTS.lock_wait:g})",
    )
    upgrade.add_argument(
        "--lock-timeout", type=positive_seconds, default=DEFAULTS.lock_timeout, metavar="S",
        help=f"a migration statement waits at most this long for a table lock (default {DEFAULTS.lock_timeout:g})",
    )
    upgrade.add_argument(
        "--statement-timeout", type=positive_seconds, default=DEFAULTS.statement_timeout, metavar="S",
        help=f"a migration statement runs at most this long (default {DEFAULTS.statement_timeout:g})",
    )
    upgrade.set_defaults(handler=run_upgrade, mode="apply")
    command("check", "apply nothing; fail unless the database is at head and its schema matches the models").set_defaults(
        handler=run_upgrade, mode="check"
    )
    command("status", "list the migrations applied, pending and unknown, and who holds the migration lock").set_defaults(
        handler=run_status
    )


async def run_upgrade(args: argparse.Namespace, streams: Streams) -> int:
    mode: Mode = args.mode
    url = streams.configured_url()
    names = {option.name for option in fields(StartupOptions)}  # the options share their names
    chosen: dict[str, Any] = {name: value for name, value in vars(args).items() if name in names}
    startup = await prepare(url, mode, StartupOptions(**chosen))
    assert startup.state is not None  # read in every mode but "off"
    warned = f", {len(startup.warnings)} warning(s)" if startup.warnings else ""
    applied = ""
    if mode == "apply":
        applied = f"applied {len(startup.applied)} migration(s); " if startup.applied else "nothing to apply; "
    print(f"{applied}database at {startup.state.current} (head); schema matches the models{warned}", file=streams.out)
    return 0


async def run_status(args: argparse.Namespace, streams: Streams) -> int:
    url = streams.configured_url()
    connection = await connect(url, timeout=args.connect_timeout, application_name="langlearn-status")
    try:
        state = await history.read_state(connection, location=args.migrations)
        holder = await lock_holder(connection)
    finally:
        await connection.close()
    applied = set(state.applied)
    lines = [f"{'applied' if version in applied else 'pending':9} {version}" for version in state.on_disk]
    lines += [f"{'unknown':9} {version} (recorded by the database, not in this code)" for version in state.unknown]
    lines += [f"{'twice':9} {version} (recorded more than once)" for version in state.duplicates]
    lines.append(f"migration lock: {'held by ' + holder if holder else 'free'}")
    if state.unknown:
        lines.append("database is ahead of the code")
    elif state.pending:
        lines.append(f"{len(state.pending)} pending: run `langlearn upgrade`")
    else:
        lines.append(f"at head: {state.head}")
    print("\n".join(lines), file=streams.out)
    return 0
