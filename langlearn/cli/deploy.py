"""`langlearn upgrade | downgrade | check | status`: the startup's locked upgrade and schema check, for deploy pipelines.

Run `langlearn upgrade` as an init container or release step (the same locked upgrade as
`database(migrate="apply")`, safe when several run at once; `--to VERSION` stops there),
`langlearn downgrade --to VERSION | --steps K` to roll back (the same lock and timeouts, after a
confirmation), `langlearn check` as a gate (the same refusals as `database(migrate="check")`), and
`langlearn status` to see where a database stands (and, with DATABASE_REPLICA_URL, how far each standby
has replayed it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import fields
from typing import Any

from langlearn import history
from langlearn.cli import Parser, Streams, positive_seconds
from langlearn.errors import UsageError
from langlearn.history import Target, checksums
from langlearn.history.lock import lock_holder
from langlearn.history.plan import Plan
from langlearn.history.runner import plan_now
from langlearn.history.state import MigrationState
from langlearn.routing import standby_report
from langlearn.settings import replica_urls
from langlearn.startup import Mode, Startup, StartupOptions, connect, prepare

DEFAULTS = StartupOptions()


def add_lock_options(parser: Parser) -> None:
    """How long a migrating command waits for the migration lock, and for each statement's table locks."""
    add_lock_wait_option(parser)
    add_timeout_options(parser)


def add_lock_wait_option(parser: Parser) -> None:
    parser.add_argument(
        "--lock-wait", type=positive_seconds, default=DEFAULTS.lock_wait, metavar="S",
        help=f"give up if another process holds the migration lock longer than this (default {DEFAULTS.lock_wait:g})",
    )


def add_timeout_options(parser: Parser) -> None:
    """The session's limits for each migration statement."""
    parser.add_argument(
        "--lock-timeout", type=positive_seconds, default=DEFAULTS.lock_timeout, metavar="S",
        help=f"a migration statement waits at most this long for a table lock (default {DEFAULTS.lock_timeout:g})",
    )
    parser.add_argument(
        "--statement-timeout", type=positive_seconds, default=DEFAULTS.statement_timeout, metavar="S",
        help=f"a migration statement runs at most this long (default {DEFAULTS.statement_timeout:g})",
    )


def add_database_options(parser: Parser) -> None:
    """Which migrations, and how long to wait for a server that is starting."""
    parser.add_argument(
        "--connect-timeout", type=positive_seconds, default=DEFAULTS.connect_timeout, metavar="S",
        help=f"keep retrying the connection this long while the server starts (default {DEFAULTS.connect_timeout:g})",
    )
    parser.add_argument(
        "--migrations", default=DEFAULTS.migrations, metavar="DIR",
        help="the migrations folder, as Aerich's `location` (default: the one shipped in this package)",
    )


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    def command(name: str, help: str) -> Parser:
        sub = commands.add_parser(name, help=help, description=help)
        add_database_options(sub)
        return sub

    upgrade = command("upgrade", "apply the pending migrations under the migration lock, then check the schema")
    upgrade.add_argument("--to", metavar="VERSION", help="stop once this migration (a number or file name) is applied (default: head)")
    add_lock_options(upgrade)
    downgrade = command("downgrade", "revert applied migrations, newest first, under the migration lock (asks first, or --yes)")
    where = downgrade.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="VERSION", help="end with this migration applied (a number or file name; `base` reverts them all)")
    where.add_argument("--steps", type=int, metavar="K", help="revert the K newest applied migrations")
    downgrade.add_argument("--yes", action="store_true", help="do not ask: reverting drops what those migrations created, data included")
    add_lock_options(downgrade)
    downgrade.set_defaults(handler=run_downgrade, mode="apply")
    upgrade.set_defaults(handler=run_upgrade, mode="apply")
    command("check", "apply nothing; fail unless the database is at head and its schema matches the models").set_defaults(
        handler=run_upgrade, mode="check"
    )
    command("status", "list the migrations applied, pending and unknown, who holds the migration lock, and each standby's lag").set_defaults(
        handler=run_status
    )


def startup_options(args: argparse.Namespace) -> StartupOptions:
    names = {option.name for option in fields(StartupOptions)}  # the options share their names
    chosen: dict[str, Any] = {name: value for name, value in vars(args).items() if name in names}
    return StartupOptions(**chosen)


async def run_upgrade(args: argparse.Namespace, streams: Streams) -> int:
    mode: Mode = args.mode
    url = streams.configured_url()
    target = Target("up", getattr(args, "to", None))
    startup = await prepare(url, mode, startup_options(args), target=target)
    done = ""
    if mode == "apply":
        done = f"applied {len(startup.applied)} migration(s); " if startup.applied else "nothing to apply; "
    print(f"{done}{where_it_stands(startup)}", file=streams.out)
    return 0


async def run_downgrade(args: argparse.Namespace, streams: Streams) -> int:
    url = streams.configured_url()
    target = Target("down", args.to, args.steps)
    options = startup_options(args)
    plan, _ = await database_plan(url, target, options)
    if not plan.steps:
        print(plan.summary(), file=streams.out)
        return 0
    if not args.yes and not sys.stdin.isatty():
        raise UsageError(f"the downgrade would {plan.summary()} and drop what they created; nothing was done; confirm with --yes")
    print("\n".join([plan.summary(), *(f"  {step.describe()}" for step in plan.steps)]), file=streams.err)
    if not args.yes and not await confirmed(f"revert {len(plan.steps)} migration(s), dropping what they created, data included? [y/N] "):
        raise UsageError("not confirmed; nothing was done")
    startup = await prepare(url, "apply", options, target=target, expected=plan.versions)
    print(f"reverted {len(startup.reverted)} migration(s); {where_it_stands(startup)}", file=streams.out)
    return 0


async def database_plan(url: str, target: Target, options: StartupOptions) -> tuple[Plan, MigrationState]:
    """What taking the database to `target` would run now, read without the lock (the run re-plans under it)."""
    connection = await connect(url, timeout=options.connect_timeout, application_name="langlearn-plan")
    try:
        return await plan_now(connection, target, options.migrations)
    finally:
        await connection.close()


async def confirmed(question: str) -> bool:
    """Ask on the terminal."""
    answer = await asyncio.to_thread(input, question)
    return answer.strip().lower() in ("y", "yes")


def where_it_stands(startup: Startup) -> str:
    state = startup.state
    assert state is not None  # read in every mode but "off"
    warned = f", {len(startup.warnings)} warning(s)" if startup.warnings else ""
    if state.pending:
        return f"database at {state.current or 'no version'}, {len(state.pending)} pending (not head: the schema is compared with the models only at head){warned}"
    return f"database at {state.current} (head); schema matches the models{warned}"


async def run_status(args: argparse.Namespace, streams: Streams) -> int:
    url = streams.configured_url()
    connection = await connect(url, timeout=args.connect_timeout, application_name="langlearn-status")
    try:
        state = await history.read_state(connection, location=args.migrations)
        report = await checksums.compare(connection, history.load_history(args.migrations), state)
        holder = await lock_holder(connection)
        standbys = [await standby_report(connection, url) for url in replica_urls()]
    finally:
        await connection.close()
    applied = set(state.applied)
    remarks = {version: " (no digest recorded yet: the next upgrade records it)" for version in report.unrecorded}
    remarks |= {edit.version: f" (edited since it was applied: its {' and '.join(edit.parts)})" for edit in report.edited}
    lines = [f"{'applied' if version in applied else 'pending':9} {version}{remarks.get(version, '')}" for version in state.on_disk]
    lines += [f"{'unknown':9} {version} (recorded by the database, not in this code)" for version in state.unknown]
    lines += [f"{'twice':9} {version} (recorded more than once)" for version in state.duplicates]
    lines.append(f"migration lock: {'held by ' + holder if holder else 'free'}")
    if state.unknown:
        lines.append("database is ahead of the code")
    elif state.pending:
        lines.append(f"{len(state.pending)} pending: run `langlearn upgrade`")
    else:
        lines.append(f"at head: {state.head}")
    lines += [standby.line() for standby in standbys]
    print("\n".join(lines), file=streams.out)
    return 0
