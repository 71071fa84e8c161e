"""`langlearn upgrade | downgrade | check | status`: the startup's locked upgrade and schema check, for deploy pipelines.

Run `langlearn upgrade` as an init container or release step (the same locked upgrade as
`database(migrate="apply")`, safe when several run at once; `--to VERSION` stops there),
`langlearn downgrade --to VERSION | --steps K` to roll back (the same lock and timeouts, after a
confirmation), `langlearn check` as a gate (the same refusals as `database(migrate="check")`), and
`langlearn status` to see where a database stands (and, with DATABASE_REPLICA_URL, how far each standby
has replayed it).

A service's own apps declared in its `pyproject.toml` (`[tool.langlearn.apps]`, see `langlearn.history.apps`)
are migrated, checked and listed with the package's `models`, in their declared order; `--app NAME`
(repeatable) picks some of them. Output about one app only (no service app declared) reads as it always did;
with several, each app's lines carry its label.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import asyncpg

from langlearn import history
from langlearn.cli import Parser, Streams, positive_seconds
from langlearn.errors import NotConfirmed
from langlearn.history import Target, checksums
from langlearn.history.apps import MigrationApp, configured_apps, refuse_ambiguous_target, refuse_stranding
from langlearn.history.lock import lock_holder
from langlearn.history.plan import Plan
from langlearn.history.runner import plan_now
from langlearn.history.state import MigrationState
from langlearn.routing import standby_report
from langlearn.settings import APP_LABEL, replica_urls
from langlearn.startup import Mode, Startup, StartupOptions, connect, migrated_apps, prepare

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


def add_app_option(parser: Parser) -> None:
    parser.add_argument(
        "--app", action="append", default=[], metavar="NAME",
        help="only this app's history (repeatable): `models` (this package's) or a service's app declared in pyproject.toml "
        "under [tool.langlearn.apps.NAME]; default: all of them, in their declared order",
    )


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    def command(name: str, help: str) -> Parser:
        sub = commands.add_parser(name, help=help, description=help)
        add_database_options(sub)
        add_app_option(sub)
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
    chosen: dict[str, Any] = {name: value for name, value in vars(args).items() if name in names and name != "apps"}
    return StartupOptions(**chosen, histories=configured_apps())


async def run_upgrade(args: argparse.Namespace, streams: Streams) -> int:
    mode: Mode = args.mode
    url = streams.direct_url()
    target = Target("up", getattr(args, "to", None))
    startup = await prepare(url, mode, startup_options(args), target=target, apps=args.app)
    done = ""
    if mode == "apply":
        done = f"applied {len(startup.applied)} migration(s); " if startup.applied else "nothing to apply; "
    print(f"{done}{where_it_stands(startup)}", file=streams.out)
    return 0


async def run_downgrade(args: argparse.Namespace, streams: Streams) -> int:
    url = streams.direct_url()
    target = Target("down", args.to, args.steps)
    options = startup_options(args)
    plans = await database_plans(url, target, options, migrated_apps(options, args.app))
    steps = sum(len(planned.plan.steps) for planned in plans)
    summary = "; ".join(planned.labelled(planned.plan.summary()) for planned in plans)
    if not steps:
        print(summary, file=streams.out)
        return 0
    if not args.yes and not sys.stdin.isatty():
        raise NotConfirmed(f"the downgrade would {summary} and drop what they created; nothing was done; confirm with --yes")
    lines = [summary, *(f"  {planned.labelled(step.describe())}" for planned in plans for step in planned.plan.steps)]
    print("\n".join(lines), file=streams.err)
    if not args.yes and not await confirmed(f"revert {steps} migration(s), dropping what they created, data included? [y/N] "):
        raise NotConfirmed("not confirmed; nothing was done")
    expected = {planned.app.label: planned.plan.versions for planned in plans}
    startup = await prepare(url, "apply", options, target=target, expected=expected, apps=args.app)
    print(f"reverted {len(startup.reverted)} migration(s); {where_it_stands(startup)}", file=streams.out)
    return 0


@dataclass(frozen=True)
class AppPlan:
    """What taking one app's history to a target would run, and where it stands."""

    app: MigrationApp
    plan: Plan
    state: MigrationState
    several: bool  # whether other apps are shown beside it (then its lines carry its label)

    def labelled(self, line: str) -> str:
        return f"{self.app.label}: {line}" if self.several else line


async def database_plans(url: str, target: Target, options: StartupOptions, apps: Sequence[MigrationApp]) -> tuple[AppPlan, ...]:
    """What taking each app's history to `target` would run now, in the order it would run (down: the service's apps
    first), read without the lock (the run re-plans under it)."""
    refuse_ambiguous_target(apps, target)
    connection = await connect(url, timeout=options.connect_timeout, application_name="langlearn-plan")
    try:
        await refuse_stranding(connection, apps, migrated_apps(options), target)
        plans = []
        for app in apps if target.direction == "up" else tuple(reversed(apps)):
            plan, state = await plan_now(connection, target, app.location, app.label)
            plans.append(AppPlan(app, plan, state, several=len(apps) > 1))
        return tuple(plans)
    finally:
        await connection.close()


async def database_plan(url: str, target: Target, options: StartupOptions, app: MigrationApp) -> tuple[Plan, MigrationState]:
    """What taking one app's history to `target` would run now, read without the lock."""
    planned = (await database_plans(url, target, options, (app,)))[0]
    return planned.plan, planned.state


async def confirmed(question: str) -> bool:
    """Ask on the terminal."""
    answer = await asyncio.to_thread(input, question)
    return answer.strip().lower() in ("y", "yes")


def where_it_stands(startup: Startup) -> str:
    """The result line, after one line per warning: all on stdout, where a pipeline reads the result."""
    state = startup.state
    assert state is not None  # read in every mode but "off"
    shown = "".join(f"warning: {finding.check}: {finding.message}\n" for finding in startup.warnings)
    return shown + _result_line(startup, state)


def _result_line(startup: Startup, state: MigrationState) -> str:
    warned = f", {len(startup.warnings)} warning(s) above" if startup.warnings else ""
    # the package's history (`state`), then the service's apps': "database at 13_… (head); notes at 1_… (head)"
    others = [(label, other) for label, other in startup.states.items() if label != APP_LABEL]
    where = "; ".join(_standing(name, each) for name, each in [("database", state), *others])
    if state.pending or any(other.pending for _, other in others):
        return f"{where} (not head: the schema is compared with the models only at head){warned}"
    return f"{where}; schema matches the models{warned}"


def _standing(name: str, state: MigrationState) -> str:
    return f"{name} at {state.current or 'no version'}" + (f", {len(state.pending)} pending" if state.pending else " (head)")


async def run_status(args: argparse.Namespace, streams: Streams) -> int:
    url = streams.direct_url()
    apps = migrated_apps(startup_options(args), args.app)
    connection = await connect(url, timeout=args.connect_timeout, application_name="langlearn-status")
    try:
        sections = [await app_status(connection, app) for app in apps]
        holder = await lock_holder(connection)
        standbys = [await standby_report(connection, url) for url in replica_urls()]
    finally:
        await connection.close()
    lock = f"migration lock: {'held by ' + holder if holder else 'free'}"
    if len(sections) == 1:  # as it always read: the versions, the lock, where it stands
        lines = [*sections[0].versions, lock, sections[0].verdict]
    else:
        lines = [line for section in sections for line in section.lines()] + [lock]
    lines += [standby.line() for standby in standbys]
    print("\n".join(lines), file=streams.out)
    return 0


@dataclass(frozen=True)
class AppStatus:
    app: MigrationApp
    versions: list[str]  # one line per migration: applied, pending, unknown, twice
    verdict: str  # where the app's history stands

    def lines(self) -> list[str]:
        """Under a heading naming the app, for a status of several apps."""
        return [f"app {self.app.label} ({self.app.folder}):", *(f"  {line}" for line in (*self.versions, self.verdict))]


async def app_status(connection: asyncpg.Connection, app: MigrationApp) -> AppStatus:
    """One app's migrations, applied, pending and unknown, and where it stands."""
    state = await history.read_state(connection, location=app.location, app=app.label)
    report = await checksums.compare(connection, history.load_history(app.location, app.label), state)
    applied = set(state.applied)
    remarks = {version: " (no digest recorded yet: the next upgrade records it)" for version in report.unrecorded}
    remarks |= {edit.version: f" (edited since it was applied: its {' and '.join(edit.parts)})" for edit in report.edited}
    lines = [f"{'applied' if version in applied else 'pending':9} {version}{remarks.get(version, '')}" for version in state.on_disk]
    lines += [f"{'unknown':9} {version} (recorded by the database, not in this code)" for version in state.unknown]
    lines += [f"{'twice':9} {version} (recorded more than once)" for version in state.duplicates]
    if state.unknown:
        verdict = "database is ahead of the code"
    elif state.pending:
        verdict = f"{len(state.pending)} pending: run `langlearn upgrade`"
    else:
        verdict = f"at head: {state.head}"
    return AppStatus(app, lines, verdict)
