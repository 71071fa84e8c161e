"""The migration lock: a PostgreSQL session advisory lock, so that N replicas or pipelines migrate one at a time.

Held on a dedicated asyncpg connection, the one the migrations then run on: a lock taken through
Tortoise's pool would be released at once (asyncpg resets a pooled connection with
`pg_advisory_unlock_all()` when it goes back to the pool).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg

from langlearn.errors import StartupError
from langlearn.settings import APP_LABEL

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
    holder = await lock_holder(connection, lock) or "a session that has just ended; try again"
    raise StartupError(
        f"timed out after {wait:g} s waiting for the {lock.what}, held by {holder}; "
        f"wait for {lock.work} to finish, or end the session with pg_terminate_backend(pid)"
    )


async def _try_lock(connection: asyncpg.Connection, lock: AdvisoryLock) -> bool:
    return bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock.key))
