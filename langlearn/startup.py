"""Startup glue for async services: one context manager owns the schema check, migrations and the ORM.

    async with database(migrate="check") as startup:   # or "apply", or "off"
        ...                                            # Tortoise models are ready here

Several replicas start at once, and neither Aerich nor Tortoise takes a lock, so `apply` serialises
them with a PostgreSQL session advisory lock held on a dedicated asyncpg connection. (A lock taken
through Tortoise's pool would be released at once: asyncpg resets a pooled connection with
`pg_advisory_unlock_all()` when it goes back to the pool.) The pending migrations are computed
only once the lock is held, so the first replica applies them and the others find nothing to do.

`check` applies nothing and refuses to start against a database that is behind the code, ahead of
it, or whose schema drifted from the models (`langlearn.verify.check_schema`). `off` only connects.
Every refusal is a `StartupError` with a one-line message saying what to run; configuration and
connection problems are `ConfigError`; both are `LanglearnError`s.

The ORM's pool is the application's (`langlearn.settings.PoolOptions`): `pool_size` connections at most
(`LANGLEARN_POOL_SIZE`, default 5) and a `lock_timeout` on every session (`pool_lock_timeout`,
`LANGLEARN_POOL_LOCK_TIMEOUT`, default 2 s), so a query gives up on a row lock held too long
(asyncpg's LockNotAvailableError, which `langlearn.operations.errors.database_refusal` calls `Busy`)
instead of holding its connection. The migration connection keeps its own limits (`lock_timeout` here).

Hot standbys (`replica_url=`, `DATABASE_REPLICA_URL`) add one pool each and Tortoise's router
(`langlearn.routing.Router`); the schema check and migrations run on the primary only, and a standby of
another cluster is refused at startup (`routing.check_standbys`, one connection each). Without them the
config is the one-connection config of before.

The schema step connects to `direct_url` (`DATABASE_DIRECT_URL`, else the pool's URL): PostgreSQL itself
when the pool goes through PgBouncer in transaction mode. In `apply` mode it first makes sure that
connection is no transaction pooler (`langlearn.history.lock.refuse_transaction_pooler`: one round trip
when direct), since the lock and the migration's settings need one session; behind one, the pool's
`lock_timeout` is the role's, checked once (`langlearn.settings.check_pooled_lock_timeout`).

A service's own Tortoise apps go in `apps=`: they share the connection. An app whose entry names its Aerich
history (`"migrations"`: Aerich's `location` holding its folder) is migrated and checked with the package's:
under the one lock, after `models` (`langlearn.history.apps`), its tables compared with its models. The
tables of an app without one are its service's business, left alone here (`langlearn verify --app` compares
them with their models). Which table is whose: `langlearn.verify.ownership`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, get_args

import asyncpg

from langlearn import history, partitions
from langlearn.compat import init_tortoise
from langlearn.errors import DatabaseAhead, DatabaseBehind, HistoryEdited, SchemaDrift
from langlearn.history import MigrationState, Target, checksums
from langlearn.history.apps import MigrationApp, apps_from_mapping, migrate_apps, package_app, refuse_stranding, select_apps
from langlearn.history.lock import refuse_transaction_pooler
from langlearn.history.runner import DEFAULT_LOCK_TIMEOUT, DEFAULT_LOCK_WAIT, DEFAULT_STATEMENT_TIMEOUT
from langlearn.routing import Router, check_standbys, configured_wait
from langlearn.settings import (
    APP_LABEL,
    CONNECT_TIMEOUT_SECONDS,
    MIGRATIONS_LOCATION,
    AppsConfig,
    PoolOptions,
    check_pooled_lock_timeout,
    connect_failure,
    database_url,
    direct_database_url,
    replica_urls,
    tortoise_config,
)
from langlearn.urls import connect_args, redact, validate_url
from langlearn.verify import Finding, Severity, check_schema
from langlearn.verify.findings import FINDING_RECORD
from langlearn.verify.ownership import registered_tables

if TYPE_CHECKING:
    from tortoise.context import TortoiseContext

log = logging.getLogger(__name__)

Mode = Literal["check", "apply", "off"]
MODES: tuple[str, ...] = get_args(Mode)

# "Not up yet": the only connection failures `connect()` retries. Not ConnectionError itself: asyncpg
# raises that when the server refuses SSL, which waiting does not fix.
RETRYABLE_CONNECT_ERRORS = (
    ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, TimeoutError,
    asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError,
)
# What asyncpg.connect raises for a connection that cannot be had (translated by `connect_failure`)
CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


@dataclass(frozen=True)
class StartupOptions:
    """How long each step may take. Defaults suit a replica starting beside a live service.

    `lock_timeout` is what protects traffic: a DDL statement waiting for a table lock blocks every
    query queued behind it, so it gives up after a few seconds instead. `statement_timeout` bounds
    how long one migration statement runs (a `DO` block's whole loop, COMMITs inside included: a
    batched backfill turns it off for itself). `lock_wait` must outlast a whole upgrade by
    another replica; `connect_timeout` covers a server that is still starting (all in seconds).
    """

    lock_wait: float = DEFAULT_LOCK_WAIT
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    connect_timeout: float = 30.0
    migrations: str = MIGRATIONS_LOCATION
    application_name: str | None = None
    # the service's own apps (label -> model modules): the schema check leaves their tables alone
    apps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # the service's apps with an Aerich history, in the order they apply: migrated and checked after the package's
    histories: tuple[MigrationApp, ...] = ()
    ignore_tables: tuple[str, ...] = ()  # names or patterns the schema check leaves alone

    def __post_init__(self) -> None:
        for name in ("lock_wait", "lock_timeout", "statement_timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {getattr(self, name)!r}")


@dataclass(frozen=True)
class Startup:
    """What startup found and did. `state` is None in `off` mode, which reads nothing."""

    mode: Mode
    url: str = field(repr=False)
    state: MigrationState | None
    applied: tuple[str, ...] = ()
    reverted: tuple[str, ...] = ()  # by a downgrade
    adopted: tuple[str, ...] = ()  # applied before checksums were kept: their digests recorded now
    warnings: tuple[Finding, ...] = ()
    lock_waited: float | None = None
    states: Mapping[str, MigrationState] = field(default_factory=dict)  # every migrated app's, by label (`state` is `models`')
    context: TortoiseContext | None = field(default=None, repr=False)
    pool: PoolOptions | None = None  # the ORM's pool, once it is initialised


@asynccontextmanager
async def database(
    url: str | None = None,
    *,
    migrate: Mode = "check",
    lock_wait: float = StartupOptions.lock_wait,
    lock_timeout: float = StartupOptions.lock_timeout,
    statement_timeout: float = StartupOptions.statement_timeout,
    connect_timeout: float = StartupOptions.connect_timeout,
    migrations_location: str = MIGRATIONS_LOCATION,
    application_name: str | None = None,
    apps: AppsConfig | None = None,
    global_fallback: bool = True,
    pool_size: int | None = None,
    pool_lock_timeout: float | None = None,
    direct_url: str | None = None,
    ignore_tables: Sequence[str] = (),
    replica_url: str | Sequence[str] | None = None,
) -> AsyncIterator[Startup]:
    """Prepare the schema per `migrate`, then initialise Tortoise (app "models"); close it on exit.

    `url` defaults to `langlearn.settings.database_url()`. `apps` are the service's own Tortoise apps
    (`{"shop": {"models": ["myservice.models"], "migrations": "migrations"}}`), initialised beside `models` on the
    same connection. An app with `"migrations"` (Aerich's `location`, holding `shop/`) is migrated (`apply`) or
    checked (`check`) with the package's, in the mapping's order after `models`, its tables compared with its
    models; the schema check leaves the tables of one without alone (`langlearn verify --app` compares them with
    their models). So it does a table another app's Aerich
    history records, and the names or patterns in `ignore_tables`; any other table no model has is a warning. `global_fallback` makes the models usable
    from other tasks than the one that entered (a web server runs its lifespan and its requests in
    different tasks); set it False when several contexts live in one process.

    `pool_size` (default `LANGLEARN_POOL_SIZE`, else the URL's `maxsize`, else 5) bounds the ORM's
    connections; `pool_lock_timeout` (seconds, default `LANGLEARN_POOL_LOCK_TIMEOUT`, else 2; 0 for no
    limit) is how long its queries wait for a row lock. `lock_timeout` is the migrations' own.

    `replica_url` (default `DATABASE_REPLICA_URL`; one URL, several separated by spaces, or a list) names hot
    standbys: ORM and raw reads outside transactions go to them, the rest to the primary (`langlearn.routing`).
    None configured: one connection, as without this argument.
    `direct_url` is where the schema step (check, migrations, the lock) connects: PostgreSQL itself when `url` goes
    through a transaction pooler (`pool_mode=transaction`). It defaults to `url` when `url` is given, else to
    `DATABASE_DIRECT_URL`, else `DATABASE_URL`. The ORM's pool always uses `url`.
    """
    from tortoise.context import TortoiseContext

    pool = PoolOptions.from_environment(pool_size, pool_lock_timeout)
    direct = validate_url(direct_url) if direct_url else (validate_url(url) if url else direct_database_url())
    url = validate_url(url) if url else database_url()
    replicas = replica_urls(replica_url)
    if replicas:
        configured_wait()  # a bad LANGLEARN_REPLICA_WAIT stops the start, not a request
    histories = apps_from_mapping(apps)
    orm_apps = {label: {key: value for key, value in app.items() if key != "migrations"} for label, app in (apps or {}).items()}
    config = tortoise_config(url, orm_apps, pool=pool, replicas=replicas)
    if replicas:
        config["routers"] = [Router]
    options = StartupOptions(
        lock_wait=lock_wait,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        connect_timeout=connect_timeout,
        migrations=migrations_location,
        application_name=application_name,
        apps={label: tuple(app["models"]) for label, app in (apps or {}).items()},
        histories=histories,
        ignore_tables=tuple(ignore_tables),
    )
    startup = await prepare(direct, migrate, options)
    await check_pooled_lock_timeout(url, pool)
    await check_standbys(url, replicas)
    async with TortoiseContext() as context:
        await init_tortoise(context, config, global_fallback=global_fallback)
        yield replace(startup, context=context, pool=pool)


async def prepare(
    url: str,
    mode: Mode = "check",
    options: StartupOptions = StartupOptions(),
    *,
    target: Target | None = None,
    expected: Mapping[str, tuple[str, ...]] | None = None,
    apps: Sequence[str] = (),
) -> Startup:
    """The schema half of startup, without the ORM: what the CLI runs in a deploy pipeline.

    In `apply` mode, `target` takes the database elsewhere than head (`langlearn upgrade --to`,
    `langlearn downgrade`), and `expected` (per app label, the versions a user confirmed) refuses any other plan.
    `apps` names the histories to migrate or check (default: the package's and every one in `options.histories`)."""
    if mode not in MODES:
        raise ValueError(f"migrate must be one of {', '.join(MODES)}, not {mode!r}")
    connection = await connect(url, timeout=options.connect_timeout, application_name=options.application_name or _application_name(mode))
    try:
        if mode == "off":
            return Startup(mode=mode, url=url, state=None)
        if mode == "check":
            states: dict[str, MigrationState] = {}
            warnings: tuple[Finding, ...] = ()
            for app in migrated_apps(options, apps):
                states[app.label] = state = await history.read_state(connection, location=app.location, app=app.label)
                _refuse_unless_at_head(state, None if app.label == APP_LABEL else app.label)
                warnings += await _refuse_edited_history(connection, state, app)
            warnings += await _check_schema(connection, options)
            state = await _package_state(connection, options, states)
            log.debug("database at %s (head), schema matches the models", state.current)
            return Startup(mode=mode, url=url, state=state, warnings=warnings, states=states)
        await refuse_transaction_pooler(connection, url)
        return await _apply(connection, url, options, target or Target(), expected, apps)
    finally:
        # Closing also releases the migration lock. A failure here changes nothing for the caller
        # (asyncpg has aborted the socket, which releases it too) and must not hide the real error.
        with suppress(OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await connection.close(timeout=5)


async def connect(url: str, *, timeout: float = StartupOptions.connect_timeout, application_name: str | None = None) -> asyncpg.Connection:
    """A dedicated asyncpg connection, retried with bounded backoff while the server starts.

    Only "not up yet" is retried (`retryable`: refused, starting up, too many connections, timed
    out); anything else (bad password, missing database, SSL refused, unresolvable host) fails at
    once. Each attempt waits at most the URL's connect_timeout (default 5 s); after `timeout`
    seconds the last error becomes a one-line ConfigError.
    """
    dsn, kwargs = connect_args(url)
    url = validate_url(url)
    attempt_timeout = kwargs.pop("timeout", CONNECT_TIMEOUT_SECONDS)
    if application_name:
        kwargs["server_settings"] = {**kwargs.get("server_settings", {}), "application_name": application_name}
    started = time.monotonic()
    deadline = started + timeout
    delay, attempts = 0.1, 0
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        try:
            return await asyncpg.connect(dsn, timeout=max(0.5, min(attempt_timeout, remaining)), **kwargs)
        except CONNECT_ERRORS as error:
            if not retryable(error):
                raise connect_failure(url, error) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise connect_failure(url, error, f" (gave up after {attempts} attempts in {time.monotonic() - started:.1f} s)") from None
            log.debug("PostgreSQL at %s not reachable yet (%s); retrying in %.1f s", redact(url), error, min(delay, remaining))
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)


def retryable(error: BaseException) -> bool:
    """Whether a failed connection means "the server is not up yet", which waiting can fix."""
    if isinstance(error, RETRYABLE_CONNECT_ERRORS):
        return True
    if isinstance(error, socket.gaierror):  # an unknown host is permanent; a DNS server not answering yet is not
        return error.errno == socket.EAI_AGAIN
    # asyncio, when every address of a host name failed in a different way (localhost: ::1 and 127.0.0.1)
    return isinstance(error, OSError) and error.errno is None and f"[Errno {errno.ECONNREFUSED}]" in str(error)


def migrated_apps(options: StartupOptions, names: Sequence[str] = ()) -> tuple[MigrationApp, ...]:
    """The package's app and the service's apps with a history, in the order they apply (`names`: only those)."""
    return select_apps((package_app(options.migrations), *options.histories), names)


async def _apply(
    connection: asyncpg.Connection, url: str, options: StartupOptions, target: Target, expected: Mapping[str, tuple[str, ...]] | None, names: Sequence[str]
) -> Startup:
    chosen = migrated_apps(options, names)
    await refuse_stranding(connection, chosen, migrated_apps(options), target)
    outcomes = await migrate_apps(
        connection,
        chosen,
        target,
        lock_wait=options.lock_wait,
        lock_timeout=options.lock_timeout,
        statement_timeout=options.statement_timeout,
        expected=expected,
    )
    states = {done.app.label: done.outcome.state for done in outcomes}
    for label, state in states.items():
        if state.duplicates:
            log.warning("versions recorded more than once in the aerich table (app %s): %s", label, ", ".join(state.duplicates))
    state = await _package_state(connection, options, states)
    pending = state.pending or any(other.pending for other in states.values())
    up = target.direction == "up"
    if up and not state.pending:  # this month's partitions and the next ones, before the schema check looks for them
        made = await partitions.ensure(connection, drop_default=False, lock_wait=options.lock_wait, lock_timeout=options.lock_timeout)
        for line in made.changes():
            log.info("partitions: %s", line)
    # the models describe head: below it, the schema is checked by the migrations' own tests, not here
    warnings = await _check_schema(connection, options) if not pending else ()
    done = tuple(version for outcome in outcomes for version in outcome.outcome.done)
    log.debug("database at %s, %d migration(s) run by this process", state.current, len(done))
    return Startup(
        mode="apply", url=url, state=state, applied=done if up else (), reverted=() if up else done,
        warnings=warnings, lock_waited=outcomes[0].outcome.lock_waited if outcomes else None,
        adopted=tuple(version for outcome in outcomes for version in outcome.outcome.adopted), states=states,
    )


async def _package_state(connection: asyncpg.Connection, options: StartupOptions, states: Mapping[str, MigrationState]) -> MigrationState:
    """The package's history's state: among `states`, or read when only a service's apps were named."""
    return states[APP_LABEL] if APP_LABEL in states else await history.read_state(connection, location=options.migrations)


def _refuse_unless_at_head(state: MigrationState, app: str | None) -> None:
    if state.unknown:
        raise DatabaseAhead(tuple(state.unknown), app)
    if state.pending:
        raise DatabaseBehind(tuple(state.pending), app)
    if state.duplicates:
        log.warning("versions recorded more than once in the aerich table: %s", ", ".join(state.duplicates))


async def _refuse_edited_history(connection: asyncpg.Connection, state: MigrationState, app: MigrationApp) -> tuple[Finding, ...]:
    """Refuse an applied migration edited since it ran; warn of applied ones whose digests are not recorded yet."""
    report = await checksums.compare(connection, history.load_history(app.location, app.label), state)
    if report.edited:
        raise HistoryEdited(report.edited[0].message, tuple(edit.version for edit in report.edited))
    if not report.unrecorded:
        return ()
    note = Finding(
        Severity.WARNING, "migrations", "unrecorded_checksums", checksums.CHECKSUM_TABLE,
        f"{len(report.unrecorded)} applied migration(s) have no recorded digest; `langlearn upgrade` records them",
        {"versions": list(report.unrecorded)},
    )
    log.warning("migrations: %s", note.message, extra={FINDING_RECORD: note.kind})
    return (note,)


async def _check_schema(connection: asyncpg.Connection, options: StartupOptions) -> tuple[Finding, ...]:
    """Refuse on any schema error the verification finds; return its warnings."""
    # the apps with a history here are compared with their models; the others are migrated by the service, often after
    # this check, so their tables are left alone (`langlearn verify --app` compares them with their models)
    migrated = {app.label: app.models for app in options.histories}
    unmigrated = {label: models for label, models in options.apps.items() if label not in migrated}
    left_alone = (*options.ignore_tables, *registered_tables(unmigrated))
    findings = await check_schema(connection, apps=migrated, ignore=left_alone, location=options.migrations)
    errors = [finding for finding in findings if finding.severity == "error"]
    if errors:
        shown = " ".join(f"[{n}] {' '.join(str(finding.message).split())}" for n, finding in enumerate(errors[:3], 1))
        more = f" [and {len(errors) - 3} more]" if len(errors) > 3 else ""
        raise SchemaDrift(
            f"database schema drifted from the models ({len(errors)} error(s)): {shown}{more}; "
            "run `langlearn verify` for the full report",
            tuple(errors),
        )
    warnings = tuple(finding for finding in findings if finding.severity != "error")
    for finding in warnings:
        log.warning("schema: %s", finding.message, extra={FINDING_RECORD: finding.kind})
    return warnings


def _application_name(mode: str) -> str:
    """Names this process in pg_stat_activity, so a lock timeout can say who holds the lock."""
    return f"langlearn-{mode}@{socket.gethostname()}:{os.getpid()}"[:63]
