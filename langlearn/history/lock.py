"""The migration lock: a PostgreSQL session advisory lock, so that N replicas or pipelines migrate one at a time.

Held on a dedicated asyncpg connection, the one the migrations then run on: a lock taken through
Tortoise's pool would be released at once (asyncpg resets a pooled connection with
`pg_advisory_unlock_all()` when it goes back to the pool).

A session lock needs a session: behind a transaction pooler (PgBouncer's `pool_mode = transaction`)
the lock stays on a backend that serves other clients next, and two migrators both "hold" it. So
every migrator first calls `refuse_transaction_pooler()` on its connection, before the lock or any
change: a URL that says `pool_mode=transaction` is refused as it stands; otherwise the handshake's
backend pid is compared with `pg_backend_pid()` (equal: no pooler, one round trip) and, when they
differ (a pooler answered the handshake), a second client's transaction shows whether this session
keeps a backend of its own (a session pooler: fine) or shares it (refused, naming DATABASE_DIRECT_URL).
A first statement that meets another client's prepared statement, or loses its own, is refused too: a
fresh session has none of its own, so its backend is shared (a transaction pooler that does not track
prepared statements, as PgBouncer before 1.21 or without `max_prepared_statements`, leaves an earlier
client's on the backend).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg

from langlearn.errors import ConfigError, MigrationLockTimeout
from langlearn.settings import APP_LABEL, DIRECT_URL_VARIABLE, open_connection
from langlearn.urls import one_line, transaction_pooled

log = logging.getLogger("langlearn.history")

# Advisory locks are scoped to one database, so one key per migrated app is enough. Derived from a
# name rather than picked at random so that any tool can find it; positive, to read it back from
# pg_locks (classid = high 32 bits, objid = low 32 bits, objsubid = 1 for the bigint form).
MIGRATION_LOCK_KEY = int.from_bytes(hashlib.blake2b(f"aerich:{APP_LABEL}".encode(), digest_size=8).digest(), "big") >> 1


@dataclass(frozen=True)
class AdvisoryLock:
    """A session advisory lock and how its messages name it (`what`) and its holder's work (`work`)."""

    key: int
    what: str
    work: str


MIGRATION_LOCK = AdvisoryLock(MIGRATION_LOCK_KEY, "migration lock", "that migration")


BEHIND_POOLER = (
    f"{{work}} cannot run through a transaction pooler ({{sign}}): its advisory lock and the session's settings need one "
    f"backend for the whole session; set {DIRECT_URL_VARIABLE} to PostgreSQL itself (or pass direct_url=) and run it again"
)
# a fresh session's first statement meets one of these only on a backend other clients use too (no session pooler: one
# resets its backend when a client leaves)
SHARED_BACKEND_ERRORS = (asyncpg.DuplicatePreparedStatementError, asyncpg.InvalidSQLStatementNameError)
# How long this session's statement may wait while another client holds a transaction: a session pooler answers at once
POOLER_PROBE_WAIT = 2.0


async def refuse_transaction_pooler(connection: asyncpg.Connection, url: str, work: str = "migrations") -> None:
    """Raise ConfigError if `connection` (opened on `url`) goes through a transaction pooler; nothing is changed.

    PgBouncer answers the handshake itself, with a backend pid of its own making. When that differs from the backend
    that runs the statements, a second client opens a transaction: a session pooler gives it another backend and keeps
    this session's; a transaction pooler hands it the backend this session just used (it reuses the most recent), or
    moves this session's next statement elsewhere, or makes it wait for one."""
    if transaction_pooled(url):
        raise ConfigError(BEHIND_POOLER.format(work=work, sign="its URL says pool_mode=transaction"))
    try:
        backend = await connection.fetchval("SELECT pg_backend_pid()")
    except SHARED_BACKEND_ERRORS:
        raise ConfigError(BEHIND_POOLER.format(work=work, sign="its first statement met another client's prepared statements")) from None
    if backend == connection.get_server_pid():
        return
    other = await open_connection(url)
    try:
        async with other.transaction():
            others = await other.fetchval("SELECT pg_backend_pid()")
            # another text than the first: a statement asyncpg prepared on one backend is unknown to the next
            again = await connection.fetchval("SELECT pg_backend_pid() AS again", timeout=POOLER_PROBE_WAIT)
    except TimeoutError:
        raise ConfigError(BEHIND_POOLER.format(work=work, sign="its statement waited for the backend another client's transaction held")) from None
    except asyncpg.PostgresError as error:  # a statement pooler refuses transactions
        raise ConfigError(BEHIND_POOLER.format(work=work, sign=f"it refused a transaction: {one_line(error)}")) from None
    finally:
        await other.close()
    if others == backend or again != backend:
        raise ConfigError(BEHIND_POOLER.format(work=work, sign=f"its backend changed between statements: pid {backend}, then pid {others} "
                                                    f"served another client and pid {again} this one"))
    log.info("connected through a session pooler (backend pid %s kept across transactions); migrating through it", backend)


async def lock_holder(connection: asyncpg.Connection, lock: AdvisoryLock = MIGRATION_LOCK) -> str | None:
    """Who holds `lock` (default: the migration lock) on this database, in words; None when it is free."""
    holder = await connection.fetchrow(
        """
        SELECT a.pid, a.application_name, a.client_addr::text AS client, a.backend_start, a.state
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid
        """,
        lock.key >> 32,
        lock.key & 0xFFFFFFFF,
    )
    if holder is None:
        return None
    since = holder["backend_start"]
    held_for = (datetime.now(timezone.utc) - since).total_seconds()
    return (
        f"pid {holder['pid']} (application_name {holder['application_name'] or '(none)'!r}"
        f"{', from ' + holder['client'] if holder['client'] else ''}, connected since "
        f"{since.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC, {held_for:.0f} s ago, {holder['state']})"
    )


# The psql script's way: one try, and a clear stop when another migrator holds the lock (a script
# cannot wait without holding a snapshot, see acquire_migration_lock).
LOCK_STATEMENT = (
    f"DO $$ BEGIN IF NOT pg_try_advisory_lock({MIGRATION_LOCK_KEY}) THEN "
    "RAISE EXCEPTION 'another migration holds the migration lock: run this script again when it is done'; END IF; END $$"
)
UNLOCK_STATEMENT = f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"


async def acquire_migration_lock(connection: asyncpg.Connection, wait: float, lock: AdvisoryLock = MIGRATION_LOCK) -> float:
    """Take the session advisory lock (default: the migration lock), waiting at most `wait` seconds; return the time waited.

    Polled with short `pg_try_advisory_lock` statements, not one blocking `pg_advisory_lock`: a session
    waiting inside a statement holds a snapshot, and a CREATE INDEX CONCURRENTLY in the lock holder's
    migration waits for every older snapshot to end, so the two would deadlock (seen with eight
    replicas starting at once: DeadlockDetectedError)."""
    started = time.monotonic()
    if await _try_lock(connection, lock):
        return 0.0
    log.info("waiting up to %.0f s for the %s held by %s", wait, lock.what, await lock_holder(connection, lock) or "another session")
    delay = 0.05
    while (remaining := wait - (time.monotonic() - started)) > 0:
        await asyncio.sleep(min(delay, remaining))
        if await _try_lock(connection, lock):
            return time.monotonic() - started
        delay = min(delay * 2, 1.0)
    holder = await lock_holder(connection, lock)
    raise MigrationLockTimeout(
        f"timed out after {wait:g} s waiting for the {lock.what}, held by {holder or 'a session that has just ended; try again'}; "
        f"wait for {lock.work} to finish, or end the session with pg_terminate_backend(pid)",
        wait, holder,
    )


async def _try_lock(connection: asyncpg.Connection, lock: AdvisoryLock) -> bool:
    return bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock.key))
