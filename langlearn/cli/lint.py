"""`langlearn migrations lint`: the migrations' upgrade SQL through squawk, judged by the project's allowlist.

Every migration by default, with no database: the reviewed ones pass through the allowlist, so the
only findings that fail are those of a new or changed migration (see `langlearn.history.lint`).
Exit status: 0 when no finding is new, 1 when one is, 2 when the lint could not run (squawk missing,
an unreadable allowlist or migration, a version not in the folder), with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from langlearn.cli import Parser, Streams
from langlearn.errors import UsageError
from langlearn.history.files import BASE, History, Migration, load_history
from langlearn.history.lint import ALLOWLIST_NAME, LintReport, lint
from langlearn.settings import MIGRATIONS_LOCATION


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    command = commands.add_parser(
        "lint",
        help="check the migrations' SQL with squawk (the [lint] extra); fails on a finding the allowlist does not accept",
        description="Run the upgrade SQL of each migration, as the runner sends it, through squawk, the PostgreSQL "
        f"migration linter, and judge its findings with the allowlist (DIR/{ALLOWLIST_NAME}). Needs no database. "
        "Exit 0 when no finding is new, 1 when one is, 2 when the lint could not run.",
    )
    command.add_argument(
        "versions", nargs="*", metavar="VERSION",
        help="a migration's number or file name (default: every migration; the reviewed ones pass through the allowlist)",
    )
    command.add_argument(
        "--migrations", default=MIGRATIONS_LOCATION, metavar="DIR",
        help="the migrations folder, as Aerich's `location` (default: the one shipped in this package)",
    )
    command.add_argument(
        "--allowlist", type=Path, metavar="FILE",
        help=f"the accepted findings and excluded rules (default: DIR/{ALLOWLIST_NAME}, none when it does not exist)",
    )
    command.set_defaults(handler=run)


async def run(args: argparse.Namespace, streams: Streams) -> int:
    history = load_history(args.migrations)
    migrations = _chosen(history, args.versions)
    allowlist = args.allowlist
    if allowlist is None:
        default = Path(args.migrations) / ALLOWLIST_NAME
        allowlist = default if default.is_file() else None
    # squawk runs in a subprocess: in a thread, so that SIGINT and SIGTERM still cancel the command at once
    report = await asyncio.to_thread(lint, migrations, allowlist)
    print(render(report, allowlist), file=streams.out)
    return report.exit_code


def _chosen(history: History, specs: list[str]) -> list[Migration]:
    """The migrations named (each once, in the history's order), or all of them."""
    if not specs:
        return list(history)
    chosen = set()
    for spec in specs:
        migration = history.resolve(spec)
        if migration is None:
            raise UsageError(f"`{BASE}` names no migration to lint; name one by number or file name, or none for all of them")
        chosen.add(migration.version)
    return [migration for migration in history if migration.version in chosen]


def render(report: LintReport, allowlist: Path | None) -> str:
    """Each finding (`FILE:LINE rule: message`, the SQL, and the reason it is allowed), stale entries, the summary."""
    lines: list[str] = []
    for judged in report.findings:
        finding = judged.finding
        advice = f" {finding.help}" if finding.help else ""
        lines.append(f"{finding.where} {finding.rule}: {finding.message}{advice}")
        lines.append(f"    {finding.excerpt}")
        lines.append(f"    allowed: {judged.allowed_by.reason}" if judged.allowed_by else "    NEW")
    for stale in report.stale:
        lines.append(f"warning: stale allowlist entry {stale.entry.describe()}: {stale.why}")
    if report.excluded:
        lines.append(f"rules excluded by the allowlist: {', '.join(entry.rule for entry in report.excluded)}")
    migrations = _count(len(report.versions), "migration")
    allowed = f"({len(report.allowed)} allowed)"
    if report.new:
        lines.append(f"{_count(len(report.new), 'new finding')} in {migrations} {allowed}")
        where = allowlist or f"DIR/{ALLOWLIST_NAME}"
        lines.append(f"fix each NEW finding in its migration, or accept it in {where} with the reason it is safe")
    else:
        lines.append(f"no new finding in {migrations} {allowed}")
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
