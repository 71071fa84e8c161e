"""Compare the versions recorded in the `aerich` table with the migration files the code ships."""

from __future__ import annotations

import asyncpg

from langlearn.history import checksums, load_history, read_state
from langlearn.history.state import has_table
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION
from langlearn.verify.findings import Finding, error, warning

CHECK = "migrations"


async def check_migrations(connection: asyncpg.Connection, location: str = MIGRATIONS_LOCATION, app: str = APP_LABEL) -> list[Finding]:
    """Findings for a missing history, pending versions, versions unknown to the code, duplicated rows,
    applied versions whose file (SQL or models state) was edited since, and applied versions without recorded digests
    (of `app`'s history: the package's, or a service's app's)."""
    state = await read_state(connection, location=location, app=app)
    if not state.applied and not await has_table(connection, "aerich"):
        return [error(
            CHECK, "missing_migration_table", "aerich",
            "the database has no aerich table, so no migration was ever applied; run `langlearn upgrade`",
            pending=list(state.pending),
        )]
    findings = [
        error(
            CHECK, "pending_migration", version,
            f"migration {version} is not applied (the database is at {state.current or 'no version'}, "
            f"the code at {state.head}); run `langlearn upgrade`",
            current=state.current, head=state.head,
        )
        for version in state.pending
    ]
    findings += [
        error(
            CHECK, "unknown_migration", version,
            f"the database recorded migration {version}, which this code does not have: the database is ahead of "
            f"the code; deploy the newer code, or downgrade the database with the newer code (`langlearn downgrade`)",
            head=state.head,
        )
        for version in state.unknown
    ]
    findings += [
        error(
            CHECK, "duplicate_migration", version,
            f"migration {version} is recorded {state.applied.count(version)} times (two processes upgraded at once); "
            f"check the schema findings, then keep the first row: DELETE FROM aerich a USING aerich b "
            f"WHERE a.app = '{app}' AND a.version = '{version}' AND b.app = a.app AND b.version = a.version AND a.id > b.id",
            count=state.applied.count(version),
        )
        for version in state.duplicates
    ]
    report = await checksums.compare(connection, load_history(location, app), state)
    findings += [error(CHECK, "edited_migration", edit.version, edit.message, edited=list(edit.parts)) for edit in report.edited]
    if report.unrecorded:
        findings.append(warning(
            CHECK, "unrecorded_checksums", checksums.CHECKSUM_TABLE,
            f"{len(report.unrecorded)} applied migration(s) have no recorded digest (applied before langlearn kept them, or by an "
            f"`aerich upgrade` that could not record them): an edit of their SQL would go unnoticed; `langlearn upgrade` records them",
            versions=list(report.unrecorded),
        ))
    return findings
