"""Partition maintenance (langlearn.partitions, `langlearn partitions`) on a real PostgreSQL 16.

Each test builds, in an empty database, a table with the history tables' shape after their conversion
(range-partitioned by `created_at`, key `(id, created_at)`, a foreign key out, an index, the old table as
the partition `<table>_pre_<YYYYMM>` and a DEFAULT partition), so the maintenance is tested whatever the
migrations do. Dates are fixed (`NOW`), or computed from the clock where a command line reads it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest

from langlearn import backups, partitions
from langlearn.backups import client_program, libpq_target
from langlearn.cli.partitions import status_lines
from langlearn.databases import ScratchDatabases
from langlearn.errors import ConfigError, UsageError
from langlearn.local_server import SYSTEM_USER
from langlearn.verify.partitions import check_partitions
from tests.conftest import LANGLEARN, REPO_ROOT, run_cli
from tests.pgbouncer import running_pgbouncer

NOW = datetime(2026, 4, 15, 12, 0, tzinfo=timezone.utc)
T = TypeVar("T")
UTC = timezone.utc

SHAPE = """
    CREATE TABLE owners (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
    CREATE TABLE history (
        id uuid NOT NULL DEFAULT gen_random_uuid(),
        owner_id uuid NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
        note text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (id, created_at)
    ) PARTITION BY RANGE (created_at);
    CREATE INDEX idx_history_owner ON history (owner_id, created_at);
    CREATE TABLE history_pre_{pre:%Y%m} PARTITION OF history FOR VALUES FROM (MINVALUE) TO ('{pre:%Y-%m-%d}+00');
    CREATE TABLE history_default PARTITION OF history DEFAULT;
    INSERT INTO owners DEFAULT VALUES;
"""


async def make_history(connection: asyncpg.Connection, pre: datetime = datetime(2026, 3, 1, tzinfo=UTC)) -> None:
    await connection.execute(SHAPE.format(pre=pre))


async def write(connection: asyncpg.Connection, *moments: datetime) -> None:
    await connection.executemany(
        "INSERT INTO history (owner_id, note, created_at) SELECT id, $1, $2 FROM owners", [(m.isoformat(), m) for m in moments]
    )


async def where(connection: asyncpg.Connection) -> dict[str, str]:
    """note -> the partition holding the row."""
    return {row["note"]: row["part"] for row in await connection.fetch("SELECT note, tableoid::regclass::text AS part FROM history")}


async def layout(connection: asyncpg.Connection) -> list[tuple[str, str, datetime | None, datetime | None, bool]]:
    """Every partition and its bounds, from the catalog."""
    return [(table.name, p.name, p.lower, p.upper, p.is_default) for table in await partitions.read_tables(connection) for p in table.partitions]


async def names(connection: asyncpg.Connection) -> list[str]:
    return [p.name for table in await partitions.read_tables(connection) for p in table.partitions]


async def test_ensure_creates_the_months_ahead_moves_the_default_rows_and_drops_the_default(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection)
    await write(connection, datetime(2026, 2, 10, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC))

    result = await partitions.ensure(connection, ahead=2, now=NOW)

    assert [(c.name, c.moved_rows) for c in result.created] == [
        ("history_p202603", 1), ("history_p202604", 0), ("history_p202605", 0), ("history_p202606", 0), ("history_p202609", 1),
    ]
    assert result.dropped_defaults == ("history_default",)
    assert await names(connection) == [
        "history_pre_202603", "history_p202603", "history_p202604", "history_p202605", "history_p202606", "history_p202609",
    ]
    assert await where(connection) == {
        "2026-02-10T00:00:00+00:00": "history_pre_202603",
        "2026-03-20T00:00:00+00:00": "history_p202603",
        "2026-09-01T00:00:00+00:00": "history_p202609",
    }
    # every new partition carries the parent's key, index and foreign key
    indexes = await connection.fetch("SELECT indexdef FROM pg_indexes WHERE tablename = 'history_p202604' ORDER BY indexname")
    assert [row["indexdef"].split(" USING ")[1] for row in indexes] == ["btree (owner_id, created_at)", "btree (id, created_at)"]
    assert await connection.fetchval("SELECT count(*) FROM pg_constraint WHERE conrelid = 'history_p202604'::regclass AND contype = 'f'") == 1

    again = await partitions.ensure(connection, ahead=2, now=NOW)
    assert (again.created, again.dropped_defaults, again.changes()) == ((), (), [])


async def test_ensure_since_an_older_month_cuts_an_empty_first_partition_back_but_never_a_full_one(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection, pre=datetime(2026, 4, 1, tzinfo=UTC))

    await partitions.ensure(connection, ahead=0, now=NOW, since=datetime(2026, 2, 20, tzinfo=UTC))
    assert [(name, lower, upper) for _, name, lower, upper, _ in await layout(connection)] == [
        ("history_pre_202604", None, datetime(2026, 2, 1, tzinfo=UTC)),
        ("history_p202602", datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
        ("history_p202603", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
        ("history_p202604", datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)),
    ]
    await write(connection, datetime(2026, 1, 31, tzinfo=UTC))
    await partitions.ensure(connection, ahead=0, now=NOW, since=datetime(2025, 11, 1, tzinfo=UTC))
    assert (await layout(connection))[0][2:4] == (None, datetime(2026, 2, 1, tzinfo=UTC))  # it holds a row: kept whole
    assert (await where(connection))["2026-01-31T00:00:00+00:00"] == "history_pre_202604"


async def test_ensure_waits_out_a_writer_holding_the_referenced_table_in_short_tries(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection)
    writer = await connect(empty_db)  # a transaction writing to `owners` (ROW EXCLUSIVE) for a second
    await writer.execute("BEGIN; LOCK TABLE owners IN ROW EXCLUSIVE MODE")

    async def commit_later() -> None:
        await asyncio.sleep(1.0)
        await writer.execute("COMMIT")

    committed = asyncio.create_task(commit_later())
    result = await partitions.ensure(connection, ahead=0, now=NOW, lock_timeout=0.2)  # ATTACH needs SHARE ROW EXCLUSIVE there
    await committed

    assert [c.name for c in result.created] == ["history_p202604"]


async def test_upgrade_creates_the_months_ahead_and_leaves_the_default_partition_to_the_maintenance_job(head_db, connect):
    connection = await connect(head_db)
    last = partitions.add_months(partitions.month_start(datetime.now(UTC)), 3)  # the command reads the clock
    expected = []
    for table, name, lower, upper, is_default in await layout(connection):  # as if every month's creation had been missed
        if lower is None and not is_default:
            month = upper  # the first partition's end, a first of the month (migration 13)
            while month <= last:
                expected.append(f"{table}_p{month:%Y%m}")
                month = partitions.add_months(month, 1)
        elif not is_default:
            await connection.execute(f"DROP TABLE {name}")

    upgraded = run_cli(LANGLEARN, "upgrade", database=head_db)

    assert upgraded.returncode == 0, upgraded.stderr
    created = [line.split()[2] for line in upgraded.stderr.splitlines() if line.startswith("partitions: created ")]
    assert sorted(created) == sorted(expected) and len(expected) >= 6
    assert {name for _, name, *_ in await layout(connection)} >= {"question_attempts_default", "activity_feeds_default"}
    ensured = run_cli(LANGLEARN, "partitions", "ensure", database=head_db)
    assert ensured.stdout.splitlines() == [f"dropped the DEFAULT partition {table}_default (emptied)" for table in ("activity_feeds", "question_attempts")]


async def test_a_write_on_a_month_boundary_lands_in_the_right_month(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection)
    await partitions.ensure(connection, ahead=2, now=NOW)
    last_instant = datetime(2026, 4, 30, 23, 59, 59, 999000, tzinfo=UTC)
    first_instant = datetime(2026, 5, 1, tzinfo=UTC)

    await write(connection, last_instant, first_instant)
    # the same instants written by a client in another time zone
    await connection.execute("SET TIME ZONE 'Asia/Ho_Chi_Minh'")
    await connection.execute(
        "INSERT INTO history (owner_id, note, created_at) SELECT id, 'local ' || t::text, t FROM owners, "
        "unnest(ARRAY['2026-05-01 06:59:59.999+07', '2026-05-01 07:00:00+07']::timestamptz[]) AS t"
    )

    placed = await where(connection)
    assert placed[last_instant.isoformat()] == "history_p202604"
    assert placed[first_instant.isoformat()] == "history_p202605"
    assert sorted(part for note, part in placed.items() if note.startswith("local")) == ["history_p202604", "history_p202605"]


async def test_a_write_past_the_months_created_fails_with_postgresql_s_clear_error(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection)
    await partitions.ensure(connection, ahead=2, now=NOW)

    with pytest.raises(asyncpg.CheckViolationError, match='no partition of relation "history" found for row'):
        await write(connection, datetime(2100, 1, 1, tzinfo=UTC))
    assert await connection.fetchval("SELECT count(*) FROM history") == 0


async def test_two_ensure_processes_at_once_create_each_month_once(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection, pre=partitions.month_start(datetime.now(UTC)))  # the command lines read the clock
    runs = await asyncio.gather(*(
        asyncio.to_thread(run_cli, LANGLEARN, "partitions", "ensure", "--ahead", "6", database=empty_db) for _ in range(2)
    ))
    outputs = [(run.stdout, run.stderr) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    created = [line for out, _ in outputs for line in out.splitlines() if line.startswith("created ")]
    this_month = partitions.month_start(datetime.now(UTC))
    expected = [f"history_p{partitions.add_months(this_month, step):%Y%m}" for step in range(7)]
    assert sorted(line.split()[1] for line in created) == expected  # each month by one of them
    assert await names(connection) == [f"history_pre_{this_month:%Y%m}", *expected]


async def test_retire_drop_detaches_concurrently_and_drops_only_whole_months_before_the_date(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection)
    await write(connection, datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 3, 31, 23, 59, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    await partitions.ensure(connection, ahead=1, now=NOW)  # March from the DEFAULT partition's row

    retired = await partitions.retire(empty_db, date(2026, 3, 15), archive=None, now=NOW)  # mid-March: March stays
    assert [each.name for each in retired] == ["history_pre_202603"]
    retired = await partitions.retire(empty_db, date(2026, 4, 1), archive=None, now=NOW)
    assert [(each.name, each.lower, each.upper) for each in retired] == [
        ("history_p202603", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    ]

    assert await names(connection) == ["history_p202604", "history_p202605"]
    assert list((await where(connection)).values()) == ["history_p202604"]
    assert await connection.fetchval("SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relname LIKE 'history_p%'") == 2  # nothing left detached


async def test_retire_beside_a_default_partition_detaches_without_concurrently(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection)  # a DEFAULT partition, as migration 13 leaves it before the first ensure
    await write(connection, datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC))

    retired = await partitions.retire(empty_db, date(2026, 3, 1), archive=None, now=NOW)

    assert [each.name for each in retired] == ["history_pre_202603"]
    assert await names(connection) == ["history_default"]
    assert list((await where(connection)).values()) == ["history_default"]


async def test_retire_archive_restores_into_an_empty_database_with_the_same_rows(empty_db, server, connect, tmp_path):
    connection = await connect(empty_db)
    await make_history(connection)
    await write(connection, *(datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=7 * n) for n in range(100)))
    await partitions.ensure(connection, ahead=1, now=NOW)
    before = await connection.fetch("SELECT id, owner_id, note, created_at FROM history_p202603 ORDER BY id")

    retired = await partitions.retire(empty_db, date(2026, 4, 1), archive=tmp_path / "archive", now=NOW)

    archives = {each.name: each.archive for each in retired}
    assert archives == {"history_pre_202603": tmp_path / "archive" / "history_pre_202603.dump",
                        "history_p202603": tmp_path / "archive" / "history_p202603.dump"}
    assert await connection.fetchval("SELECT to_regclass('history_p202603')") is None
    restored_url = await server.create()
    try:
        target = libpq_target(restored_url)
        restore = subprocess.run([str(client_program("pg_restore")), "--no-owner", "--exit-on-error", "--dbname", target.dsn,
                                  str(archives["history_p202603"])], env=target.environment, capture_output=True, text=True)
        assert restore.returncode == 0, restore.stderr
        restored = await connect(restored_url)
        assert await restored.fetch("SELECT id, owner_id, note, created_at FROM history_p202603 ORDER BY id") == before
        assert await restored.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'history_p202603'") == 2
    finally:
        await server.drop(restored_url)
    # restored beside the live table to have a look: a later retire leaves the copy alone
    target = libpq_target(empty_db)
    subprocess.run([str(client_program("pg_restore")), "--no-owner", "--exit-on-error", "--dbname", target.dsn,
                    str(archives["history_p202603"])], env=target.environment, check=True, capture_output=True)
    assert await partitions.retire(empty_db, date(2026, 4, 1), archive=None, now=NOW) == ()
    assert await connection.fetchval("SELECT count(*) FROM history_p202603") == len(before)


@dataclass
class Traffic:
    """Statements of the service in miniature, each timed; any error kept."""

    slowest: float = 0.0
    statements: int = 0
    written: int = 0
    errors: list[str] = field(default_factory=list)

    async def timed(self, statement: Awaitable[T]) -> T | None:
        started = time.perf_counter()
        try:
            return await statement
        except asyncpg.PostgresError as error:
            self.errors.append(f"{type(error).__name__}: {error}")
            return None
        finally:
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.statements += 1


async def test_retire_under_writers_and_readers_holds_no_statement_past_the_lock_timeout(empty_db, connect):
    """Writers add owners (the table the history's foreign key points at) and their history in the current month,
    readers read an owner's history across every partition, while the two old months retire; meanwhile a batch
    transaction keeps a write on `owners` open for `hold` seconds. The second transaction of DETACH … CONCURRENTLY
    locks `owners` (SHARE ROW EXCLUSIVE: the detached table gets foreign-key triggers of its own there); queued
    behind the batch, that lock would hold every writer of `owners` until the batch ends."""
    lock_timeout, hold = 0.3, 1.5
    connection = await connect(empty_db)
    await make_history(connection)
    await connection.execute(
        "INSERT INTO history (owner_id, note, created_at) SELECT id, 'old', timestamptz '2026-02-01 00:00+00' + n * interval '3 minutes' "
        "FROM owners, generate_series(1, 20000) n"  # February into the first partition, the rest of it into March
    )
    await partitions.ensure(connection, ahead=1, now=NOW)
    (owner,) = await connection.fetchval("SELECT array_agg(id) FROM owners")
    traffic, done = Traffic(), asyncio.Event()

    async def writer() -> None:
        client = await connect(empty_db)
        while not done.is_set():
            added = await traffic.timed(client.fetchval("INSERT INTO owners DEFAULT VALUES RETURNING id"))
            if added is not None and await traffic.timed(client.execute(
                "INSERT INTO history (owner_id, note, created_at) VALUES ($1, 'new', $2)", added, NOW)) is not None:
                traffic.written += 1

    async def reader() -> None:
        client = await connect(empty_db)
        while not done.is_set():
            await traffic.timed(client.fetchval("SELECT count(*) FROM history WHERE owner_id = $1", owner))

    async def batch() -> None:
        client = await connect(empty_db)
        async with client.transaction():
            await client.execute("INSERT INTO owners DEFAULT VALUES")
            await asyncio.sleep(hold)

    clients = [asyncio.create_task(work()) for work in (writer, writer, reader, reader)]
    await asyncio.sleep(0.3)
    holding = asyncio.create_task(batch())
    await asyncio.sleep(0.1)
    retired = await partitions.retire(empty_db, date(2026, 4, 1), archive=None, now=NOW, lock_timeout=lock_timeout)
    await holding
    await asyncio.sleep(0.3)
    done.set()
    await asyncio.gather(*clients)

    print(f"retire under traffic: {traffic.statements} statements, the slowest {traffic.slowest * 1000:.0f} ms")
    assert [each.name for each in retired] == ["history_pre_202603", "history_p202603"]
    assert traffic.errors == []
    assert traffic.slowest < lock_timeout + 0.4, f"a statement waited {traffic.slowest:.2f} s (lock timeout {lock_timeout} s)"
    assert await names(connection) == ["history_p202604", "history_p202605"]
    assert await connection.fetchval("SELECT count(*) FROM history WHERE note = 'new'") == traffic.written > 0


async def test_an_interrupted_detach_is_finalized_and_the_retire_finished_by_the_next_run(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection)
    await write(connection, datetime(2026, 3, 2, tzinfo=UTC))
    await partitions.ensure(connection, ahead=1, now=NOW)
    reader = await connect(empty_db)  # an open snapshot: DETACH CONCURRENTLY's second phase waits for it
    await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    await reader.fetchval("SELECT count(*) FROM history")

    with pytest.raises(partitions.PartitionError, match="detaching history_pre_202603 from history failed"):
        await partitions.retire(empty_db, date(2026, 4, 1), archive=None, now=NOW, detach_wait=0.5)
    pending = [(p.name, p.detach_pending) for t in await partitions.read_tables(connection) for p in t.partitions if p.detach_pending]
    assert pending == [("history_pre_202603", True)]
    assert [f.kind for f in await check_partitions(connection, now=NOW)] == ["detach_pending"]
    await reader.execute("ROLLBACK")

    retired = await partitions.retire(empty_db, date(2026, 4, 1), archive=None, now=NOW)

    assert [(each.name, each.resumed) for each in retired] == [("history_pre_202603", True), ("history_p202603", False)]
    assert await names(connection) == ["history_p202604", "history_p202605"]
    assert await connection.fetchval("SELECT to_regclass('history_pre_202603')") is None


@pytest.mark.parametrize("backend_dies", [False, True], ids=["the-server-finishes-the-detach", "its-session-dies-too"])
async def test_a_retire_killed_mid_detach_is_finished_by_a_rerun_and_its_archive_holds_every_row(empty_db, server, connect, tmp_path, backend_dies):
    """kill -9 of `langlearn partitions retire --archive` while its DETACH … CONCURRENTLY waits for a reader: the server
    then finishes the detach alone (the table is detached, marked, not archived, not dropped), or, its session ended
    too, leaves it "detach pending". Either way a rerun finalizes, archives and drops it, and the archive restores
    into an empty database with every row."""
    this_month = partitions.month_start(datetime.now(UTC))  # the command line reads the clock
    old = f"history_pre_{this_month:%Y%m}"
    connection = await connect(empty_db)
    await make_history(connection, pre=this_month)
    await write(connection, *(partitions.add_months(this_month, -1) + timedelta(hours=5 * n) for n in range(100)))
    await partitions.ensure(connection, ahead=1)
    rows = await connection.fetch(f"SELECT id, owner_id, note, created_at FROM {old} ORDER BY id")
    reader = await connect(empty_db)  # DETACH … CONCURRENTLY waits for this transaction, which has read the parent
    await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    await reader.fetchval("SELECT count(*) FROM history")
    command = [LANGLEARN, "partitions", "retire", "--before", f"{this_month:%Y-%m-%d}", "--archive", str(tmp_path), "--yes"]

    retiring = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "DATABASE_URL": empty_db, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    detaching = None
    for _ in range(200):
        detaching = await connection.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE %DETACH PARTITION%CONCURRENTLY' AND wait_event_type = 'Lock'")
        if detaching is not None:
            break
        await asyncio.sleep(0.05)
    assert detaching is not None, "the retire never reached its DETACH"
    retiring.kill()
    retiring.wait()
    if backend_dies:
        await connection.execute("SELECT pg_terminate_backend($1)", detaching)
    await reader.execute("ROLLBACK")
    for _ in range(200):  # the session goes once it finds its client gone
        if not await connection.fetchval("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)", detaching):
            break
        await asyncio.sleep(0.05)
    left = await partitions.read_status(connection)
    assert [p.name for t in left.tables for p in t.partitions if p.detach_pending] == ([old] if backend_dies else [])
    assert left.retiring == (() if backend_dies else (f"{old} (from history)",))
    assert list(tmp_path.iterdir()) == []

    rerun = run_cli(*command, database=empty_db)

    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines() == [f"retired {old} of history detached by an earlier run: archived to {tmp_path / old}.dump, dropped"]
    assert await connection.fetchval("SELECT to_regclass($1)", old) is None
    restored_url = await server.create()
    try:
        target = libpq_target(restored_url)
        restore = subprocess.run([str(client_program("pg_restore")), "--no-owner", "--exit-on-error", "--dbname", target.dsn,
                                  str(tmp_path / f"{old}.dump")], env=target.environment, capture_output=True, text=True)
        assert restore.returncode == 0, restore.stderr
        assert await (await connect(restored_url)).fetch(f"SELECT id, owner_id, note, created_at FROM {old} ORDER BY id") == rows
    finally:
        await server.drop(restored_url)


async def test_startup_s_ensure_creates_months_and_leaves_a_pending_detach_to_the_maintenance_job(empty_db, connect):
    """FINALIZE waits for older snapshots and locks the tables the foreign keys point at: while a long transaction
    runs it gives up after its tries, which must not fail a deploy (startup's ensure: `drop_default=False`)."""
    connection = await connect(empty_db)
    await make_history(connection)
    await write(connection, datetime(2026, 2, 2, tzinfo=UTC))
    await partitions.ensure(connection, ahead=0, now=NOW)
    reader = await connect(empty_db)
    await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    await reader.fetchval("SELECT count(*) FROM history")
    with pytest.raises(partitions.PartitionError):  # the detach is left pending
        await partitions.retire(empty_db, date(2026, 3, 1), archive=None, now=NOW, detach_wait=0.2)

    made = await partitions.ensure(connection, ahead=1, now=NOW, drop_default=False, lock_timeout=0.1)

    assert ([c.name for c in made.created], made.finalized) == (["history_p202605"], ())
    await reader.execute("ROLLBACK")
    assert (await partitions.ensure(connection, ahead=1, now=NOW)).finalized == ("history_pre_202603",)


async def test_verify_reports_a_missing_upcoming_partition_and_rows_in_the_default(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection, pre=datetime(2026, 4, 1, tzinfo=UTC))
    await write(connection, datetime(2026, 4, 2, tzinfo=UTC))

    found = await check_partitions(connection, now=NOW)
    assert [(f.severity.value, f.kind, f.subject) for f in found] == [
        ("error", "missing_partition", "history.2026-04"),
        ("warning", "missing_upcoming_partition", "history.2026-05"),
        ("warning", "rows_in_default_partition", "history.history_default"),
    ]
    await partitions.ensure(connection, ahead=0, now=NOW)
    assert [(f.kind, f.subject) for f in await check_partitions(connection, now=NOW)] == [("missing_upcoming_partition", "history.2026-05")]
    await partitions.ensure(connection, ahead=1, now=NOW)
    assert await check_partitions(connection, now=NOW) == []


async def test_status_lists_bounds_sizes_rows_and_the_default(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection)
    await write(connection, datetime(2026, 5, 2, tzinfo=UTC))
    shown = run_cli(LANGLEARN, "partitions", "status", database=empty_db)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "history (by created_at): 2 partition(s)"
    assert lines[1].split()[:2] == ["history_default", "DEFAULT"] and lines[1].endswith(" kB  1 rows")
    assert lines[2].split()[:3] == ["history_pre_202603", "[MINVALUE,", "2026-03-01)"]


@pytest.mark.parametrize(("arguments", "message"), [
    (["retire", "--before", "2026-03-01", "--drop"], "removes those months' rows from the database; add --yes to confirm"),
    (["retire", "--before", "2999-01-01", "--drop", "--yes"], "is later than the start of the current month"),
    (["retire", "--before", "March", "--drop", "--yes"], "'March' is not a date (YYYY-MM-DD)"),
    (["retire", "--before", "2026-03-01", "--yes"], "one of the arguments --archive --drop is required"),
    (["ensure", "--ahead", "-1"], "'-1' is not a number of months from 0 to 120"),
])
async def test_bad_input_is_one_line_and_changes_nothing(empty_db, connect, arguments, message):
    connection = await connect(empty_db)
    await make_history(connection)
    before = await names(connection)

    refused = run_cli(LANGLEARN, "partitions", *arguments, database=empty_db)

    assert refused.returncode == 2
    assert refused.stdout == "" and len(refused.stderr.splitlines()) == 1 and message in refused.stderr, refused.stderr
    assert await names(connection) == before


async def test_retire_drop_is_refused_on_a_database_marked_production(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection)
    await connection.execute(f"ALTER DATABASE \"{empty_db.rsplit('/', 1)[1]}\" SET langlearn.environment = 'production'")

    refused = run_cli(LANGLEARN, "partitions", "retire", "--before", "2026-03-01", "--drop", "--yes", database=empty_db)

    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: this database is marked langlearn.environment = 'production': retire with --archive DIR there "
        "(a pg_dump of each partition before its DROP), not --drop"
    )
    with pytest.raises(partitions.PartitionError) as raised:  # the Python API names its own arguments
        await partitions.retire(empty_db, date(2026, 3, 1), archive=None)
    assert str(raised.value).endswith("retire with an archive folder there (a pg_dump of each partition before its DROP), not archive=None")
    with pytest.raises(UsageError, match=r"^ahead=121 is out of range: give a number of months from 0 to 120$"):
        await partitions.ensure(connection, ahead=121)
    assert await names(connection) == ["history_default", "history_pre_202603"]


async def test_ensure_waits_for_the_maintenance_lock_then_finds_nothing_to_do(empty_db, connect):
    connection = await connect(empty_db)
    await make_history(connection, pre=partitions.month_start(datetime.now(UTC)))
    holder = await connect(empty_db)
    await holder.execute("SELECT pg_advisory_lock($1)", partitions.PARTITION_LOCK.key)

    waiting = asyncio.create_task(partitions.ensure(await connect(empty_db), ahead=1, lock_wait=30))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    assert await partitions.ensure(holder, ahead=1) is not None  # the holder may run it (session locks nest)
    await holder.execute("SELECT pg_advisory_unlock($1)", partitions.PARTITION_LOCK.key)
    result = await asyncio.wait_for(waiting, 30)
    assert result.created == ()


POSTGRES_15 = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def postgres_15():
    """A throwaway Debian PostgreSQL 15 cluster (run as the `pgserver` account) for this file's tests, each in
    databases of its own; stopped and removed after them."""
    if not (POSTGRES_15 / "pg_ctl").exists():
        pytest.fail(f"PostgreSQL 15 is not installed ({POSTGRES_15}/pg_ctl missing): run scripts/install_rigs.sh", pytrace=False)
    folder = Path(tempfile.mkdtemp(prefix="langlearn-pg15-"))
    entry = pwd.getpwnam(SYSTEM_USER)
    os.chown(folder, entry.pw_uid, entry.pw_gid)
    as_server = {"capture_output": True, "text": True, "cwd": "/", "check": True, **({"user": SYSTEM_USER} if os.geteuid() == 0 else {})}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    subprocess.run([str(POSTGRES_15 / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--locale=C"], **as_server)
    subprocess.run([str(POSTGRES_15 / "pg_ctl"), "start", "-w", "-D", str(data), "-l", str(folder / "log"), "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"], **as_server)
    try:
        yield f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([str(POSTGRES_15 / "pg_ctl"), "stop", "-m", "immediate", "-D", str(data)], **{**as_server, "check": False})
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.rig
@pytest.mark.slow
async def test_ensure_boundaries_and_retire_with_an_archive_on_postgresql_15(postgres_15, connect, tmp_path):
    scratch = ScratchDatabases(postgres_15, "lltest_pg15_")
    url, restored_url = await scratch.create(), await scratch.create()
    connection = await connect(url)
    assert (await connection.fetchval("SHOW server_version_num")).startswith("15")
    await make_history(connection)
    await write(connection, datetime(2026, 3, 31, 23, 59, 59, 999000, tzinfo=UTC))

    result = await partitions.ensure(connection, ahead=1, now=NOW)
    assert [c.name for c in result.created] == ["history_p202603", "history_p202604", "history_p202605"]
    await write(connection, datetime(2026, 4, 1, tzinfo=UTC))
    assert set((await where(connection)).values()) == {"history_p202603", "history_p202604"}
    with pytest.raises(asyncpg.CheckViolationError, match="no partition of relation"):
        await write(connection, datetime(2100, 1, 1, tzinfo=UTC))
    before = await connection.fetch("SELECT id, owner_id, note, created_at FROM history_p202603")

    retired = await partitions.retire(url, date(2026, 4, 1), archive=tmp_path, now=NOW)  # DETACH … CONCURRENTLY on 15

    assert [each.name for each in retired] == ["history_pre_202603", "history_p202603"]
    assert await names(connection) == ["history_p202604", "history_p202605"]
    target = libpq_target(restored_url)
    restore = subprocess.run([str(client_program("pg_restore")), "--no-owner", "--exit-on-error", "--dbname", target.dsn,
                              str(tmp_path / "history_p202603.dump")], env=target.environment, capture_output=True, text=True)
    assert restore.returncode == 0, restore.stderr
    assert await (await connect(restored_url)).fetch("SELECT id, owner_id, note, created_at FROM history_p202603") == before


PARTMAN_15 = Path("/usr/share/postgresql/15/extension/pg_partman.control")


@pytest.mark.rig
@pytest.mark.slow
async def test_tables_pg_partman_manages_are_left_to_it_on_postgresql_15(postgres_15, connect):
    """Debian's PostgreSQL 15 offers pg_partman (`postgresql-15-partman`): `status` says so; once it manages a table,
    `ensure` and `retire` leave that table to it and keep looking after the others."""
    if not PARTMAN_15.exists():
        pytest.fail(f"pg_partman for PostgreSQL 15 is not installed ({PARTMAN_15} missing): run scripts/install_rigs.sh", pytrace=False)
    url = await ScratchDatabases(postgres_15, "lltest_pg15_").create()
    connection = await connect(url)
    await make_history(connection)
    offered = (await partitions.read_status(connection)).partman
    assert offered.available and offered.installed is None
    assert status_lines(await partitions.read_status(connection))[-1].startswith(f"pg_partman {offered.available} is available on this server")
    await connection.execute("""
        CREATE SCHEMA partman;
        CREATE EXTENSION pg_partman SCHEMA partman;
        CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at))
            PARTITION BY RANGE (created_at);
        SELECT partman.create_parent('public.events', 'created_at', 'native', 'monthly', p_premake := 2, p_start_partition := '2026-01-01');
    """)
    made_by_partman = [(p.name, p.lower, p.upper) for t in await partitions.read_tables(connection) if t.name == "events" for p in t.partitions]
    assert ("events_p2026_01", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)) in made_by_partman

    ensured = await partitions.ensure(connection, ahead=1, now=NOW)
    retired = await partitions.retire(url, date(2026, 4, 1), archive=None, now=NOW)

    assert ensured.left_to_partman == ("events",)
    assert [c.table for c in ensured.created] == ["history", "history"] and ensured.dropped_defaults == ("history_default",)
    assert [(each.table, each.name) for each in retired] == [("history", "history_pre_202603")]
    assert [(p.name, p.lower, p.upper) for t in await partitions.read_tables(connection) if t.name == "events" for p in t.partitions] == made_by_partman
    assert status_lines(await partitions.read_status(connection))[-1] == (
        f"pg_partman {offered.available} is installed here and manages events; ensure and retire leave those to it"
    )


async def test_a_backup_and_its_restore_keep_the_partitions_their_bounds_and_rows(empty_db, server, connect, tmp_path):
    connection = await connect(empty_db)
    await make_history(connection)
    await write(connection, datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 31, 23, 59, 59, 999000, tzinfo=UTC))
    await partitions.ensure(connection, ahead=1, now=NOW)
    await write(connection, datetime(2026, 4, 1, tzinfo=UTC))

    dump = await backups.backup(empty_db, tmp_path / "with-partitions.dump")
    restored_url = await server.create()
    try:
        await backups.restore(restored_url, dump)
        restored = await connect(restored_url)
        assert await layout(restored) == await layout(connection)
        assert await where(restored) == await where(connection)
        await partitions.ensure(restored, ahead=2, now=NOW)  # and the maintenance goes on from there
        assert (await names(restored))[-1] == "history_p202606"
    finally:
        await server.drop(restored_url)


@pytest.mark.parametrize("table", ["question_attempts", "activity_feeds"])
async def test_the_seed_writes_its_history_into_a_partition_per_month(seeded_db, connect, table):
    connection = await connect(seeded_db)
    placed = await connection.fetch(
        f"SELECT tableoid::regclass::text AS part, min(created_at) AS first, max(created_at) AS last, count(*) AS n FROM {table} GROUP BY 1"
    )

    assert len(placed) >= 2 and sum(row["n"] for row in placed) > 0
    for row in placed:  # each month's rows in that month's partition, none in the first partition or a DEFAULT one
        assert row["part"] == f"{table}_p{row['first'].astimezone(UTC):%Y%m}" == f"{table}_p{row['last'].astimezone(UTC):%Y%m}", row
    assert [f for f in await check_partitions(connection) if f.subject.startswith(table)] == []
    # the parent has statistics of its own (autovacuum analyses only the partitions)
    assert await connection.fetchval("SELECT count(*) FROM pg_stats WHERE tablename = $1 AND inherited", table) > 0


async def test_maintenance_connects_to_postgresql_itself_never_through_a_transaction_pooler(empty_db, connect):
    """Its lock is a session's, as the migrations' is: DATABASE_DIRECT_URL when set, and a transaction pooler refused."""
    connection = await connect(empty_db)
    await make_history(connection)
    pooled = f"{empty_db}?pool_mode=transaction"
    for command in (["ensure"], ["retire", "--before", "2026-03-01", "--drop", "--yes"]):
        refused = run_cli(LANGLEARN, "partitions", *command, database=pooled)
        assert refused.returncode == 2 and refused.stderr.startswith(
            "error: partition maintenance cannot run through a transaction pooler (its URL says pool_mode=transaction)"
        ) and refused.stderr.count("\n") == 1, refused.stderr
    assert await names(connection) == ["history_default", "history_pre_202603"]
    direct = run_cli(LANGLEARN, "partitions", "ensure", database=pooled, env={"DATABASE_DIRECT_URL": empty_db})
    assert direct.returncode == 0, direct.stderr
    assert "history_default" not in await names(connection)


async def test_a_retire_refused_for_a_transaction_pooler_leaves_no_connection_open(empty_db, connect):
    connection = await connect(empty_db)
    with pytest.raises(ConfigError, match="partition maintenance cannot run through a transaction pooler") as refused:
        await partitions.retire(f"{empty_db}?pool_mode=transaction", date(2026, 3, 1), archive=None, now=NOW)
    others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    assert await connection.fetchval(others) == 0, refused.traceback  # `refused` keeps the frame: an unclosed connection stays


@pytest.mark.rig
@pytest.mark.slow
@pytest.mark.parametrize("say_pool_mode", [True, False], ids=["url-says-transaction", "found-by-its-backends"])
async def test_maintenance_behind_a_real_pgbouncer_refuses_it_and_runs_on_the_direct_url(server, empty_db, connect, say_pool_mode):
    """DATABASE_URL through PgBouncer in transaction mode, as a service's: `ensure` and `retire` refuse it in one line
    (whether its URL says pool_mode=transaction or its backends give it away) and change nothing; `status` reads through
    it; with DATABASE_DIRECT_URL set to the server, the same commands create the months and retire the old one."""
    connection = await connect(empty_db)
    this_month = partitions.month_start(datetime.now(UTC))  # the command lines read the clock
    await make_history(connection, pre=this_month)
    await write(connection, partitions.add_months(this_month, -2), datetime.now(UTC))  # an old row, and one in the DEFAULT
    before = (await layout(connection), await where(connection))
    retire = ["retire", "--before", f"{this_month:%Y-%m-%d}", "--drop", "--yes"]
    with running_pgbouncer(server.url) as bouncer:
        pooled = bouncer.url_for(empty_db, say_pool_mode=say_pool_mode)
        for command in (["ensure"], retire):
            refused = run_cli(LANGLEARN, "partitions", *command, database=pooled)
            assert refused.returncode == 2 and refused.stderr.startswith(
                "error: partition maintenance cannot run through a transaction pooler ("
            ) and "set DATABASE_DIRECT_URL to PostgreSQL itself" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
        assert (await layout(connection), await where(connection)) == before, "a refusal changed something"

        service_url = bouncer.url_for(empty_db)  # what a service behind the pooler has as DATABASE_URL
        status = run_cli(LANGLEARN, "partitions", "status", database=service_url)
        assert status.returncode == 0 and f"history_pre_{this_month:%Y%m}" in status.stdout, status.stdout + status.stderr
        direct = {"DATABASE_DIRECT_URL": empty_db}
        ensured = run_cli(LANGLEARN, "partitions", "ensure", database=pooled, env=direct)
        assert ensured.returncode == 0 and f"created history_p{this_month:%Y%m}" in ensured.stdout, ensured.stdout + ensured.stderr
        retired = run_cli(LANGLEARN, "partitions", *retire, database=pooled, env=direct)
        assert retired.returncode == 0 and f"retired history_pre_{this_month:%Y%m} of history" in retired.stdout, retired.stdout + retired.stderr
        status = run_cli(LANGLEARN, "partitions", "status", database=service_url)
        assert status.returncode == 0 and "history_pre_" not in status.stdout and f"history_p{this_month:%Y%m}" in status.stdout, status.stdout

    assert list((await where(connection)).values()) == [f"history_p{this_month:%Y%m}"]  # the old month's row retired with it
