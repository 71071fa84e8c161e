"""Compare the versions recorded in the `aerich` table with the migration files the code ships."""

from __future__ import annotations

import asyncpg

from langlearn.history import edited_versions, read_state
from langlearn.settings import APP_LABEL
from langlearn.verify.findings import Finding, error

CHECK = "migrations"


async def check_migrations(connection: asyncpg.Connection) -> list[Finding]:
    """Findings for a missing history, pending versions, versions unknown to the code, duplicated rows,
    and applied versions whose file was edited since."""
    state = await read_state(connection)
    if not state.applied and not await connection.fetchval("SELECT to_regclass('aerich') IS NOT NULL"):
        return [error(
            CHECK, "missing_migration_table", "aerich",
            "the database has no aerich table, so no migration was ever applied; run `aerich upgrade`",
            pending=list(state.pending),
        )]
    findings = [
        error(
            CHECK, "pending_migration", version,
            f"migration {version} is not applied (the database is at {state.current or 'no version'}, "
            f"the code at {state.head}); run `aerich upgrade`",
            current=state.current, head=state.head,
        )
        for version in state.pending
    ]
    findings += [
        error(
            CHECK, "unknown_migration", version,
            f"the database recorded migration {version}, which this code does not have: the database is ahead of "
            f"the code; deploy the newer code, or downgrade the database with the newer code (`aerich downgrade`)",
            head=state.head,
        )
        for version in state.unknown
    ]
    findings += [
        error(
            CHECK, "duplicate_migration", version,
            f"migration {version} is recorded {state.applied.count(version)} times (two processes upgraded at once); "
            f"check the schema findings, then keep the first row: DELETE FROM aerich a USING aerich b "
            f"WHERE a.app = '{APP_LABEL}' AND a.version = '{version}' AND b.app = a.app AND b.version = a.version AND a.id > b.id",
            count=state.applied.count(version),
        )
        for version in state.duplicates
    ]
    findings += [
        error(
            CHECK, "edited_migration", version,
            f"migration {version} was edited after this database applied it: the models state in the file is not the one "
            f"recorded in the aerich table; restore the file from version control and put the change in a new migration "
            f"(`aerich migrate --name ...`), then check the schema findings",
        )
        for version in await edited_versions(connection, state)
    ]
    return findings
