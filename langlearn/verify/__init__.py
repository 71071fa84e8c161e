"""Verify a live database against the models, the migration history and the data invariants.

Each check is an async function of an open asyncpg connection returning findings, so the same
checks serve the CLI (`langlearn verify`), the startup check and a health endpoint:

    result = await verify(url)            # or: findings = await check_schema(connection)
    result.exit_code, result.errors, result.warnings, result.to_json()

The expected schema is derived from the model classes (`expected_schema()`), never kept by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from langlearn.errors import ConfigError
from langlearn.history.apps import MigrationApp, package_app
from langlearn.settings import MIGRATIONS_LOCATION, open_connection
from langlearn.urls import redact, validate_url
from langlearn.verify.expected import AppModules, expected_schema
from langlearn.verify.findings import CHECKS, Finding, Severity, VerificationResult
from langlearn.verify.history import check_migrations
from langlearn.verify.invariants import check_invariants
from langlearn.verify.schema import check_schema

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "Finding",
    "Severity",
    "VerificationResult",
    "check_invariants",
    "check_migrations",
    "check_schema",
    "expected_schema",
    "verify",
]


async def check_histories(apps: Sequence[MigrationApp], connection: asyncpg.Connection) -> list[Finding]:
    """The migrations check of each app's history, in order."""
    return [finding for app in apps for finding in await check_migrations(connection, app.location, app.label)]


async def verify(
    url: str, *, schema: bool = True, migrations: bool = True, invariants: bool = True, location: str = MIGRATIONS_LOCATION,
    apps: AppModules | None = None, ignore_tables: Sequence[str] = (), histories: Sequence[MigrationApp] = (),
) -> VerificationResult:
    """Run the chosen checks on the database at `url` (`location`: the migrations folder, Aerich's `location`).
    `apps` (label -> model modules) are a service's own apps, whose tables the schema check compares with their
    models; it leaves `ignore_tables` (names or patterns) alone (langlearn.verify.ownership). `histories` are a
    service's apps with an Aerich history: their histories are checked as the package's is, their tables compared.

    Raises `ConfigError` (one line, password hidden) when the checks cannot run: a malformed or
    unreachable URL, or a database refusing the catalog queries.
    """
    import asyncpg

    url = validate_url(url)
    # migrations first: a pending migration explains most schema findings that follow
    chosen = [(name, check) for name, check, wanted in (
        ("migrations", partial(check_histories, (package_app(location), *histories)), migrations),
        ("schema", partial(check_schema, apps={**(apps or {}), **{app.label: app.models for app in histories}}, ignore=ignore_tables, location=location), schema),
        ("invariants", check_invariants, invariants),
    ) if wanted]
    findings: list[Finding] = []
    connection = await open_connection(url)
    try:
        for name, check in chosen:
            try:
                findings += await check(connection)
            except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as problem:
                raise ConfigError(f"the {name} check could not run on {redact(url)} ({type(problem).__name__}: {problem})") from None
    finally:
        await connection.close()
    return VerificationResult(findings=tuple(findings), checks=tuple(name for name in CHECKS if name in dict(chosen)))
