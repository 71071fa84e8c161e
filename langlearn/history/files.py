"""The migration files on disk: each version's SQL up and down, split into the statements the runner sends, and their digests.

A migration file is Aerich's: `upgrade(db)` and `downgrade(db)` return SQL, `RUN_IN_TRANSACTION`
says how it runs, `MODELS_STATE` is the models' state after it. Everything here reads the files
only (no database): the SQL must not depend on the connection it is given, which is what lets it
be printed for review (`langlearn migrations sql`), linted and checksummed before it runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import sqlparse

from langlearn.compat import decompress_models_state
from langlearn.errors import ConfigError, UsageError
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION

Direction = Literal["up", "down"]
VERSION_FILE = re.compile(r"^(\d+)_.+\.py$")
BASE = "base"  # the target "before the first migration", as Alembic spells it
MIGRATIONS_DIR = Path(MIGRATIONS_LOCATION) / APP_LABEL  # the history this package ships


def version_number(version_file: str) -> int:
    match = VERSION_FILE.match(version_file)
    if not match:
        raise ValueError(f"{version_file!r} is not a migration file name")
    return int(match.group(1))


def version_files(directory: Path = MIGRATIONS_DIR) -> list[str]:
    """The migration files in `directory`, in the order they apply."""
    return sorted((p.name for p in directory.glob("*.py") if VERSION_FILE.match(p.name)), key=version_number)


def app_folder(location: str, app: str = APP_LABEL) -> Path:
    """The folder holding an app's migration files: `<location>/<app>`, as Aerich lays them out."""
    folder = Path(location) / app
    if not folder.is_dir():
        first = f" (a service's new app: `aerich --app {app} init-migrations` writes its first migration there)" if app != APP_LABEL else ""
        raise ConfigError(f"no migrations found at {folder}; point Aerich's `location` at the folder holding {app}/{first}")
    return folder


def split_statements(sql: str) -> tuple[str, ...]:
    """The statements of a SQL script, each as the runner sends it (comments before a statement stay with it).

    sqlparse knows PostgreSQL's quoting (strings, quoted names, dollar-quoted bodies of DO blocks and
    functions), which a split on semicolons does not; pieces holding only comments are dropped."""
    statements = (piece.strip() for piece in sqlparse.split(sql))
    return tuple(s for s in statements if sqlparse.format(s, strip_comments=True).strip().rstrip(";").strip())


class StatementByStatement(str):
    """SQL that a migration outside a transaction sends one statement at a time under every runner.

    What `langlearn.history.aerich.statement_by_statement` returns when the files are read without a
    database, so that the history can tell such a migration from one that returns a plain script,
    which `aerich upgrade` would send as one string (one implicit transaction)."""


def digest(sql: str) -> str:
    """SHA-256 of a migration's SQL as its function returns it (line endings normalised, so a checkout's
    autocrlf is not an edit)."""
    return hashlib.sha256(sql.replace("\r\n", "\n").strip().encode()).hexdigest()


@dataclass(frozen=True)
class Migration:
    """One migration file: its SQL both ways and how it runs."""

    version: str  # the file name, as the `aerich` table records it
    path: Path
    app: str  # the Tortoise app whose history it is, as the `aerich` table records it
    transactional: bool
    upgrade_sql: str
    downgrade_sql: str
    compressed_state: str | None = field(repr=False)

    @property
    def number(self) -> int:
        return version_number(self.version)

    def sql(self, direction: Direction) -> str:
        return self.upgrade_sql if direction == "up" else self.downgrade_sql

    def statements(self, direction: Direction) -> tuple[str, ...]:
        return self._upgrade_statements if direction == "up" else self._downgrade_statements

    @cached_property
    def _upgrade_statements(self) -> tuple[str, ...]:
        return split_statements(self.upgrade_sql)

    @cached_property
    def _downgrade_statements(self) -> tuple[str, ...]:
        return split_statements(self.downgrade_sql)

    @cached_property
    def upgrade_digest(self) -> str:
        return digest(self.upgrade_sql)

    @cached_property
    def downgrade_digest(self) -> str:
        return digest(self.downgrade_sql)

    @cached_property
    def models_state(self) -> dict[str, Any]:
        """The models' state after this migration (`MODELS_STATE`, decompressed as Aerich records it)."""
        if not self.compressed_state:
            raise ConfigError(f"{self.path}: no MODELS_STATE; run `aerich fix-migrations` to add it")
        return decompress_models_state(self.compressed_state)

    def sent_statement_by_statement(self, direction: Direction) -> bool:
        """Whether `aerich` too sends this direction's SQL one statement at a time (see StatementByStatement)."""
        return isinstance(self.sql(direction), StatementByStatement)

    @property
    def mode(self) -> str:
        return "in one transaction" if self.transactional else "outside a transaction, statement by statement"


@dataclass(frozen=True)
class History:
    """The migration files of one app's folder, in order."""

    folder: Path
    migrations: tuple[Migration, ...]
    app: str = APP_LABEL

    def __iter__(self) -> Iterator[Migration]:
        return iter(self.migrations)

    def __len__(self) -> int:
        return len(self.migrations)

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(migration.version for migration in self.migrations)

    @property
    def head(self) -> Migration | None:
        return self.migrations[-1] if self.migrations else None

    def get(self, version: str) -> Migration:
        return next(migration for migration in self.migrations if migration.version == version)

    def resolve(self, spec: str) -> Migration | None:
        """The migration a user named: its number (`3`), its file name (with or without `.py`), or `base` (None:
        before the first migration). UsageError names the versions there are when it names none of them."""
        spec = spec.strip()
        if spec == BASE:
            return None
        for migration in self.migrations:
            if spec in (str(migration.number), migration.version, migration.version.removesuffix(".py")):
                return migration
        known = ", ".join(str(migration.number) for migration in self.migrations) or "none"
        raise UsageError(f"no migration {spec!r} in {self.folder}; name one by number ({known}), by file name, or `base`")


def load_history(location: str = MIGRATIONS_LOCATION, app: str = APP_LABEL) -> History:
    """Read every migration file of `app` under `location` (Aerich's `location`)."""
    folder = app_folder(location, app)
    return History(folder=folder, migrations=tuple(load_migration(folder / name, app) for name in version_files(folder)), app=app)


def load_migration(path: Path, app: str = APP_LABEL) -> Migration:
    module = _execute(path)
    return Migration(
        version=path.name,
        path=path,
        app=app,
        transactional=bool(getattr(module, "RUN_IN_TRANSACTION", True)),
        upgrade_sql=_sql_of(module, "upgrade", path),
        downgrade_sql=_sql_of(module, "downgrade", path),
        compressed_state=getattr(module, "MODELS_STATE", None),
    )


def _execute(path: Path) -> ModuleType:
    """Run a migration file as a module of its own (its name, `3_2026…`, is no importable name)."""
    spec = importlib.util.spec_from_file_location(f"langlearn_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None  # a .py path always has a source loader
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise ConfigError(f"{path}: cannot load the migration ({type(error).__name__}: {error}); fix the file") from None
    return module


def _sql_of(module: ModuleType, name: str, path: Path) -> str:
    """Call the file's `upgrade`/`downgrade` without a database: they must only return their SQL.

    Driven by hand (one `send`), not on an event loop: the callers may already be running one, and a
    function that awaits anything is, by that, one that uses the connection."""
    function: Callable[[Any], Coroutine[Any, Any, Any]] | None = getattr(module, name, None)
    if function is None:
        raise ConfigError(f"{path}: no {name}() function; every migration file has upgrade() and downgrade()")
    coroutine = function(None)
    try:
        coroutine.send(None)
    except StopIteration as returned:
        sql = returned.value
    except Exception as error:
        raise ConfigError(f"{path}: {name}() failed without a database ({type(error).__name__}: {error}); it must only return its SQL") from None
    else:
        coroutine.close()
        raise ConfigError(f"{path}: {name}() awaits something; a migration must return its SQL without using the connection")
    if not isinstance(sql, str):
        raise ConfigError(f"{path}: {name}() returned {type(sql).__name__}, not its SQL as a string")
    return sql
