"""`langlearn verify`: check the database against the models, the migration history and the data invariants.

Exit status: 0 when nothing is found, 1 when anything is (errors or warnings), 2 when the check
could not run (configuration, connection), with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse

from langlearn.cli import Parser, Streams
from langlearn.errors import UsageError
from langlearn.history.apps import configured_apps, select_apps
from langlearn.settings import MIGRATIONS_LOCATION
from langlearn.urls import redact
from langlearn.verify import Finding, VerificationResult, verify


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    command = commands.add_parser(
        "verify",
        help="check the database against the models, the migrations and the data invariants",
        description="Check the database named by DATABASE_URL (or the private server) against the models, "
        "the migration history and the data invariants. Exit 0 clean, 1 findings, 2 could not run.",
    )
    command.add_argument("--json", action="store_true", help="print the result as JSON (for machines) instead of a report")
    command.add_argument("--skip-schema", action="store_true", help="do not compare tables, columns, constraints, indexes and enums with the models")
    command.add_argument("--skip-migrations", action="store_true", help="do not compare the aerich table with the migration files")
    command.add_argument("--skip-invariants", action="store_true", help="do not check the data invariants (the only part that reads whole tables)")
    command.add_argument(
        "--migrations", default=MIGRATIONS_LOCATION, metavar="DIR",
        help="the migrations folder, as Aerich's `location` (default: the one shipped in this package)",
    )
    command.add_argument(
        "--app", action="append", default=[], metavar="NAME | LABEL=MODULE[,MODULE]", type=app_argument,
        help="a service's own Tortoise app, whose tables are compared with its models (repeatable): the NAME of one declared in "
        "pyproject.toml under [tool.langlearn.apps.NAME] (default: every one declared there, their histories checked too), "
        "or one without a history, e.g. notes=myservice.models",
    )
    command.add_argument(
        "--ignore-table", action="append", default=[], metavar="NAME",
        help="a table the schema check leaves alone (repeatable; shell patterns such as 'tmp_*' work)",
    )
    command.set_defaults(handler=run)


def app_argument(text: str) -> tuple[str, tuple[str, ...]]:
    """`LABEL=MODULE[,MODULE]` as (label, modules); a declared app's NAME as (name, ())."""
    label, equals, modules = text.partition("=")
    names = tuple(name.strip() for name in modules.split(",") if name.strip())
    if not label.strip().isidentifier() or (equals and not names):
        raise argparse.ArgumentTypeError(f"{text!r} is neither an app's NAME nor LABEL=MODULE[,MODULE] (e.g. notes=myservice.models)")
    return label.strip(), names


async def run(options: argparse.Namespace, streams: Streams) -> int:
    if options.skip_schema and options.skip_migrations and options.skip_invariants:
        raise UsageError("every check is skipped, nothing to verify; drop one of the --skip options")
    url = streams.configured_url()
    declared = [label for label, modules in options.app if not modules]
    histories = select_apps(configured_apps(), declared)
    result = await verify(
        url, schema=not options.skip_schema, migrations=not options.skip_migrations, invariants=not options.skip_invariants,
        location=options.migrations, apps={label: modules for label, modules in options.app if modules},
        ignore_tables=tuple(options.ignore_table), histories=histories,
    )
    print(result.to_json() if options.json else report(result, redact(url)), file=streams.out)
    return result.exit_code
def report(result: VerificationResult, where: str) -> str:
    """The findings grouped by severity, each with its machine names and the line to act on."""
    errors, warnings = result.errors, result.warnings
    checked = ", ".join(result.checks)
    if result.ok:
        return f"{where}: clean ({checked})"
    lines = [f"{where}: {_count(len(errors), 'error')}, {_count(len(warnings), 'warning')} ({checked})"]
    for title, findings in (("Errors", errors), ("Warnings", warnings)):
        if findings:
            lines += ["", f"{title}:"]
            lines += [line for finding in findings for line in _lines(finding)]
    return "\n".join(lines)


def _lines(finding: Finding) -> list[str]:
    return [f"  [{finding.check}] {finding.kind}: {finding.subject}", f"      {finding.message}"]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
