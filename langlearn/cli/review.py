"""`langlearn migrations check` and `langlearn migrations state-diff A B`: offline review of the migrations' model states.

Neither connects to a database (nor starts the private server): they read the migration files and
describe the models from the code. `check` exits 1 when the models moved on from the newest
migration, or their native enum types from those the history creates, which is what CI wants;
`state-diff` shows what one migration changed against another.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from langlearn.cli import Parser, Streams
from langlearn.errors import UsageError
from langlearn.history.apps import configured_apps, package_app
from langlearn.history.files import History, load_history
from langlearn.history.review import ModelChanges, describe_current_models, model_changes, render_state_diff, state_diff
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION

MODELS = "models"  # a VERSION naming the current models instead of a migration
MAKE_IT = "review and complete it by hand (docs/migrations.md), then commit it with the model change"


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    check = commands.add_parser(
        "check",
        help="check offline that the models agree with the newest migration (exit 1 when `aerich migrate` would generate something)",
        description="Compare the models with the state recorded by the newest migration file, and their native enum types with "
        "those the history's SQL creates (Aerich writes no CREATE TYPE), without a database. Exit 0 when they agree; 1 with the "
        "differences, the SQL `aerich migrate` would generate and the enum statements to add; 2 when it could not run.",
    )
    _migrations_option(check)
    check.set_defaults(handler=run_check)
    diff = commands.add_parser(
        "state-diff",
        help="show the tables, fields and indexes added, removed and changed from one migration's model state to another's",
        description="Show, without a database, how the models state recorded by migration A differs from B's: "
        "tables, fields and indexes added, removed and changed. Name a migration by number (3) or file name; "
        f"`base` is the state before the first migration and `{MODELS}` the current models.",
    )
    diff.add_argument("old", metavar="A", help=f"the migration to compare from: a number, a file name, `base` or `{MODELS}`")
    diff.add_argument("new", metavar="B", help=f"the migration to compare to: a number, a file name, `base` or `{MODELS}`")
    _migrations_option(diff)
    diff.set_defaults(handler=run_state_diff)


def _migrations_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--migrations", metavar="DIR", default=MIGRATIONS_LOCATION,
        help=f"Aerich's `location`: the folder holding {APP_LABEL}/ with the migration files (default: the shipped history)",
    )


async def run_check(options: argparse.Namespace, streams: Streams) -> int:
    """The package's models against its history, then each of the service's declared apps' against theirs."""
    services = configured_apps()
    disagree = 0
    for app in (package_app(options.migrations), *services):
        changes = await model_changes(app.location, app=app.label, services=services)
        aerich = f"aerich --app {app.label}" if services else "aerich"
        where = f"app {app.label}: " if services else ""
        if changes.agree:
            print(f"{where}models agree with {changes.head}: `{aerich} migrate` would generate nothing", file=streams.out)
        else:
            disagree += 1
            print(f"{where}{check_report(changes, aerich)}", file=streams.out)
    return 1 if disagree else 0


def check_report(changes: ModelChanges, aerich: str = "aerich") -> str:
    """What differs, the SQL Aerich would write for it, and what to do."""
    if changes.state_agrees:  # only the native enum types: Aerich's diff is clean, the upgrade would fail
        header = f"models agree with {changes.head}, but the native enum types differ from those the history creates (Aerich writes no SQL for them):"
        return "\n".join([header, *map(str, changes.enum_problems)])
    lines = [render_state_diff(changes.changes, changes.head, "the models")]
    if changes.upgrade_sql:
        lines += ["", f"`{aerich} migrate` would generate, to upgrade:", *_statements(changes.upgrade_sql)]
        lines += ["and to downgrade:", *(_statements(changes.downgrade_sql) or ["    (nothing)"])]
    else:  # Aerich ignores some changes (an on_delete, a table comment): it would say "No changes detected"
        lines += ["", f"`{aerich} migrate` would generate no SQL for these changes (Aerich does not handle them)"]
    lines += [f"Aerich warns: {warning}" for warning in changes.aerich_warnings]
    if changes.enum_problems:
        lines += ["", "and the native enum types, which Aerich writes no SQL for (one line each):", *map(str, changes.enum_problems)]
    if changes.upgrade_sql:
        lines += ["", f"fix: run `{aerich} migrate --name <verb_object>`, {MAKE_IT}"]
    else:
        lines += ["", f"fix: run `{aerich} migrate --empty --name <verb_object>` (it records the models' state), write its SQL, {MAKE_IT}"]
    return "\n".join(lines)


def _statements(sql: tuple[str, ...]) -> list[str]:
    return [f"    {line}" for statement in sql for line in f"{statement};".splitlines()]


@dataclass(frozen=True)
class _NamedState:
    label: str
    state: dict[str, Any]


async def run_state_diff(options: argparse.Namespace, streams: Streams) -> int:
    history = load_history(options.migrations)
    old, new = await _state(history, options.old), await _state(history, options.new)
    print(render_state_diff(state_diff(old.state, new.state), old.label, new.label), file=streams.out)
    return 0


async def _state(history: History, spec: str) -> _NamedState:
    if spec.strip() == MODELS:
        return _NamedState("the models", await describe_current_models())
    try:
        migration = history.resolve(spec)
    except UsageError as error:
        raise UsageError(f"{error}, or `{MODELS}` for the current models") from None
    if migration is None:
        return _NamedState("base", {})
    return _NamedState(migration.version, migration.models_state)
