"""Plain `aerich upgrade` and `aerich downgrade` run the whole history, with the runner's protections.

Aerich sends the SQL a migration returns as one string, which PostgreSQL runs as one implicit
transaction, so `CREATE INDEX CONCURRENTLY`, a `DO` block that commits, and a `SET` meant for the
statements after it cannot work through it as written. Aerich passes its connection to the
migration's `upgrade(db)`/`downgrade(db)`, so a migration outside a transaction returns
`await statement_by_statement(db, __file__, <its SQL>)`:

- read without a database (`db` is None: `langlearn upgrade`, `migrations sql/plan`, the checksums,
  `aerich migrate`), it is the SQL itself, marked as sent statement by statement: one text, whoever
  runs it;
- called by Aerich, it sends those statements itself, one at a time on one connection of Aerich's
  pool, with the session limits `langlearn upgrade` sets and its retry of a statement that did not
  get its lock, and returns a no-op statement for Aerich to execute (`aerich downgrade` refuses an
  empty string). Aerich runs every downgrade inside a transaction of its own; the statements then go to
  another connection of the pool, and Aerich's transaction deletes the version row after them.

`TORTOISE_ORM` is the config `[tool.aerich]` names. Its connection is `DATABASE_DIRECT_URL` (else
`DATABASE_URL`), as for `langlearn upgrade`: `aerich upgrade`/`downgrade` through a transaction pooler
stop in one line (exit 2) before the lock. Besides the connection it makes Aerich's CLI
safe to run beside other migrators: `aerich upgrade`/`downgrade` take the migration lock that
`langlearn upgrade` takes (held until the process exits), every connection gets the migration
session limits, and `aerich heads`/`upgrade` find Aerich's own `aerich` table even on an empty
database (created as migration 0 creates it) instead of ending in a traceback.

In a service, the same config adds the apps its `pyproject.toml` declares (`[tool.langlearn.apps]`,
`langlearn.history.apps`): `aerich --app NAME init-migrations`, `migrate`, `upgrade` and `downgrade` work on
that app's history under the service's `location`, while the package's `models` history is read from the
package (`with_service_apps`).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncclick
import asyncpg
from tortoise import BaseDBAsyncClient
from tortoise.exceptions import BaseORMException

from langlearn.compat import aerich_app, aerich_migrations_folder, initialise_one_app_at_a_time, outside_any_transaction, route_aerich_history
from langlearn.errors import ConfigError, StartupError
from langlearn.history import checksums
from langlearn.history.apps import MigrationApp, configured_apps
from langlearn.history.checksums import CREATE_AERICH_TABLE
from langlearn.history.files import StatementByStatement, app_folder, load_history, load_migration
from langlearn.history.lock import acquire_migration_lock, refuse_transaction_pooler
from langlearn.history.plan import Step
from langlearn.history.runner import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_LOCK_WAIT,
    DEFAULT_STATEMENT_TIMEOUT,
    StepFailed,
    database_reason,
    failure_message,
    run_statements,
    session_statements,
    timeout_settings,
)
from langlearn.history.state import read_state
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION, direct_database_url, open_connection, tortoise_config
from langlearn.urls import one_line

log = logging.getLogger("langlearn.history")

APPLICATION_NAME = "aerich (langlearn)"  # how `langlearn status` names an Aerich process holding the lock
# what Aerich executes after the statements were sent: a statement (asyncpg fails on a script of comments only)
ALREADY_SENT = "SELECT 'sent statement by statement by langlearn.history.aerich' AS done"


class AerichMigrationFailed(asyncclick.ClickException):
    """A migration statement failed under Aerich: Aerich's CLI prints this one line and exits 1."""


async def statement_by_statement(db: BaseDBAsyncClient | None, migration_file: str, sql: str) -> str:
    """A migration's SQL outside a transaction: returned when read (db None), sent a statement at a time when Aerich runs it."""
    if db is None:
        return StatementByStatement(sql)
    migration = load_migration(Path(migration_file), aerich_app())
    step = Step(migration, "up" if sql == migration.upgrade_sql else "down")
    # Aerich wraps every downgrade in a transaction of its own: these statements go to another connection
    client = outside_any_transaction(db)
    limits = MigrationLimits.from_environment()
    log.info("%s %s statement by statement (%d statements)", "applying" if step.direction == "up" else "reverting", step.version, len(step.statements))
    async with client.acquire_connection() as connection:
        # Aerich's CLI opens its pool with these settings already; a program driving aerich.Command may not have
        for statement in session_statements(limits.session_settings()):
            await connection.execute(statement)
        try:
            await run_statements(connection, step)
            return ALREADY_SENT
        except StepFailed as error:
            failed = error
    async with client.acquire_connection() as connection:  # another: the failure may have taken the first one with it
        now = await read_state(connection, location=str(migration.path.parent.parent), app=migration.app)
    raise AerichMigrationFailed(failure_message(failed, now, limits.lock_timeout, limits.statement_timeout, runner="aerich"))


@dataclass(frozen=True)
class MigrationLimits:
    """How long `aerich upgrade`/`downgrade` wait for the migration lock and for each statement's locks, and how long
    one statement runs: `langlearn upgrade`'s defaults, or LANGLEARN_LOCK_WAIT, LANGLEARN_LOCK_TIMEOUT and
    LANGLEARN_STATEMENT_TIMEOUT (seconds), since Aerich's CLI has no option for them."""

    lock_wait: float = DEFAULT_LOCK_WAIT
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT

    @classmethod
    def from_environment(cls) -> MigrationLimits:
        return cls(**{name: _seconds(f"LANGLEARN_{name.upper()}", default) for name, default in vars(cls()).items()})

    def session_settings(self) -> dict[str, str]:
        return {**timeout_settings(lock_timeout=self.lock_timeout, statement_timeout=self.statement_timeout), "application_name": APPLICATION_NAME}


def _seconds(variable: str, default: float) -> float:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0  # refused below, with the rest
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{variable}={raw!r} is not a number of seconds; set it to a positive number, like {default:g}, or unset it")
    return seconds


# --- the config Aerich's CLI loads -------------------------------------------------------------------

# what each Aerich command needs beyond a connection
LOCKED_COMMANDS = frozenset({"upgrade", "downgrade"})  # they change the schema: one migrator at a time
READS_AERICH_TABLE = frozenset({"heads", "upgrade"})  # they query `aerich` before anything could create it


def config_for_aerich_cli() -> dict[str, Any]:
    """Tortoise's config for Aerich's CLI, after the preparations its command needs; one line and exit 2 (a setting
    or the server) or 1 (the lock) on failure, as `langlearn` exits."""
    command = _aerich_command()
    try:
        limits = MigrationLimits.from_environment()
        url = direct_database_url(announce=lambda line: print(line, file=sys.stderr))
        # Aerich loads its config inside its own event loop: the preparations run on a private one
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, _prepare(url, command in READS_AERICH_TABLE, command in LOCKED_COMMANDS)).result()
        if command is not None:
            _show_progress()
            sys.excepthook = _one_line_database_errors(sys.excepthook, command, limits)
        if command in LOCKED_COMMANDS:
            hold_migration_lock_until_exit(url, limits.lock_wait)
        return with_service_apps(tortoise_config(url, server_settings=limits.session_settings()), configured_apps())
    except (ConfigError, StartupError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None


def with_service_apps(config: dict[str, Any], apps: tuple[MigrationApp, ...]) -> dict[str, Any]:
    """Tortoise's config with the service's apps (`[tool.langlearn.apps]`), after the package's `models` (whose models an
    app's module may import: Tortoise gives a model to the first app that lists it), on the same connection.

    Where the service's `location` holds no `models/` folder, Aerich finds the package's history where the package
    ships it; and `aerich --app NAME init-db` writes that app's tables only (Aerich's own would write every model on
    the connection, every table of the package included)."""
    for app in apps:
        config["apps"][app.label] = {"models": list(app.models), "default_connection": "default"}
    route_aerich_history(APP_LABEL, app_folder(MIGRATIONS_LOCATION))
    initialise_one_app_at_a_time()
    return config


def _aerich_command() -> str | None:
    context = asyncclick.get_current_context(silent=True)
    return context.invoked_subcommand if context is not None else None


async def _prepare(url: str, needs_aerich_table: bool, migrates: bool) -> None:
    connection = await open_connection(url)  # an unreachable server is one line here, not Aerich's traceback later
    try:
        if migrates:  # before anything is created or locked
            await refuse_transaction_pooler(connection, url)
        if needs_aerich_table:
            await connection.execute(CREATE_AERICH_TABLE)
    except asyncpg.PostgresError as error:  # a read-only role or standby: Aerich reports what it then meets
        log.debug("could not create the aerich table: %s", error)
    finally:
        await connection.close()


def _show_progress() -> None:
    """The lock wait, each migration sent statement by statement and the retries, on stderr: Aerich's CLI prints
    nothing until every migration has run."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]


def _one_line_database_errors(previous: ExceptHook, command: str, limits: MigrationLimits) -> ExceptHook:
    """An excepthook for Aerich's CLI: a database error that ends a command (a statement of a migration that runs in
    Aerich's transaction failed, say) is one line, as the CLI's own errors are, not a traceback."""
    where = (
        "; the migration that failed was rolled back and those before it stay applied (`aerich heads` lists the pending ones)"
        if command in LOCKED_COMMANDS else ""
    )

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> Any:
        if not isinstance(error, (BaseORMException, asyncpg.PostgresError, asyncpg.InterfaceError)):
            return previous(kind, error, traceback)
        cause = error.__cause__ if isinstance(error, BaseORMException) and error.__cause__ is not None else error
        reason = database_reason(cause, limits.lock_timeout, limits.statement_timeout)
        print(f"Error: {reason}{where}; fix the cause, then run `aerich {command}` again", file=sys.stderr)

    return hook


def hold_migration_lock_until_exit(url: str, wait: float) -> None:
    """Take the migration lock on a connection of its own, held by a background thread until this process exits.

    Aerich decides which versions are pending, then runs them, each on its pool: a lock held for the whole
    process makes a second `aerich upgrade` (or `langlearn upgrade`) wait and then find nothing left to do.
    Before letting go, still under the lock, the digests of what Aerich applied or reverted are brought up to
    date, as `langlearn upgrade` keeps them (see `record_digests`)."""
    taken = threading.Event()
    failure: list[BaseException] = []
    release: list[Callable[[], object]] = []

    async def hold() -> None:
        connection = await open_connection(url)
        try:
            await connection.execute(f"SET application_name = '{APPLICATION_NAME}'")
            await acquire_migration_lock(connection, wait)
            released = asyncio.Event()
            loop = asyncio.get_running_loop()
            release.append(lambda: loop.call_soon_threadsafe(released.set))
            taken.set()
            await released.wait()
            if (folder := aerich_migrations_folder()) is not None:  # Aerich got as far as reading its history
                await record_digests(connection, str(folder.parent), aerich_app())
        finally:
            await connection.close()

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as error:  # handed to the waiting thread, which reports it
            failure.append(error)
        finally:
            taken.set()

    thread = threading.Thread(target=run, name="langlearn-migration-lock", daemon=True)
    thread.start()
    taken.wait()
    if failure:
        raise failure[0]

    def release_at_exit() -> None:  # a clean close, rather than the server noticing a vanished client
        release[0]()
        thread.join(timeout=30)
        if failure:
            print(f"warning: the digests of the migrations Aerich ran were not recorded ({one_line(failure[0])}); "
                  "the next `langlearn upgrade` records them", file=sys.stderr)

    atexit.register(release_at_exit)


async def record_digests(connection: asyncpg.Connection, location: str, app: str) -> None:
    """Record the digests of `app`'s applied migrations that have none (what Aerich applied, or faked), and forget those of
    the versions Aerich reverted, in one transaction; an edited migration's stay as they were, for the check to name."""
    history = load_history(location, app)
    report = await checksums.compare(connection, history, await read_state(connection, location=location, app=app))
    async with connection.transaction():
        await connection.execute(checksums.CREATE_CHECKSUM_TABLE)
        for version in report.unrecorded:
            await connection.execute(checksums.record_checksum(history.get(version), "adopt"))
        await connection.execute(checksums.forget_reverted(app))


def __getattr__(name: str) -> Any:
    if name == "TORTOISE_ORM":
        return config_for_aerich_cli()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
