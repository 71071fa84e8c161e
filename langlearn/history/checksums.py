"""The bookkeeping of applied migrations: Aerich's `aerich` row and a SHA-256 of the SQL each one ran.

Aerich records a version and its models state, so an edit of `MODELS_STATE` after a migration was
applied shows, but an edit of its SQL does not: a database and a fresh one built from the same
files would silently differ. Like Flyway's `validate`, the digests of each migration's upgrade and
downgrade SQL are kept when it is applied, in `aerich_checksums` beside Aerich's table (Aerich's own
table stays as Aerich writes it, so `aerich` itself keeps working), and every later run compares.

Every write here is a SQL statement with its values inlined, so the runner executes exactly the
text `langlearn migrations sql` prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import asyncpg

from langlearn.compat import encode_models_state
from langlearn.history.files import History, Migration
from langlearn.history.state import MigrationState, has_table, recorded_models_states
from langlearn.settings import APP_LABEL

CHECKSUM_TABLE = "aerich_checksums"
# Aerich's own table as `aerich init-db` creates it (Tortoise's schema for `aerich.models.Aerich`), the
# statement migration 0 carries; written here for a database whose history starts without it (a stamp)
CREATE_AERICH_TABLE = """CREATE TABLE IF NOT EXISTS "aerich" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSONB NOT NULL
)"""
# How a digest came to be recorded: by the run that applied the migration, on the first run that
# found it applied without one (applied before checksums were kept, or by an `aerich upgrade` that could not record them), or by
# `langlearn migrations repair` after a deliberate edit.
RecordedBy = Literal["apply", "adopt", "repair"]

CREATE_CHECKSUM_TABLE = f"""CREATE TABLE IF NOT EXISTS "{CHECKSUM_TABLE}" (
    "app" VARCHAR(100) NOT NULL,
    "version" VARCHAR(255) NOT NULL,
    "upgrade_sha256" CHAR(64) NOT NULL,
    "downgrade_sha256" CHAR(64) NOT NULL,
    "recorded_by" VARCHAR(10) NOT NULL,
    "recorded_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY ("app", "version")
)"""

EDIT_HINT = "restore it, put the change in a new migration; if the edit was deliberate, run `langlearn migrations repair{app}`"


def literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings, on by default since PostgreSQL 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def _key(migration: Migration) -> str:
    return f'"app" = {literal(migration.app)} AND "version" = {literal(migration.version)}'


def record_checksum(migration: Migration, recorded_by: RecordedBy) -> str:
    return (
        f'INSERT INTO "{CHECKSUM_TABLE}" ("app", "version", "upgrade_sha256", "downgrade_sha256", "recorded_by") '
        f"VALUES ({literal(migration.app)}, {literal(migration.version)}, {literal(migration.upgrade_digest)}, "
        f"{literal(migration.downgrade_digest)}, {literal(recorded_by)}) "
        'ON CONFLICT ("app", "version") DO UPDATE SET "upgrade_sha256" = EXCLUDED."upgrade_sha256", '
        '"downgrade_sha256" = EXCLUDED."downgrade_sha256", "recorded_by" = EXCLUDED."recorded_by", "recorded_at" = now()'
    )


def record_applied(migration: Migration) -> tuple[str, ...]:
    """What marks a migration applied: Aerich's row (as `aerich upgrade` writes it) and its digests."""
    content = encode_models_state(migration.models_state)
    return (
        f'INSERT INTO "aerich" ("version", "app", "content") VALUES ({literal(migration.version)}, {literal(migration.app)}, {literal(content)}::jsonb)',
        record_checksum(migration, "apply"),
    )


def record_reverted(migration: Migration) -> tuple[str, ...]:
    """What marks a migration reverted: both of its rows gone (as `aerich downgrade` deletes Aerich's)."""
    return (f'DELETE FROM "aerich" WHERE {_key(migration)}', f'DELETE FROM "{CHECKSUM_TABLE}" WHERE {_key(migration)}')


def forget_reverted(app: str) -> str:
    """Forget the digests of `app`'s versions no longer applied (reverted by `aerich downgrade`, which knows only its own table)."""
    return (
        f'DELETE FROM "{CHECKSUM_TABLE}" c WHERE "app" = {literal(app)} '
        f'AND NOT EXISTS (SELECT FROM "aerich" a WHERE a."app" = c."app" AND a."version" = c."version")'
    )


def record_models_state(migration: Migration) -> str:
    """Re-record the models state of an applied migration (the repair of a deliberate `MODELS_STATE` edit)."""
    return f'UPDATE "aerich" SET "content" = {literal(encode_models_state(migration.models_state))}::jsonb WHERE {_key(migration)}'


@dataclass(frozen=True)
class Edit:
    """An applied migration whose file no longer says what the database recorded when it ran."""

    version: str
    parts: tuple[str, ...]  # "upgrade SQL", "downgrade SQL", "models state"
    app: str = APP_LABEL

    @property
    def message(self) -> str:
        whose = "" if self.app == APP_LABEL else f" of app {self.app!r}"
        repair = "" if self.app == APP_LABEL else f" --app {self.app}"
        return f"migration {self.version}{whose} was edited after it was applied (its {' and '.join(self.parts)} changed): {EDIT_HINT.format(app=repair)}"


@dataclass(frozen=True)
class ChecksumReport:
    """Applied migrations compared with their files: the edited ones, and those applied without a digest."""

    edited: tuple[Edit, ...]
    unrecorded: tuple[str, ...]


async def compare(connection: asyncpg.Connection, history: History, state: MigrationState) -> ChecksumReport:
    """Compare every applied migration the code has with the digests and models state recorded for it."""
    recorded: dict[str, asyncpg.Record] = {}
    if await has_table(connection, CHECKSUM_TABLE):
        rows = await connection.fetch(f'SELECT * FROM "{CHECKSUM_TABLE}" WHERE "app" = $1', history.app)
        recorded = {row["version"]: row for row in rows}
    states = await recorded_models_states(connection, history.app)
    edited: list[Edit] = []
    unrecorded: list[str] = []
    for version in dict.fromkeys(state.applied):
        if version not in history.versions:
            continue
        migration = history.get(version)
        parts: list[str] = []
        digests = recorded.get(version)
        if digests is None:
            unrecorded.append(version)
        else:
            if digests["upgrade_sha256"] != migration.upgrade_digest:
                parts.append("upgrade SQL")
            if digests["downgrade_sha256"] != migration.downgrade_digest:
                parts.append("downgrade SQL")
        if migration.compressed_state and version in states and json.loads(encode_models_state(migration.models_state)) != states[version]:
            parts.append("models state")
        if parts:
            edited.append(Edit(version, tuple(parts), history.app))
    return ChecksumReport(edited=tuple(edited), unrecorded=tuple(unrecorded))
