"""The migration history: the files on disk (shipped as `langlearn.migrations`), the versions a database recorded, and applying them.

Aerich applies every pending migration at once and has no notion of "up to version N"; this
module steps through the same files with Aerich's own machinery (each version in its own
transaction, recorded in the `aerich` table exactly as `aerich upgrade` does), so callers can
stop at any version. It takes no lock: `langlearn.startup` wraps it in one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from langlearn.compat import apply_version, load_version_module, models_state_of, version_modules
from langlearn.errors import ConfigError
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION, tortoise_config
from langlearn.urls import tortoise_connection

if TYPE_CHECKING:
    from aerich import Command

MIGRATIONS_DIR = Path(MIGRATIONS_LOCATION) / APP_LABEL
VERSION_FILE = re.compile(r"^(\d+)_.+\.py$")


def version_number(version_file: str) -> int:
    match = VERSION_FILE.match(version_file)
    if not match:
        raise ValueError(f"{version_file!r} is not a migration file name")
    return int(match.group(1))


def version_files(directory: Path = MIGRATIONS_DIR) -> list[str]:
    """The migration files on disk, in the order they apply."""
    return sorted((p.name for p in directory.glob("*.py") if VERSION_FILE.match(p.name)), key=version_number)


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
        return sorted(version for version, count in Counter(self.applied).items() if count > 1)

    @property
    def current(self) -> str | None:
        known = [version for version in self.applied if version in self.on_disk]
        return max(known, key=version_number) if known else None

    @property
    def head(self) -> str | None:
        return self.on_disk[-1] if self.on_disk else None

    @property
    def at_head(self) -> bool:
        return not (self.pending or self.unknown or self.duplicates)


async def read_state(connection: asyncpg.Connection, *, location: str = MIGRATIONS_LOCATION) -> MigrationState:
    """Read the applied versions through an asyncpg connection; no `aerich` table means none applied.

    `location` is the migrations folder (Aerich's `location`, holding one folder per app)."""
    folder = Path(location) / APP_LABEL
    if not folder.is_dir():
        raise ConfigError(f"no migrations found at {folder}; point --migrations (Aerich's `location`) at the folder holding {APP_LABEL}/")
    applied: list[str] = []
    if await connection.fetchval("SELECT to_regclass('public.aerich') IS NOT NULL"):
        rows = await connection.fetch("SELECT version FROM aerich WHERE app = $1 ORDER BY id", APP_LABEL)
        applied = [row["version"] for row in rows]
    return MigrationState(on_disk=tuple(version_files(folder)), applied=tuple(applied))


def recorded_models_state(version_file: str, location: str = MIGRATIONS_LOCATION) -> dict[str, Any] | None:
    """The models state a migration file carries (`MODELS_STATE`), as Aerich records it when applying it."""
    return models_state_of(Path(location) / APP_LABEL / version_file)


async def edited_versions(connection: asyncpg.Connection, state: MigrationState, *, location: str = MIGRATIONS_LOCATION) -> list[str]:
    """Applied versions whose file no longer carries the models state the database recorded for it:
    the file was edited (or replaced) after it was applied, so the database may not be what it describes."""
    import json

    rows = await connection.fetch("SELECT version, content FROM aerich WHERE app = $1 ORDER BY id", APP_LABEL)
    recorded = {row["version"]: json.loads(row["content"]) for row in rows if row["version"] in state.on_disk}
    return [version for version, content in recorded.items() if recorded_models_state(version, location) not in (None, content)]


# A migrator killed mid-statement (kill -9, a lost pod) would otherwise leave its statement running,
# holding its table locks, until it ends on its own; the server checks the socket this often and
# cancels (PostgreSQL >= 14). Measured: the orphan is gone 0.97 s after kill -9, against 60 s without.
DEAD_CLIENT_CHECK = "1s"


def timeout_settings(*, lock_timeout: float | None = None, statement_timeout: float | None = None) -> dict[str, str]:
    """PostgreSQL session settings for a migration: how long DDL waits for a lock, how long one statement
    runs, and how soon the server notices that the migrating process died."""
    settings = {"client_connection_check_interval": DEAD_CLIENT_CHECK}
    for name, seconds in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
        if seconds is not None:
            if seconds <= 0:  # 0 would mean "no limit" to PostgreSQL, the opposite of what was asked
                raise ValueError(f"{name} must be a positive number of seconds, not {seconds}")
            settings[name] = f"{max(1, round(seconds * 1000))}ms"
    return settings


async def _recorded_versions() -> list[str]:
    """The versions the `aerich` table records for the app, through the current Tortoise context."""
    from aerich.models import Aerich

    # Tortoise types every `values_list()` as rows of tuples; with one field and `flat=True` it returns the values
    versions: list[str] = await Aerich.filter(app=APP_LABEL).values_list("version", flat=True)  # type: ignore[assignment]
    return versions


@asynccontextmanager
async def aerich_command(
    url: str, *, location: str = MIGRATIONS_LOCATION, server_settings: dict[str, str] | None = None
) -> AsyncIterator[Command]:
    """An initialised Aerich `Command` for the project's app, in a Tortoise context of its own
    (so it neither sees nor closes the caller's), closed on exit.

    `server_settings` are set on every connection the command opens (e.g. `timeout_settings()`), so
    they cover transactional and non-transactional migrations and Aerich's own bookkeeping alike.

    Applying and reverting files needs no project model (each file carries its SQL and its models
    state), so only Aerich's own model is registered: that skips building two dozen models per run
    and leaves the project's model classes alone."""
    from aerich import Command
    from tortoise.context import TortoiseContext

    config = tortoise_config(url)
    config["apps"][APP_LABEL]["models"] = ["aerich.models"]
    config["connections"]["default"] = tortoise_connection(url, server_settings)
    async with TortoiseContext():
        async with Command(config, app=APP_LABEL, location=location) as command:
            yield command


async def upgrade(
    url: str,
    *,
    to: int | None = None,
    location: str = MIGRATIONS_LOCATION,
    lock_timeout: float | None = None,
    statement_timeout: float | None = None,
    announce: Callable[[str], None] | None = None,
) -> list[str]:
    """Apply the pending migrations up to version number `to` (all when None); return those applied.

    `location` is another migrations folder; `lock_timeout`/`statement_timeout` (seconds) bound every
    statement the migrations run; `announce(version_file)` is called before each one starts, so a
    caller knows which version failed when one raises."""
    from tortoise.exceptions import OperationalError
    from tortoise.transactions import in_transaction

    applied_now: list[str] = []
    settings = timeout_settings(lock_timeout=lock_timeout, statement_timeout=statement_timeout)
    async with aerich_command(url, location=location, server_settings=settings) as command:
        try:
            done = set(await _recorded_versions())
        except OperationalError:  # no aerich table yet: migration 0 creates it
            done = set()
        for module in version_modules():
            version_file = module.name + ".py"
            if to is not None and version_number(version_file) > to:
                break
            if version_file in done:
                continue
            if announce is not None:
                announce(version_file)
            if getattr(load_version_module(module), "RUN_IN_TRANSACTION", True):
                async with in_transaction("default") as connection:
                    await apply_version(command, connection, module)
            else:
                from tortoise import Tortoise

                await apply_version(command, Tortoise.get_connection("default"), module)
            applied_now.append(version_file)
    return applied_now


async def downgrade(url: str, *, to: int) -> list[str]:
    """Revert every applied migration numbered above `to` (-1 reverts them all); return those reverted."""
    async with aerich_command(url) as command:
        newer = [v for v in await _recorded_versions() if version_number(v) > to]
        if not newer:
            return []
        return await command.downgrade(min(version_number(v) for v in newer), delete=False)
