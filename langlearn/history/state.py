"""Where a database stands: the versions its `aerich` table records against the files the code ships."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg

from langlearn.history.files import app_folder, version_files, version_number
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION


@dataclass(frozen=True)
class MigrationState:
    """What the code ships (`on_disk`) against what the database recorded (`applied`, in order)."""

    on_disk: tuple[str, ...]
    applied: tuple[str, ...]

    @property
    def pending(self) -> list[str]:
        return [version for version in self.on_disk if version not in self.applied]

    @property
    def unknown(self) -> list[str]:
        """Versions the database recorded that the code does not have: the database is ahead."""
        return [version for version in dict.fromkeys(self.applied) if version not in self.on_disk]

    @property
    def duplicates(self) -> list[str]:
        """Versions recorded more than once: the trace of two processes upgrading at once."""
        return [version for version, count in Counter(self.applied).items() if count > 1]  # in the order they were applied

    @property
    def current(self) -> str | None:
        """The newest applied version the code knows."""
        known = [version for version in self.applied if version in self.on_disk]
        return max(known, key=version_number) if known else None

    @property
    def head(self) -> str | None:
        return self.on_disk[-1] if self.on_disk else None

    @property
    def at_head(self) -> bool:
        return not (self.pending or self.unknown or self.duplicates)


async def has_table(connection: asyncpg.Connection, name: str) -> bool:
    return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", f'public."{name}"'))


async def read_state(connection: asyncpg.Connection, *, location: str = MIGRATIONS_LOCATION, app: str = APP_LABEL) -> MigrationState:
    """Read `app`'s applied versions through an asyncpg connection; no `aerich` table means none applied.

    `location` is the migrations folder (Aerich's `location`, holding one folder per app)."""
    folder = app_folder(location, app)
    applied: list[str] = []
    if await has_table(connection, "aerich"):
        rows = await connection.fetch("SELECT version FROM aerich WHERE app = $1 ORDER BY id", app)
        applied = [row["version"] for row in rows]
    return MigrationState(on_disk=tuple(version_files(folder)), applied=tuple(applied))


async def recorded_models_states(connection: asyncpg.Connection, app: str = APP_LABEL) -> dict[str, Any]:
    """The models state the `aerich` table recorded for each of `app`'s applied versions (its first record, when twice)."""
    if not await has_table(connection, "aerich"):
        return {}
    rows = await connection.fetch("SELECT version, content FROM aerich WHERE app = $1 ORDER BY id DESC", app)
    return {row["version"]: json.loads(row["content"]) for row in rows}
