"""Retiring a month of history: DETACH PARTITION … CONCURRENTLY + DROP against DELETE of the same rows, in one run.

    python bench/bench_partition_retire.py                 # --users 20000: bench_retire_20000, created once, then reused
    python bench/bench_partition_retire.py --users 2000    # a quicker look

`measure_retirement` does the work below and returns it (`Retirement`); `print_retirement` and
`retirement_checks` report it. `bench/bench_partitions.py` calls them after the conversion, so that one
run reports every target of the time-partitioned history; this script runs the retirement alone.

1. The database `bench_retire_<users>` is created at head and seeded the first time with
   `langlearn seed --users N --anchor <the first of this month, UTC>`, then kept: its eight weeks of
   history end with the last month, which the seed gives a partition of its own (as every month of it);
   then `partitions ensure` drops the DEFAULT partitions, as the daily cron would. It is only ever read
   (as a template) afterwards.
2. Three copies of it (CREATE DATABASE … TEMPLATE). In each, outside the clock: the months before the last
   one are retired (`retire --before <first of last month> --drop`), so all hold the same rows and exactly
   one month is left before this one; then VACUUM ANALYZE and CHECKPOINT (so that both start with the same
   full-page-image state of the WAL).
3. Timed, on a connection opened before the clock starts: in the first copy, `DELETE` of that month's rows
   from `question_attempts` and `activity_feeds`, one transaction (the statement prunes to the month's
   partitions: DELETE's best case; on the plain table before the conversion it would scan all of it), then
   the plain VACUUM it leaves to do (until then the table keeps its size); in the second, `DETACH PARTITION
   … CONCURRENTLY` then `DROP TABLE` of each table's partition of that month, each statement timed; in the
   third, the whole command, `langlearn.partitions.retire(--before <first of this month>, --drop)` (its own
   connections, maintenance lock, catalog reads, the mark, the same statements). For each: the wall time,
   the WAL written (pg_current_wal_lsn before and after, pg_wal_lsn_diff), and the two tables' size on disk
   after (every partition, indexes and TOAST included).
Rows printed: DELETE; DELETE + VACUUM; the DETACH statements alone (the size after counts the partitions still
attached: the detached files are still on disk); DETACH + DROP; the whole command.
Target: retiring at least 100x faster than DELETE, checked twice: for the DETACH statements (what the
tables' readers and writers wait on) and for DETACH + DROP (the whole retirement). The DROP's time is the
file system's: PostgreSQL truncates the files at commit (strace: `truncate()` is nearly all of it), as long
as a plain `truncate` of a file of that size takes on the same disk (docs/scale-out.md, "Retiring a month:
measured"), so DETACH + DROP misses it on a disk like this machine's.
The copies are dropped at the end; the exit status is 0 whether or not the target is met (a benchmark reports).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from langlearn import history, partitions
from langlearn.databases import ScratchDatabases, admin_connection, create_database, database_exists, with_database
from langlearn.settings import database_url, open_connection
from langlearn.urls import redact

REPO_ROOT = Path(__file__).resolve().parent.parent
TABLES = ("question_attempts", "activity_feeds")
RETIRE_MIN_RATIO = 100.0
SIZE = "SELECT sum(pg_total_relation_size(relid))::bigint FROM pg_partition_tree($1::regclass)"


@dataclass
class Side:
    name: str
    seconds: float = 0.0
    wal_bytes: int = 0
    size_after: int = 0


async def prepare(server: str, name: str, users: int, seed: int, anchor: date) -> str:
    """The seeded template database: created, migrated and seeded if missing, else reused as it is."""
    url = with_database(server, name)
    admin = await admin_connection(server)
    try:
        exists = await database_exists(admin, name)
    finally:
        await admin.close()
    if not exists:
        await create_database(server, name)
        print(f"created {name} (kept after the run; `langlearn db drop {name} --yes` removes it)", flush=True)
        await history.upgrade(url)
    connection = await open_connection(url)
    try:
        completed = await connection.fetchval("SELECT anchor_at FROM seed_runs WHERE status = 'completed' LIMIT 1")
    finally:
        await connection.close()
    if completed is None:
        print(f"seeding {name}: langlearn seed --users {users} --seed {seed} --anchor {anchor} (minutes; done once) ...", flush=True)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "langlearn", "seed", "--users", str(users), "--seed", str(seed), "--anchor", anchor.isoformat(), "--no-progress"],
            cwd=REPO_ROOT, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise SystemExit(f"langlearn seed failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
        print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)
    connection = await open_connection(url)
    try:  # the daily maintenance has run: no DEFAULT partition (beside one, PostgreSQL refuses DETACH … CONCURRENTLY)
        await partitions.ensure(connection)
    finally:
        await connection.close()
    return url


async def sizes(url: str) -> int:
    connection = await open_connection(url)
    try:
        return sum([await connection.fetchval(SIZE, table) for table in TABLES])
    finally:
        await connection.close()


async def settle(url: str) -> None:
    connection = await open_connection(url)
    try:
        await connection.execute("VACUUM (ANALYZE)")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


async def measure(name: str, url: str, run: Callable[[], Awaitable[None]]) -> Side:
    """Time `run` on `url`, with the WAL it wrote and the two tables' size after."""
    watcher = await open_connection(url)
    try:
        start_lsn = await watcher.fetchval("SELECT pg_current_wal_lsn()")
        started = time.perf_counter()
        await run()
        seconds = time.perf_counter() - started
        wal_bytes = int(await watcher.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", start_lsn))
    finally:
        await watcher.close()
    return Side(name, seconds, wal_bytes, await sizes(url))


def combined(name: str, first: Side, then: Side) -> Side:
    """`first` followed by `then`: their times and WAL added, the size after `then`."""
    return Side(name, first.seconds + then.seconds, first.wal_bytes + then.wal_bytes, then.size_after)


def megabytes(count: int) -> str:
    return f"{count / 1024 / 1024:,.1f} MB" if count >= 1024 * 1024 else f"{count / 1024:,.1f} kB"


@dataclass(frozen=True)
class Check:
    """One of a benchmark's targets: what it asks, what was measured, whether it was met."""

    target: str
    measured: str
    met: bool


def print_checks(checks: list[Check]) -> None:
    print(f"\ntargets: {sum(check.met for check in checks)} of {len(checks)} met")
    for check in checks:
        print(f"  {'met   ' if check.met else 'MISSED'}  {check.target}: {check.measured}")


@dataclass(frozen=True)
class Retirement:
    """One month retired from three copies of the same database: each way's time, WAL and size after."""

    template: str
    month: datetime
    month_rows: dict[str, int]
    all_rows: dict[str, int]
    size_before: int
    deleted: Side
    vacuumed: Side  # DELETE, then the VACUUM it leaves to do
    detached: Side  # the DETACH ... CONCURRENTLY statements alone
    dropped: Side  # DETACH ... CONCURRENTLY, then DROP TABLE
    retired: Side  # `partitions.retire(--drop)`, the whole command
    statement_seconds: dict[str, float]  # each DETACH and DROP of `dropped`


async def measure_retirement(server: str, users: int, seed: int, database_name: str | None = None) -> Retirement:
    """Steps 1-3 of the module docstring on `server`: the template `database_name` (default bench_retire_<users>)
    prepared, three copies of it measured, then dropped."""
    this_month = partitions.month_start(datetime.now(timezone.utc))
    last_month = partitions.add_months(this_month, -1)
    template = database_name or f"bench_retire_{users}"
    await prepare(server, template, users, seed, this_month.date())

    scratch = ScratchDatabases(server, "bench_retire_copy_")
    statement_seconds: dict[str, float] = {}
    copies = [await scratch.create(template=template) for _ in range(3)]
    try:
        for copy in copies:  # the same rows in each: exactly one month before this one
            await partitions.retire(copy, last_month.date(), archive=None)
            await settle(copy)
        counted = await open_connection(copies[0])
        try:
            month_rows = {table: await counted.fetchval(f"SELECT count(*) FROM {table} WHERE created_at >= $1 AND created_at < $2",
                                                         last_month, this_month) for table in TABLES}
            all_rows = {table: await counted.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}
        finally:
            await counted.close()
        if not all(month_rows.values()):
            raise SystemExit(f"{template} holds no rows in {last_month:%Y-%m} (seeded for an earlier month): "
                             f"`langlearn db drop {template} --yes`, then run again to seed it for this one")
        size_before = await sizes(copies[0])

        deleter, detacher = await open_connection(copies[0]), await open_connection(copies[1])
        try:
            async def delete_month() -> None:
                async with deleter.transaction():
                    for table in TABLES:
                        await deleter.execute(f"DELETE FROM {table} WHERE created_at >= $1 AND created_at < $2", last_month, this_month)

            async def vacuum() -> None:
                for table in TABLES:
                    await deleter.execute(f"VACUUM {table}")

            async def timed(statement: str) -> None:
                started = time.perf_counter()
                await detacher.execute(statement)
                statement_seconds[statement] = time.perf_counter() - started

            async def detach() -> None:
                for table in TABLES:
                    await timed(f"ALTER TABLE {table} DETACH PARTITION {table}_p{last_month:%Y%m} CONCURRENTLY")

            async def drop() -> None:
                for table in TABLES:
                    await timed(f"DROP TABLE {table}_p{last_month:%Y%m}")

            async def retire_month() -> None:
                retired = await partitions.retire(copies[2], this_month.date(), archive=None)
                assert len(retired) == len(TABLES), retired

            deleted = await measure("DELETE of the month's rows", copies[0], delete_month)
            vacuumed = combined("DELETE + VACUUM", deleted, await measure("", copies[0], vacuum))
            detached = await measure("DETACH CONCURRENTLY (files kept)", copies[1], detach)
            dropped = combined("DETACH CONCURRENTLY + DROP", detached, await measure("", copies[1], drop))
            retired = await measure("`partitions retire --drop`, whole", copies[2], retire_month)
        finally:
            await deleter.close()
            await detacher.close()
    finally:
        for copy in copies:
            await scratch.drop(copy)
    return Retirement(template, last_month, month_rows, all_rows, size_before, deleted, vacuumed, detached, dropped, retired, statement_seconds)


def print_retirement(retirement: Retirement) -> None:
    deleted = retirement.deleted
    print(f"\nretiring {retirement.month:%Y-%m} (copies of {retirement.template}); both tables on disk before: {megabytes(retirement.size_before)}")
    for table in TABLES:
        print(f"  {table}: {retirement.month_rows[table]:,} rows in that month, of {retirement.all_rows[table]:,}")
    print(f"\n| {'way':<36} | {'time':>10} | {'WAL written':>12} | {'size after':>11} | {'DELETE / this':>13} |")
    print(f"|{'-' * 38}|{'-' * 12}|{'-' * 14}|{'-' * 13}|{'-' * 15}|")
    for side in (deleted, retirement.vacuumed, retirement.detached, retirement.dropped, retirement.retired):
        print(f"| {side.name:<36} | {side.seconds * 1000:>7.1f} ms | {megabytes(side.wal_bytes):>12} | {megabytes(side.size_after):>11} | "
              f"{deleted.seconds / side.seconds:>12,.1f}x |")
    print("\neach statement: " + "; ".join(f"{statement.split(' PARTITION ')[-1].replace('DROP TABLE ', 'DROP ')} {seconds * 1000:.1f} ms"
                                        for statement, seconds in retirement.statement_seconds.items()))
    dropped, vacuumed = retirement.dropped, retirement.vacuumed
    print(f"DETACH CONCURRENTLY + DROP: {vacuumed.seconds / dropped.seconds:,.1f}x faster than DELETE + VACUUM (the same end: the rows gone, "
          f"their space free), with {vacuumed.wal_bytes / max(dropped.wal_bytes, 1):,.0f}x less WAL")


def retirement_checks(retirement: Retirement) -> list[Check]:
    """The target, >= 100x faster than DELETE, for what readers and writers notice (the DETACH) and for the whole retirement."""
    deleted = retirement.deleted

    def check(side: Side, why: str) -> Check:
        ratio = deleted.seconds / side.seconds
        return Check(f"retiring a month >= {RETIRE_MIN_RATIO:g}x faster than DELETE, {why}",
                     f"{ratio:,.1f}x ({side.seconds * 1000:,.1f} ms against {deleted.seconds * 1000:,.1f} ms)", ratio >= RETIRE_MIN_RATIO)

    return [check(retirement.detached, "by DETACH ... CONCURRENTLY (what readers and writers wait on)"),
            check(retirement.dropped, "by DETACH ... CONCURRENTLY + DROP (the DROP's time: the file system truncating the files at commit)")]


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000, help="learners to seed when the database is created (default 20000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the data (default 42)")
    parser.add_argument("--database-name", help="the seeded template database (default bench_retire_<users>)")
    args = parser.parse_args(argv)
    server = database_url()
    retirement = await measure_retirement(server, args.users, args.seed, args.database_name)
    print(f"server {redact(server)}, template {retirement.template} ({args.users:,} learners when seeded)")
    print_retirement(retirement)
    print_checks(retirement_checks(retirement))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
