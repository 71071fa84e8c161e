"""`langlearn migrations check | plan | sql | lint | state-diff | repair | stamp | aerich-config`: review and guard a release's migrations.

    check        CI: fail when the models differ from the newest migration's state (offline)
    plan         what `upgrade` / `downgrade` would run on the database now (read only)
    sql          that SQL as a psql script, or a range of the history's, offline
    lint         the SQL through squawk, with the project's allowlist
    state-diff   two migrations' model states compared, table by table
    repair       re-record the digests of applied migrations after a deliberate edit
    stamp        record migrations as applied without running them (tables built outside the history)
    aerich-config  the [tool.aerich] table that points plain `aerich` at the installed history
"""

from __future__ import annotations

import argparse
import asyncio
import json

import asyncpg

from langlearn import history
from langlearn.cli import Parser, Streams, lint, review
from langlearn.cli.deploy import (
    add_app_option,
    add_database_options,
    add_lock_wait_option,
    add_timeout_options,
    database_plan,
    database_plans,
    startup_options,
)
from langlearn.cli.verify import report
from langlearn.errors import ConfigError, Interrupted, UsageError
from langlearn.history import Target
from langlearn.history.apps import MigrationApp, configured_apps
from langlearn.history.files import BASE, Direction, History
from langlearn.history.lock import refuse_transaction_pooler
from langlearn.history.plan import Plan, assumed_applied, downgrade_plan, upgrade_plan
from langlearn.history.runner import repair, timeout_settings
from langlearn.history.script import render, render_review
from langlearn.history.stamping import Stamped, stamp
from langlearn.settings import AERICH_CONFIG, APP_LABEL
from langlearn.startup import StartupOptions, connect, migrated_apps
from langlearn.urls import redact
from langlearn.verify import Finding, Severity, VerificationResult, check_schema


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    group = commands.add_parser("migrations", help="review and guard the migrations: check, plan, sql, lint, state-diff, repair, stamp, aerich-config",
                                description="Review and guard the migration history (see each subcommand's --help).")
    sub = group.add_subparsers(dest="migrations_command", required=True, metavar="SUBCOMMAND", parser_class=Parser)
    review.register(sub)
    lint.register(sub)

    plan = sub.add_parser("plan", help="show what upgrade (or downgrade) would run on the database now, changing nothing",
                          description="Show what `langlearn upgrade` (or, with --down, `langlearn downgrade`) would run on the "
                          "database now: each migration in order, its transaction mode and statement count. Changes nothing.")
    add_target_options(plan)
    add_database_options(plan)
    add_app_option(plan)
    plan.set_defaults(handler=run_plan)

    sql = sub.add_parser("sql", help="print the SQL a release will run, as a psql script",
                         description="Print the exact SQL `langlearn upgrade` (or `downgrade`) would run, with its lock, timeouts, "
                         "transactions and bookkeeping, runnable as is with `psql -v ON_ERROR_STOP=1 -f`. Without --from: what is "
                         "pending in the database (read only). With --from: a range of the history, no database needed.")
    sql.add_argument("--from", dest="start", metavar="VERSION", help="offline: the version the database is at (`base` for an empty one)")
    sql.add_argument("--to", metavar="VERSION", help="up: the last migration to apply (default head); down: the one to end at (`base` for none)")
    sql.add_argument("--down", action="store_true", help="the downgrade's SQL instead")
    shape = sql.add_mutually_exclusive_group()
    shape.add_argument("--review", action="store_true", dest="review", default=None,
                       help="for a person: each version's mode and table locks, its statements, no bookkeeping (the default on a terminal)")
    shape.add_argument("--script", action="store_false", dest="review",
                       help="the runnable psql script, bookkeeping included (the default when the output is not a terminal)")
    add_timeout_options(sql)  # the script tries the lock once, so no --lock-wait
    add_database_options(sql)
    add_one_app_option(sql)
    sql.set_defaults(handler=run_sql)

    fix = sub.add_parser("repair", help="re-record the digests of applied migrations after a deliberate edit",
                         description="After a deliberate edit of an applied migration (a comment, a fix that changes nothing "
                         "already applied), record its current digests and models state, as Flyway's repair does. Run it on purpose: "
                         "an edit that changes what the migration does belongs in a new migration.")
    add_lock_wait_option(fix)
    add_database_options(fix)
    add_one_app_option(fix)
    fix.set_defaults(handler=run_repair)

    mark = sub.add_parser("stamp", help="record migrations as applied without running them (tables built outside the history), then check the schema",
                          description="For tables created outside the history (a schema-only dump restored, tables built by hand), as "
                          "`alembic stamp` does: record every migration up to VERSION that the database does not record yet, as `langlearn "
                          "upgrade` records an applied one (Aerich's row with its models state, the digests of its SQL), without running "
                          "any of it, in one transaction under the migration lock; Aerich's table and the digests' table are created when "
                          "missing. A database that records a version beyond VERSION, or one this code does not have, is refused unchanged. "
                          "Then, at head, the schema is compared with the models as `langlearn check` does. Exit 0: recorded, and the "
                          "schema matches (warnings listed) or the database is not at head yet; 1: refused, or the schema differs (listed); "
                          "2: usage, configuration or unreachable server.")
    mark.add_argument("version", metavar="VERSION", help="the last migration to record: its number, its file name, or `head`")
    add_lock_wait_option(mark)
    add_database_options(mark)
    add_one_app_option(mark)
    mark.set_defaults(handler=run_stamp)

    aerich = sub.add_parser("aerich-config", help="print the [tool.aerich] table that points plain `aerich` at this installation's history",
                            description="Print the pyproject.toml table with which `aerich upgrade`, `downgrade`, `heads` and `history`, "
                            "run from that file's folder, use the migrations installed with this package and its config (the migration "
                            "lock, the session limits: see docs/migrations.md). Prints only; needs no database.")
    aerich.set_defaults(handler=run_aerich_config)


def add_target_options(parser: Parser) -> None:
    parser.add_argument("--down", action="store_true", help="the downgrade instead (needs --to or --steps)")
    parser.add_argument("--to", metavar="VERSION", help="up: the last migration to apply (default head); down: the one to end at (`base` for none)")
    parser.add_argument("--steps", type=int, metavar="K", help="down: revert the K newest applied migrations")


def target_of(args: argparse.Namespace) -> Target:
    direction: Direction = "down" if args.down else "up"
    if args.steps is not None and not args.down:
        raise UsageError("--steps counts migrations to revert; use it with --down")
    if args.down and args.steps is None and args.to is None:
        raise UsageError("--down needs a target: --to VERSION (or `base`) or --steps K")
    return Target(direction, args.to, args.steps)


async def run_plan(args: argparse.Namespace, streams: Streams) -> int:
    url = streams.direct_url()
    target = target_of(args)
    options = startup_options(args)
    apps = migrated_apps(options, args.app)
    lines: list[str] = []
    hints: list[str] = []
    for planned in await database_plans(url, target, options, apps):
        plan, state = planned.plan, planned.state
        lines.append(planned.labelled(f"{redact(url)}: at {state.current or 'no version'} ({len(set(state.applied))} applied, {len(state.pending)} pending)"))
        lines.append(planned.labelled(plan.summary()))
        lines += [f"  {number}. {step.describe()}" for number, step in enumerate(plan.steps, 1)]
        if plan.adopt:
            lines.append(planned.labelled(f"first: record the digests of {len(plan.adopt)} migration(s) applied before langlearn kept them"))
        if plan.steps:
            sql = "langlearn migrations sql" + (f" --app {planned.app.label}" if planned.several else "")
            sql += f" --to {target.version}" if target.direction == "up" and target.version else ""
            sql += f" --down --to {plan.end or 'base'}" if target.direction == "down" else ""
            hints.append(sql)
    if hints:
        command = "langlearn upgrade" if target.direction == "up" else "langlearn downgrade"
        option = f" --to {target.version}" if target.version else (f" --steps {target.steps}" if target.steps else "")
        option += "".join(f" --app {name}" for name in args.app)
        lines.append(f"nothing was changed; `{command}{option}` runs it, `{'`, `'.join(hints)}` prints its SQL")
    print("\n".join(lines), file=streams.out)
    return 0


async def run_sql(args: argparse.Namespace, streams: Streams) -> int:
    options = startup_options(args)
    if args.start is not None:
        app = one_app(options, args.app)
        plan = offline_plan(history.load_history(app.location, app.label), args.start, args.to, args.down)
        title = f"langlearn migrations sql --from {args.start}"
    else:
        url = streams.direct_url()
        target = Target("down" if args.down else "up", args.to)
        if args.down and args.to is None:
            raise UsageError("--down needs --to VERSION (or `base`): the migration the database ends at")
        plan, _ = await database_plan(url, target, options, one_app(options, args.app))
        title = f"langlearn migrations sql for {redact(url)}"
    review = args.review if args.review is not None else streams.out.isatty()
    if review:
        streams.out.write(render_review(plan, title=title))
        return 0
    settings = timeout_settings(lock_timeout=options.lock_timeout, statement_timeout=options.statement_timeout)
    streams.out.write(render(plan, settings=settings, title=title))
    return 0


def add_one_app_option(parser: Parser) -> None:
    parser.add_argument("--app", metavar="NAME", help="a service's app declared in pyproject.toml (default: `models`, this package's)")


def one_app(options: StartupOptions, name: str | None) -> MigrationApp:
    """The one app whose history the command works on: --app's, else the package's."""
    return migrated_apps(options, (name or APP_LABEL,))[0]


def offline_plan(files: History, start: str, to: str | None, down: bool) -> Plan:
    """A range of the history, with no database: the database is assumed to be at `start`."""
    at = files.resolve(start)
    applied = assumed_applied(files, at)
    if down:
        if to is None:
            raise UsageError("--down needs --to VERSION (or `base`): the migration the database ends at")
        return downgrade_plan(files, applied, files.resolve(to))
    if to == BASE:
        raise UsageError("`base` is where a downgrade ends; add --down, or name the last migration to apply")
    return upgrade_plan(files, applied, files.resolve(to) if to else None)


async def run_repair(args: argparse.Namespace, streams: Streams) -> int:
    url = streams.direct_url()
    options = startup_options(args)
    connection = await connect(url, timeout=options.connect_timeout, application_name="langlearn-repair")
    try:
        await refuse_transaction_pooler(connection, url)
        app = one_app(options, args.app)
        done = await repair(connection, location=app.location, lock_wait=options.lock_wait, app=app.label)
    finally:
        await connection.close()
    lines = [f"re-recorded {edit.version}: its {' and '.join(edit.parts)} as the file now has it" for edit in done.edits]
    lines += [f"recorded {version}: its digests, for the first time" for version in done.adopted]
    lines.append("nothing to repair: every applied migration matches its file" if not lines else f"repaired {len(done.edits) + len(done.adopted)} migration(s)")
    print("\n".join(lines), file=streams.out)
    return 0


async def run_aerich_config(args: argparse.Namespace, streams: Streams) -> int:
    # json's string quoting is TOML's basic string (a path with a quote or a backslash stays one value)
    # Aerich's `location` is the service's own: the package's `models` history is found in the package when it holds
    # no models/ folder (langlearn.history.aerich.with_service_apps), so the table is the same wherever it is installed
    print(f"[tool.aerich]\ntortoise_orm = {json.dumps(AERICH_CONFIG)}\nlocation = \"./migrations\"\nsrc_folder = \"./.\"", file=streams.out)
    return 0


async def run_stamp(args: argparse.Namespace, streams: Streams) -> int:
    url = streams.direct_url()
    options = startup_options(args)
    connection = await connect(url, timeout=options.connect_timeout, application_name="langlearn-stamp")
    try:
        await refuse_transaction_pooler(connection, url)
        app = one_app(options, args.app)
        done = await stamp(connection, args.version, location=app.location, lock_wait=options.lock_wait, app=app.label)
        print("\n".join(stamp_lines(done)), file=streams.out)
        if done.state.pending:  # the models describe head: below it, `langlearn upgrade` compares once it gets there
            print(f"schema not compared: the models describe head and {len(done.state.pending)} migration(s) are pending; "
                  "`langlearn upgrade` applies them, then compares", file=streams.out)
            return 0
        findings = await stamped_schema_findings(connection, url)
    finally:
        await connection.close()
    errors = [finding for finding in findings if finding.severity is Severity.ERROR]
    if findings:
        print(report(VerificationResult(findings=tuple(findings), checks=("schema",)), redact(url)), file=streams.out)
    if errors:
        print(f"the schema differs from the models ({len(errors)} error(s) above); the stamp stays recorded: fix the differences "
              "(in a new migration, or by hand where the tables were built wrong), then run `langlearn check`", file=streams.out)
        return 1
    print("schema matches the models" + (f" ({len(findings)} warning(s) above)" if findings else ""), file=streams.out)
    return 0


def stamp_lines(done: Stamped) -> list[str]:
    """What a stamp created and recorded, one line each, and where the database stands."""
    lines = [f"created the bookkeeping table {table}" for table in done.created]
    lines += [f"recorded {version} as applied (its models state and digests); none of its SQL ran" for version in done.recorded]
    if done.adopted:
        lines.append(f"recorded the digests of {len(done.adopted)} migration(s) applied before langlearn kept them ({', '.join(done.adopted)})")
    head = " (head)" if not done.state.pending else f", {len(done.state.pending)} pending"
    if done.recorded:
        lines.append(f"stamped {len(done.recorded)} migration(s) without running them; the database is at {done.state.current}{head}")
    else:
        lines.append(f"nothing to stamp: the database already records every migration up to {done.target}{head}")
    return lines


async def stamped_schema_findings(connection: asyncpg.Connection, url: str) -> list[Finding]:
    """The schema check `langlearn check` runs (the service's declared apps' tables compared too), on the stamped database
    (the stamp is committed by now)."""
    try:
        return await check_schema(connection, apps={app.label: app.models for app in configured_apps()})
    except asyncio.CancelledError:
        raise Interrupted("the stamp is recorded; the schema check did not finish: run `langlearn check`") from None
    except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as problem:
        raise ConfigError(
            f"the stamp is recorded, but the schema check could not run on {redact(url)} ({type(problem).__name__}: {problem}); "
            "run `langlearn check` once it can"
        ) from None
