"""Monthly partitions of the history tables, kept without pg_partman: create ahead, retire old months, report.

The tables looked after are found in the catalog: every table of the current schema partitioned
`BY RANGE` on one `timestamptz` column (`question_attempts` and `activity_feeds`, by `created_at`).
Every bound is read from the catalog (`pg_get_expr(relpartbound)`, cast back to `timestamptz` by
PostgreSQL itself), never from a partition's name. Months are UTC months; a month partition is
`<table>_p<YYYYMM>`, [first of the month, first of the next).

No DEFAULT partition (measured in docs/scale-out.md, "Partition maintenance"): while a table has one,
PostgreSQL refuses `DETACH PARTITION … CONCURRENTLY`, and each new month's creation scans the default
under an ACCESS EXCLUSIVE lock. The safety net is creation ahead instead: `ensure` makes this month
and the next `ahead` ones, and runs from `langlearn upgrade`, startup's apply mode and cron;
`langlearn verify` reports a table whose current month (error) or next month (warning) has no
partition. A write past the months created fails with PostgreSQL's "no partition of relation … found
for row" (SQLSTATE 23514). A DEFAULT partition found (one a migration or a person added) is emptied
by `ensure`: its rows move to their months' new partitions, then it is detached and dropped (by the
command; startup's apply mode, `langlearn upgrade`'s, and the seed only create months, and leave a detach
left pending to the command too).

A load of older rows (the seed's history) asks `ensure` for the months from `since`: where the first
partition (from MINVALUE: the old table the conversion attached) is still empty, as in a fresh database,
it is cut back to end at `since`'s month (DETACH, ATTACH with the new bound; its name stays), so the
history gets a partition per month, as a database converted long ago has.

Locks and round trips:
- every command holds the partition-maintenance advisory lock on its own connection (a key of its
  own, not the migration lock's), so two crons, or a cron and a replica starting, take turns;
- a new month is one transaction: `CREATE TABLE … (LIKE parent)` then `ATTACH PARTITION`, which
  takes SHARE UPDATE EXCLUSIVE on the parent (reads and writes go on; `CREATE TABLE … PARTITION OF`
  would take ACCESS EXCLUSIVE) and SHARE ROW EXCLUSIVE on the tables its foreign keys point at (their
  writes wait the few ms of the statement; locked first, in migration 13's order), and builds the keys
  and indexes on the empty table; rows of that month found in a DEFAULT partition move in the same
  transaction;
- retire, per partition: a table comment marks it as being retired, `DETACH … CONCURRENTLY` (two
  transactions; its waits for the transactions using the parent block no reads or writes and may take up
  to `detach_wait`, but its second transaction then locks the tables the foreign keys point at, SHARE ROW
  EXCLUSIVE, to give the detached table foreign-key triggers of its own: a watcher on a second connection
  cancels it once that lock has waited `lock_timeout`, and `DETACH … FINALIZE` finishes the detach in
  short tries), its foreign keys dropped (a short transaction: the DROP that frees the files then locks
  no other table, and an archive restores into an empty database), a `pg_dump` of it when archiving, then
  `DROP TABLE`, whose time is the file system's freeing of the files (docs/scale-out.md, "Retiring a
  month: measured"). The watcher is one more connection per partition detached, reading `pg_locks` every
  50 ms. Interrupted anywhere, the next run picks it up: a detach left pending is finalized (by the
  `ensure` command or `retire`), and `retire` finishes the detached tables its comment marks.
A statement whose lock blocks traffic while it waits (ATTACH's and FINALIZE's on the tables the foreign keys
point at, a plain DETACH) waits at most `lock_timeout` (0.5 s), and its transaction is tried again, up to 10 times.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from functools import partial
from pathlib import Path
from typing import TypeVar

import asyncpg

from langlearn import backups
from langlearn.errors import LanglearnError, UsageError
from langlearn.history.lock import AdvisoryLock, acquire_migration_lock, refuse_transaction_pooler
from langlearn.settings import APP_LABEL, ENVIRONMENT_SETTING, marked_production, open_connection

DEFAULT_AHEAD = 3  # months created past the current one: a quarter without a cron run still writes
DEFAULT_LOCK_WAIT = 60.0  # for the maintenance lock (another ensure or retire)
DEFAULT_LOCK_TIMEOUT = 0.5  # a lock that blocks traffic while it waits is given up after this, then tried again
LOCK_ATTEMPTS = 10
DEFAULT_DETACH_WAIT = 600.0  # DETACH CONCURRENTLY waits for the transactions using the parent, blocking nobody
WATCH_INTERVAL = 0.05  # how often the watcher of a DETACH … CONCURRENTLY looks at its lock waits
# The mark of a partition being retired: its parent, and its own oid, so that a copy restored from its archive
# (a new table, a new oid) is never taken for it
RETIRING = "langlearn partitions retire: detached from {parent} (table {oid})"

PARTITION_LOCK = AdvisoryLock(
    int.from_bytes(hashlib.blake2b(f"partitions:{APP_LABEL}".encode(), digest_size=8).digest(), "big") >> 1,
    "partition maintenance lock", "that partition maintenance",
)


T = TypeVar("T")


class PartitionError(LanglearnError):
    """Partition maintenance refused or failed; what was done before it stays done, and a rerun resumes."""


@dataclass(frozen=True)
class Partition:
    """One partition and its bounds as the catalog has them (`lower` None: MINVALUE, `upper` None: MAXVALUE)."""

    name: str
    lower: datetime | None
    upper: datetime | None
    is_default: bool
    detach_pending: bool
    size_bytes: int
    row_estimate: int | None  # None: never analysed

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return not self.is_default and (self.lower is None or self.lower < end) and (self.upper is None or self.upper > start)

    def entirely_before(self, moment: datetime) -> bool:
        return not self.is_default and self.upper is not None and self.upper <= moment


@dataclass(frozen=True)
class Range:
    """[start, end) of a partition to create."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class PartitionedTable:
    name: str
    key: str  # the partition key's column
    partitions: tuple[Partition, ...]

    @property
    def default(self) -> Partition | None:
        return next((each for each in self.partitions if each.is_default), None)

    def gaps(self, start: datetime, end: datetime) -> list[Range]:
        """The parts of [start, end) no partition holds."""
        found, cursor = [], start
        for each in sorted((p for p in self.partitions if p.overlaps(start, end)), key=lambda p: p.lower or start):
            if each.lower is not None and each.lower > cursor:
                found.append(Range(cursor, each.lower))
            cursor = max(cursor, each.upper or end)
        if cursor < end:
            found.append(Range(cursor, end))
        return found


@dataclass(frozen=True)
class Created:
    table: str
    name: str
    bounds: Range
    moved_rows: int  # from the DEFAULT partition


@dataclass(frozen=True)
class EnsureResult:
    tables: tuple[str, ...]
    created: tuple[Created, ...]
    finalized: tuple[str, ...]  # detaches left pending, now finished
    dropped_defaults: tuple[str, ...]
    left_to_partman: tuple[str, ...]

    def changes(self) -> list[str]:
        """One line per change made (none when every partition needed was there)."""
        lines = [f"finished the detach of {name} left pending" for name in self.finalized]
        lines += [f"created {each.name} {describe_bounds(each.bounds.start, each.bounds.end)}"
                  + (f", {each.moved_rows} row(s) moved from the DEFAULT partition" if each.moved_rows else "") for each in self.created]
        return lines + [f"dropped the DEFAULT partition {name} (emptied)" for name in self.dropped_defaults]


@dataclass(frozen=True)
class Retired:
    table: str
    name: str
    lower: datetime | None
    upper: datetime | None
    archive: Path | None
    resumed: bool = False  # detached by an earlier run that stopped before its DROP (bounds no longer known)


@dataclass(frozen=True)
class Partman:
    """pg_partman on this server: the version it offers, the one installed here, the tables it manages."""

    available: str | None
    installed: str | None
    manages: tuple[str, ...]


@dataclass(frozen=True)
class Status:
    tables: tuple[PartitionedTable, ...]
    default_rows: dict[str, int]  # per table with a DEFAULT partition: its rows, counted
    retiring: tuple[str, ...]  # detached by a retire that did not finish
    partman: Partman


# One row per partition (NULLs for a table without any). A bound is FROM (MINVALUE) or FROM ('…') in the
# session's time zone: PostgreSQL casts the quoted text back, so the time zone does not matter.
PARTITIONS = r"""
    SELECT p.relname AS parent, a.attname AS key_column, c.relname AS name,
           coalesce(pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', false) AS is_default,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), '^FOR VALUES FROM \(''([^'']*)''\)'))[1]::timestamptz AS lower,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), ' TO \(''([^'']*)''\)$'))[1]::timestamptz AS upper,
           coalesce(i.inhdetachpending, false) AS detach_pending,
           coalesce(pg_total_relation_size(c.oid), 0) AS size_bytes,
           CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END AS row_estimate
    FROM pg_partitioned_table t
    JOIN pg_class p ON p.oid = t.partrelid
    JOIN pg_attribute a ON a.attrelid = p.oid AND a.attnum = t.partattrs[0]
    LEFT JOIN pg_inherits i ON i.inhparent = p.oid
    LEFT JOIN pg_class c ON c.oid = i.inhrelid
    WHERE p.relnamespace = current_schema()::regnamespace AND t.partstrat = 'r' AND t.partnatts = 1
      AND a.atttypid = 'timestamptz'::regtype
    ORDER BY p.relname, lower NULLS FIRST, c.relname
"""
REFERENCED = """
    SELECT DISTINCT confrelid::regclass::text FROM pg_constraint WHERE conrelid = quote_ident($1)::regclass AND contype = 'f' ORDER BY 1
"""
# Cancel session $1 when it has waited $3 seconds or more for a lock on one of the tables $2
CANCEL_LONG_WAIT = """
    SELECT coalesce(bool_or(pg_cancel_backend(pid)), false) FROM pg_locks
    WHERE pid = $1 AND NOT granted AND locktype = 'relation' AND relation = ANY($2::regclass[])
      AND waitstart <= clock_timestamp() - make_interval(secs => $3)
"""
RETIRING_TABLES = r"""
    SELECT c.relname AS name, mark[1] AS parent
    FROM pg_class c,
         regexp_match(obj_description(c.oid, 'pg_class'), '^langlearn partitions retire: detached from (.+) \(table (\d+)\)$') AS mark
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' AND NOT c.relispartition AND mark[2]::oid = c.oid
    ORDER BY c.relname
"""


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def describe_bounds(lower: datetime | None, upper: datetime | None) -> str:
    """[2026-11-01, 2026-12-01), MINVALUE and MAXVALUE for the open ends."""
    return f"[{_moment(lower, 'MINVALUE')}, {_moment(upper, 'MAXVALUE')})"


def _moment(moment: datetime | None, unbounded: str) -> str:
    if moment is None:
        return unbounded
    moment = moment.astimezone(timezone.utc)
    return f"{moment:%Y-%m-%d}" if moment == moment.replace(hour=0, minute=0, second=0, microsecond=0) else f"{moment:%Y-%m-%d %H:%M:%S}"


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(timezone.utc)
    return datetime(moment.year, moment.month, 1, tzinfo=timezone.utc)


def add_months(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=timezone.utc)


def _months_between(first: datetime, last: datetime) -> int:
    return (last.year - first.year) * 12 + last.month - first.month


def partition_name(table: str, bounds: Range) -> str:
    """`<table>_p<YYYYMM>` for a whole month; `<table>_p<YYYYMMDDHHMM>` for the part of one that others leave."""
    whole = bounds.start == month_start(bounds.start) and bounds.end == add_months(bounds.start, 1)
    return f"{table}_p{bounds.start:%Y%m}" if whole else f"{table}_p{bounds.start:%Y%m%d%H%M}"


async def read_tables(connection: asyncpg.Connection) -> tuple[PartitionedTable, ...]:
    """The range-partitioned tables of the current schema and their partitions, in one query."""
    tables: dict[str, PartitionedTable] = {}
    for row in await connection.fetch(PARTITIONS):
        table = tables.get(row["parent"]) or PartitionedTable(row["parent"], row["key_column"], ())
        if row["name"] is not None:
            partition = Partition(row["name"], row["lower"], row["upper"], row["is_default"], row["detach_pending"],
                                  row["size_bytes"], row["row_estimate"])
            table = PartitionedTable(table.name, table.key, (*table.partitions, partition))
        tables[row["parent"]] = table
    return tuple(tables.values())


async def read_partman(connection: asyncpg.Connection) -> Partman:
    """What pg_partman this server offers and, when installed here, which of our tables it manages."""
    row = await connection.fetchrow(
        "SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'pg_partman'"
    )
    if row is None:
        return Partman(None, None, ())
    manages: tuple[str, ...] = ()
    if row["installed_version"] is not None:
        schema = await connection.fetchval("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_partman'")
        parents = await connection.fetch(f"SELECT parent_table FROM {schema}.part_config")
        current = await connection.fetchval("SELECT current_schema()")
        manages = tuple(sorted(
            name.partition(".")[2] for name in (r["parent_table"] for r in parents) if name.partition(".")[0] == current
        ))
    return Partman(row["default_version"], row["installed_version"], manages)


async def read_status(connection: asyncpg.Connection) -> Status:
    tables = await read_tables(connection)
    default_rows = {
        table.name: int(await connection.fetchval(f"SELECT count(*) FROM {quote(table.default.name)}"))
        for table in tables if table.default is not None
    }
    retiring = tuple(f"{row['name']} (from {row['parent']})" for row in await connection.fetch(RETIRING_TABLES))
    return Status(tables, default_rows, retiring, await read_partman(connection))


@asynccontextmanager
async def _maintenance(connection: asyncpg.Connection, lock_wait: float) -> AsyncIterator[None]:
    """Hold the partition-maintenance lock on `connection` for the block."""
    await acquire_migration_lock(connection, lock_wait, PARTITION_LOCK)
    try:
        yield
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", PARTITION_LOCK.key)


async def _in_transaction(connection: asyncpg.Connection, lock_timeout: float, step: Callable[[], Awaitable[T]]) -> T:
    """`step` in a transaction whose statements wait at most `lock_timeout` for a lock, tried again (LOCK_ATTEMPTS
    times, backing off) when one was not had in time: a lock queued behind a writer holds every later writer
    behind it, so each wait stays short, and a writer holding a lock for a moment does not fail the maintenance."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            async with connection.transaction():
                await connection.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'")
                return await step()
        except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError) as busy:
            if attempt == LOCK_ATTEMPTS:
                busy_for = f"the tables stayed busy: {LOCK_ATTEMPTS} tries at {lock_timeout:g} s each did not get their locks ({busy}); run it again"
                raise PartitionError(f"{busy_for}, or with a longer lock_timeout", command_line=f"{busy_for}, or with a longer --lock-timeout") from None
            await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
    raise AssertionError("unreachable")


@asynccontextmanager
async def _session_timeout(connection: asyncpg.Connection, seconds: float) -> AsyncIterator[None]:
    """lock_timeout for statements that cannot run in a transaction (DETACH … CONCURRENTLY / FINALIZE)."""
    before = await connection.fetchval("SELECT set_config('lock_timeout', $1, false)", f"{int(seconds * 1000)}ms")
    try:
        yield
    finally:
        await connection.execute("SELECT set_config('lock_timeout', $1, false)", before)


async def ensure(
    connection: asyncpg.Connection, *, ahead: int = DEFAULT_AHEAD, now: datetime | None = None, since: datetime | None = None,
    drop_default: bool = True, lock_wait: float = DEFAULT_LOCK_WAIT, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> EnsureResult:
    """Create this month's partition and the next `ahead` months' (and every month from `since`'s, for a
    load of older rows: the seed's) for every partitioned table (those pg_partman manages excepted), and,
    unless `drop_default` is False (startup's: it creates months only), finish the detaches left pending
    and empty and drop a DEFAULT partition. Both are work for the maintenance job rather than a deploy:
    the DEFAULT's DETACH takes ACCESS EXCLUSIVE on the parent for a moment (and a deploy then builds the
    catalog plain `aerich upgrade` builds); FINALIZE locks the tables the foreign keys point at and waits
    for older snapshots, and gives up after its tries while a long transaction runs. Idempotent;
    `connection` must not be inside a transaction."""
    if ahead < 0 or ahead > 120:
        out_of_range = "is out of range: give a number of months from 0 to 120"
        raise UsageError(f"ahead={ahead} {out_of_range}", command_line=f"--ahead {ahead} {out_of_range}")
    this_month = month_start(now or datetime.now(timezone.utc))
    first = min(this_month, month_start(since)) if since else this_month
    wanted = {add_months(first, step) for step in range(_months_between(first, this_month) + ahead + 1)}
    created: list[Created] = []
    dropped: list[str] = []
    async with _maintenance(connection, lock_wait):
        finalized = await _finalize_detaches(connection, await read_tables(connection), lock_timeout) if drop_default else ()
        partman = await read_partman(connection)
        tables = await read_tables(connection)
        for table in tables:
            if table.name in partman.manages:
                continue
            if since is not None:
                table = await _shorten_empty_first(connection, table, first, lock_timeout)
            months = set(wanted)
            if table.default is not None:
                months |= {month for (month,) in await connection.fetch(
                    f"SELECT DISTINCT date_trunc('month', {quote(table.key)}, 'UTC') FROM {quote(table.default.name)}")}
            for month in sorted(months):
                for gap in table.gaps(month, add_months(month, 1)):
                    created.append(await _create(connection, table, gap, lock_timeout))
            if table.default is not None and drop_default:
                await _drop_default(connection, table, table.default, lock_timeout)
                dropped.append(table.default.name)
    return EnsureResult(
        tables=tuple(table.name for table in tables), created=tuple(created), finalized=finalized,
        dropped_defaults=tuple(dropped), left_to_partman=tuple(name for name in partman.manages if name in {t.name for t in tables}),
    )


async def _shorten_empty_first(connection: asyncpg.Connection, table: PartitionedTable, first: datetime, lock_timeout: float) -> PartitionedTable:
    """When the first partition (from MINVALUE, the old table's) is empty and reaches past `first`, end it at
    `first`, so that a load of older rows (the seed's history) gets a partition per month. Its name stays."""
    head = next((each for each in table.partitions if each.lower is None and not each.is_default), None)
    if head is None or head.upper is None or head.upper <= first or await _holds_rows(connection, head.name):
        return table

    async def shorten() -> None:
        await connection.execute(f"ALTER TABLE {quote(table.name)} DETACH PARTITION {quote(head.name)}")
        if await _holds_rows(connection, head.name):
            raise PartitionError(f"a row reached {head.name} while it was being shortened; run the same command again")
        await connection.execute(
            f"ALTER TABLE {quote(table.name)} ATTACH PARTITION {quote(head.name)} FOR VALUES FROM (MINVALUE) TO ('{first.isoformat()}')"
        )

    await _in_transaction(connection, lock_timeout, shorten)
    return next(each for each in await read_tables(connection) if each.name == table.name)


async def _create(connection: asyncpg.Connection, table: PartitionedTable, bounds: Range, lock_timeout: float) -> Created:
    """One partition in one transaction: a bare table, the rows of its range a DEFAULT holds, then ATTACH."""
    name = partition_name(table.name, bounds)

    async def create() -> int:
        moved = 0
        await connection.execute(
            f"CREATE TABLE {quote(name)} (LIKE {quote(table.name)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING STORAGE INCLUDING COMMENTS INCLUDING GENERATED INCLUDING IDENTITY)"
        )
        if table.default is not None:
            columns = ", ".join(quote(column) for column in await _columns(connection, table.name))
            status = await connection.execute(
                f"WITH moved AS (DELETE FROM {quote(table.default.name)} WHERE {quote(table.key)} >= $1 AND {quote(table.key)} < $2 "
                f"RETURNING {columns}) INSERT INTO {quote(name)} ({columns}) SELECT {columns} FROM moved",
                bounds.start, bounds.end,
            )
            moved = int(status.rsplit(" ", 1)[1])
        await _lock_referenced(connection, table)
        await connection.execute(
            f"ALTER TABLE {quote(table.name)} ATTACH PARTITION {quote(name)} "
            f"FOR VALUES FROM ('{bounds.start.isoformat()}') TO ('{bounds.end.isoformat()}')"
        )
        return moved

    return Created(table.name, name, bounds, await _in_transaction(connection, lock_timeout, create))


async def _lock_referenced(connection: asyncpg.Connection, table: PartitionedTable) -> None:
    """ATTACH and DETACH lock the tables the foreign keys point at (SHARE ROW EXCLUSIVE) after the parent; take
    them first, in migration 13's order (referenced tables by name, then the history table)."""
    for (referenced,) in await connection.fetch(REFERENCED, table.name):
        await connection.execute(f"LOCK TABLE {quote(referenced)} IN SHARE ROW EXCLUSIVE MODE")


async def _holds_rows(connection: asyncpg.Connection, table: str) -> bool:
    return bool(await connection.fetchval(f"SELECT EXISTS (SELECT FROM {quote(table)})"))


async def _columns(connection: asyncpg.Connection, table: str) -> list[str]:
    rows = await connection.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = quote_ident($1)::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        table,
    )
    return [row["attname"] for row in rows]


async def _drop_default(connection: asyncpg.Connection, table: PartitionedTable, default: Partition, lock_timeout: float) -> None:
    """Detach and drop the DEFAULT partition, emptied by the months just created; kept if a row came in meanwhile."""

    async def drop() -> None:
        await _lock_referenced(connection, table)
        await connection.execute(f"ALTER TABLE {quote(table.name)} DETACH PARTITION {quote(default.name)}")
        if await _holds_rows(connection, default.name):
            raise PartitionError(
                f"a row reached {default.name} while its months were being created; run `langlearn partitions ensure` again"
            )
        await connection.execute(f"DROP TABLE {quote(default.name)}")

    await _in_transaction(connection, lock_timeout, drop)


async def _finalize_detaches(connection: asyncpg.Connection, tables: tuple[PartitionedTable, ...], lock_timeout: float) -> tuple[str, ...]:
    """Finish every `DETACH … CONCURRENTLY` that was interrupted (the partition is "detach pending")."""
    finished = []
    for table in tables:
        for each in table.partitions:
            if each.detach_pending:
                await _finalize(connection, table.name, each.name, lock_timeout)
                finished.append(each.name)
    return tuple(finished)


async def _finalize(connection: asyncpg.Connection, table: str, partition: str, lock_timeout: float) -> None:
    """`DETACH … FINALIZE` in short tries: it locks the partition (which no new query reads), waits for older
    snapshots, then locks the tables the foreign keys point at; each wait at most `lock_timeout`."""
    await _in_transaction(connection, lock_timeout, partial(
        connection.execute, f"ALTER TABLE {quote(table)} DETACH PARTITION {quote(partition)} FINALIZE"))


def retire_moment(before: date, now: datetime | None = None) -> datetime:
    """`before` as midnight UTC, refused when it is later than the start of the current month (that
    month's partition takes today's writes)."""
    moment = datetime(before.year, before.month, before.day, tzinfo=timezone.utc)
    this_month = month_start(now or datetime.now(timezone.utc))
    if moment > this_month:
        too_late = (f"is later than the start of the current month ({this_month.date()}), whose partition takes "
                    f"today's writes; give a date up to {this_month.date()}")
        raise UsageError(f"before={before} {too_late}", command_line=f"--before {before} {too_late}")
    return moment


async def retire(
    url: str, before: date, *, archive: Path | None, now: datetime | None = None, lock_wait: float = DEFAULT_LOCK_WAIT,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT, detach_wait: float = DEFAULT_DETACH_WAIT,
) -> tuple[Retired, ...]:
    """Detach every partition entirely before `before` (midnight UTC) and drop it, after a `pg_dump` of
    it into the folder `archive` unless `archive` is None. A database marked production (its
    `langlearn.environment`) is refused without an archive. Tables pg_partman manages are left to it."""
    moment = retire_moment(before, now)
    if archive is not None:
        if archive.exists() and not archive.is_dir():
            a_file = "is a file; give a folder (it is created when missing)"
            raise UsageError(f"archive={archive} {a_file}", command_line=f"--archive {archive} {a_file}")
        backups.client_program("pg_dump")  # missing: one line before anything changes
    connection = await open_connection(url)
    try:
        await refuse_transaction_pooler(connection, url, "partition maintenance")
        marker = await connection.fetchval("SELECT current_setting($1, true)", ENVIRONMENT_SETTING)
        if archive is None and marked_production(marker):
            marked = f"this database is marked {ENVIRONMENT_SETTING} = {marker!r}: retire with "
            dump = " there (a pg_dump of each partition before its DROP), not "
            raise PartitionError(f"{marked}an archive folder{dump}archive=None", command_line=f"{marked}--archive DIR{dump}--drop")
        async with _maintenance(connection, lock_wait):
            await _finalize_detaches(connection, await read_tables(connection), lock_timeout)
            schema = await connection.fetchval("SELECT current_schema()")
            retired = [
                await _finish(connection, url, schema, Retired(row["parent"], row["name"], None, None, None, resumed=True), archive, lock_timeout)
                for row in await connection.fetch(RETIRING_TABLES)
            ]
            partman = await read_partman(connection)
            for table in await read_tables(connection):
                if table.name in partman.manages:
                    continue
                for each in table.partitions:
                    if each.entirely_before(moment):
                        await _detach(connection, url, table, each, detach_wait, lock_timeout)
                        detached = Retired(table.name, each.name, each.lower, each.upper, None)
                        retired.append(await _finish(connection, url, schema, detached, archive, lock_timeout))
    finally:
        await connection.close()
    return tuple(retired)


async def _detach(
    connection: asyncpg.Connection, url: str, table: PartitionedTable, partition: Partition, detach_wait: float, lock_timeout: float,
) -> None:
    """Mark the partition as being retired, then detach it: CONCURRENTLY, unless a DEFAULT partition forbids it."""
    oid = await connection.fetchval("SELECT quote_ident($1)::regclass::oid", partition.name)
    await connection.execute(f"COMMENT ON TABLE {quote(partition.name)} IS {_literal(RETIRING.format(parent=table.name, oid=oid))}")
    try:
        if table.default is None:
            await _detach_concurrently(connection, url, table, partition.name, detach_wait, lock_timeout)
        else:  # PostgreSQL refuses CONCURRENTLY beside a DEFAULT partition; `ensure` drops it
            await _in_transaction(connection, lock_timeout, partial(
                connection.execute, f"ALTER TABLE {quote(table.name)} DETACH PARTITION {quote(partition.name)}"))
    except asyncpg.PostgresError as failure:
        if not await connection.fetchval(
            "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = quote_ident($1)::regclass", partition.name
        ):  # still attached: unmark it; a detach left pending is finalized by the next run
            await connection.execute(f"COMMENT ON TABLE {quote(partition.name)} IS NULL")
        raise PartitionError(
            f"detaching {partition.name} from {table.name} failed ({type(failure).__name__}: {failure}); "
            "nothing else was changed for it; run the same command again"
        ) from None


async def _detach_concurrently(
    connection: asyncpg.Connection, url: str, table: PartitionedTable, partition: str, detach_wait: float, lock_timeout: float,
) -> None:
    """`DETACH … CONCURRENTLY` with each of its waits bounded as it deserves: those for the transactions using
    the parent block nobody (up to `detach_wait`); the lock its second transaction takes on the tables the
    foreign keys point at queues their writers behind it, so a watcher cancels the statement once that lock
    has waited `lock_timeout` (the partition is then "detach pending") and FINALIZE finishes it in short tries."""
    referenced = [name for (name,) in await connection.fetch(REFERENCED, table.name)]
    watcher = await open_connection(url)
    stop = asyncio.Event()

    async def watch() -> bool:
        while not stop.is_set():
            if await watcher.fetchval(CANCEL_LONG_WAIT, connection.get_server_pid(), referenced, lock_timeout):
                return True
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL)
        return False

    watching = asyncio.create_task(watch())
    try:
        try:
            async with _session_timeout(connection, detach_wait):
                await connection.execute(f"ALTER TABLE {quote(table.name)} DETACH PARTITION {quote(partition)} CONCURRENTLY")
        except asyncpg.QueryCanceledError:
            stop.set()
            if not await watching:  # cancelled by someone else
                raise
            await _finalize(connection, table.name, partition, lock_timeout)
    finally:
        stop.set()
        await watching  # its cancel reached the statement or an idle session (ignored there), never a later statement
        await watcher.close()


async def _finish(connection: asyncpg.Connection, url: str, schema: str, detached: Retired, archive: Path | None, lock_timeout: float) -> Retired:
    """Archive (when asked) and drop a detached partition."""
    name, written = detached.name, None
    # Its foreign keys go first, in a short transaction of their own: DROP TABLE would otherwise hold the lock
    # on the tables they point at (writes there wait) while it frees the files, ~0.3 s for 800 MB; and an
    # archive then stands alone (an empty database has nothing for them to point at).

    async def drop_foreign_keys() -> None:
        for (foreign_key,) in await connection.fetch(
            "SELECT conname FROM pg_constraint WHERE conrelid = quote_ident($1)::regclass AND contype = 'f'", name
        ):
            await connection.execute(f"ALTER TABLE {quote(name)} DROP CONSTRAINT {quote(foreign_key)}")

    await _in_transaction(connection, lock_timeout, drop_foreign_keys)
    if archive is not None:
        written = await backups.dump_table(url, schema, name, archive / f"{name}.dump")
    await _in_transaction(connection, lock_timeout, partial(connection.execute, f"DROP TABLE {quote(name)}"))
    return replace(detached, archive=written)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
