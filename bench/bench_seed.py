"""Benchmark the seed against restoring a dump of what it wrote, on the same server, in the same run.

    python bench/bench_seed.py                       # --users 20000
    python bench/bench_seed.py --users 2000          # a quicker look
    python bench/bench_seed.py --raw-copy            # also the old baseline: per-row COPY into the migrated schema
    python bench/bench_seed.py --partitions --users 3000 --rounds 4   # the bulk path into partitioned vs plain history tables

1. The seed end to end, as a user runs it: `langlearn seed --users N` in a subprocess, into a fresh
   database at head (a fresh database of 1000 learners or more takes the bulk path). Timed from process
   start to exit; its peak RSS (the largest of the seed's process and its worker processes, from the
   kernel's accounting) is printed too.
2. What teams do instead: `pg_dump -Fd -j 2` of that database (timed, for information), then
   `pg_restore -j 2` of the dump into another fresh, empty database, indexes and foreign keys included,
   timed. The target is a ratio restore/seed of at least 1.0: the seed at least as fast as restoring
   its own dump.
3. The generation alone, in this process on one core: its µs per row, and the time it needs on all the
   machine's cores at best, against the restore (the seed cannot be faster than its generation).
4. With `--raw-copy`, the old limit: the very same rows generated in advance, outside the clock, loaded
   with raw `copy_records_to_table` into a migrated database (every index and trigger firing per row).

With `--partitions`, instead: the seed's bulk path (`seed.bulk`: keys, indexes and foreign keys taken off,
COPY of every batch through the seed's loader connection, then the rebuild) into three fresh databases per
round, holding the same rows: the history tables plain (migration 11, before the partitioning), partitioned
with COPY into the parent (PostgreSQL routes each row to its month), and partitioned with COPY into each
month's partition (the rows split by month in Python first). Each batch is generated once, outside the clock,
then copied into the three in turn, the order rotating from batch to batch and round to round, so that the
noise of a shared machine falls on every shape alike. Then each round dumps the plain and the partitioned
database (`pg_dump -Fd -j 2`, untimed) and times `pg_restore -j 2` of each into an empty database, in turns.
The ratios are per round, against the plain tables of the same round; their median is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from langlearn import history, partitions
from langlearn.backups import client_program, libpq_target
from langlearn.databases import ScratchDatabases, with_database
from langlearn.seed import bulk
from langlearn.seed.content import load_content
from langlearn.seed.loader import open_loader
from langlearn.seed.passwords import Passwords
from langlearn.seed.simulation import BATCH_USERS, RunContext, generate_batch
from langlearn.seed.simulation.profiles import HISTORY_DAYS
from langlearn.seed.tables import CONTENT_TABLES, TABLES, USER_TABLES
from langlearn.settings import database_url, open_connection
from langlearn.urls import asyncpg_url

REPO_ROOT = Path(__file__).resolve().parent.parent

TARGET_RATIO = 1.0  # restore time / seed time
PLAIN_HISTORY = 11  # the last migration before the history tables' partitioning (12 widens their keys, 13 partitions them)
RSS_LIMIT_MB = 500
JOBS = "2"  # pg_dump and pg_restore -j: one per core of the machine measured


@dataclass(frozen=True)
class SeedRun:
    seconds: float
    peak_rss_mb: float
    summary: str  # the seed's own report


async def fresh_database(scratch: ScratchDatabases, name: str, *, migrated: bool = True, to: int | None = None) -> str:
    """A database named `name` (at head or at migration `to`, or empty for a restore), replacing one left by an
    interrupted run."""
    await scratch.drop(with_database(scratch.url, name))
    url = await scratch.create(name=name)
    if migrated:
        await history.upgrade(url, to=to)
    return url


def run_seed(url: str, users: int, seed: int, anchor: str) -> SeedRun:
    """Run the seed CLI; its wall time, the peak RSS of its largest process and its summary."""
    env = {**os.environ, "DATABASE_URL": url}
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "langlearn", "seed", "--users", str(users), "--seed", str(seed), "--anchor", anchor, "--no-progress"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # ru_maxrss: the largest of the process and the children it waited for
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the seed failed:\n{output}")
    return SeedRun(wall, usage.ru_maxrss / 1024, output)


def run_tool(name: str, url: str, *arguments: str) -> float:
    """Run pg_dump or pg_restore on the database of `url`; its wall time."""
    target = libpq_target(url)
    began = time.perf_counter()
    subprocess.run([str(client_program(name)), "--dbname", target.dsn, *arguments], env=target.environment, check=True)
    return time.perf_counter() - began


async def seeded_rows(url: str) -> int:
    connection = await asyncpg.connect(asyncpg_url(url))
    try:
        return sum([await connection.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES])
    finally:
        await connection.close()


def scale_context(seed: int, users: int, anchor: datetime) -> RunContext:
    """What `langlearn seed --users N` generates from (no demo accounts, the seed's own password hashes)."""
    passwords = Passwords(seed, demo_password=None, demo_accounts=0, unpredictable=False)
    return RunContext(seed, users, anchor, load_content(seed, anchor), passwords, 0, False)


async def raw_copy(url: str, users: int, seed: int, anchor: datetime) -> tuple[int, float]:
    """COPY the seed's rows, generated before each timed COPY; return rows and COPY seconds."""
    context = scale_context(seed, users, anchor)
    content = context.content
    connection = await asyncpg.connect(asyncpg_url(url))
    loader = await open_loader(url)  # the user rows' ids and times are ints: the seed's own loader connection takes them
    rows, seconds = 0, 0.0

    async def timed_copy(target: asyncpg.Connection, prepared: dict[str, list[tuple]]) -> None:
        nonlocal rows, seconds
        began = time.perf_counter()
        async with target.transaction():
            for table, records in prepared.items():
                await target.copy_records_to_table(table, records=records, columns=TABLES[table])
        seconds += time.perf_counter() - began
        rows += sum(len(records) for records in prepared.values())

    try:
        await timed_copy(connection, {table: content.rows[table] for table in CONTENT_TABLES})
        for batch in range(context.batches):
            await timed_copy(loader, generate_batch(context, batch).rows)  # generated before the clock starts
    finally:
        await connection.close()
        await loader.close()
    return rows, seconds


def generation_cost(seed: int, anchor: datetime, batches: int = 10) -> float:
    """Microseconds of Python per generated row, in this process (one core), over `batches` batches."""
    context = scale_context(seed, batches * BATCH_USERS, anchor)
    began, rows = time.perf_counter(), 0
    for batch in range(batches):
        rows += sum(generate_batch(context, batch).counts.values())
    return (time.perf_counter() - began) / rows * 1e6


# --- --partitions: the bulk path into partitioned history tables against plain ones ----------------------


@dataclass(frozen=True)
class Shape:
    name: str
    description: str
    migrated_to: int | None  # None: head
    into_partitions: bool  # COPY into each month's partition rather than the parent


Row = tuple[Any, ...]
HISTORY_TABLES = ("question_attempts", "activity_feeds")  # partitioned from migration 13 on
SHAPES = (
    Shape("plain", f"plain tables (migration {PLAIN_HISTORY})", PLAIN_HISTORY, False),
    Shape("parent", "partitioned, COPY into the parent", None, False),
    Shape("partition", "partitioned, COPY into each month's partition", None, True),
)


@dataclass(frozen=True)
class Months:
    """A partitioned table's month partitions by lower bound, in the loader's integer milliseconds."""

    starts: list[int]
    names: list[str]

    @classmethod
    def of(cls, table: partitions.PartitionedTable) -> Months:
        ranged = sorted((each for each in table.partitions if not each.is_default), key=lambda each: (each.lower is not None, each.lower))
        starts = [-(2**62) if each.lower is None else round(each.lower.timestamp() * 1000) for each in ranged]
        return cls(starts, [each.name for each in ranged])

    def split(self, rows: Sequence[Row], column: int) -> dict[str, list[Row]]:
        """`rows` by the partition their `column` (milliseconds) falls in (one past the last months fails in COPY)."""
        grouped: dict[str, list[Row]] = defaultdict(list)
        starts, names = self.starts, self.names
        for row in rows:
            grouped[names[bisect_right(starts, row[column]) - 1]].append(row)
        return grouped


@dataclass
class ShapeRun:
    """One shape's database during a round, and its timings."""

    shape: Shape
    url: str
    connection: asyncpg.Connection
    loader: asyncpg.Connection
    deferred: list[bulk.DeferredObject]
    months: dict[str, Months]  # only when copying into the partitions
    history_seconds: float = 0.0  # COPY into the history tables
    rest_seconds: float = 0.0  # COPY into the other user tables
    rebuild_seconds: float = 0.0

    async def copy(self, rows: dict[str, list[Row]]) -> None:
        """One batch in one transaction, as a seed worker copies it (seed.workers), each table's COPY timed."""
        async with self.loader.transaction():
            for table, records in rows.items():
                columns = USER_TABLES[table]
                began = time.perf_counter()
                if table in self.months:  # the split is part of the cost: a seed worker would do it
                    for partition, part in self.months[table].split(records, columns.index("created_at")).items():
                        await self.loader.copy_records_to_table(partition, records=part, columns=columns)
                else:
                    await self.loader.copy_records_to_table(table, records=records, columns=columns)
                if table in HISTORY_TABLES:
                    self.history_seconds += time.perf_counter() - began
                else:
                    self.rest_seconds += time.perf_counter() - began

    async def rebuild(self, run_id: UUID) -> None:
        began = time.perf_counter()
        await bulk.rebuild(lambda: open_connection(self.url), self.connection, run_id, self.deferred)
        self.rebuild_seconds = time.perf_counter() - began

    async def placement(self) -> list[tuple[str, str, int]]:
        """The history tables' rows per table and partition (or table, when plain)."""
        return [(table, row["part"], row["n"]) for table in HISTORY_TABLES for row in await self.connection.fetch(
            f"SELECT tableoid::regclass::text AS part, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 1")]

    async def close(self) -> None:
        await self.loader.close()
        await self.connection.close()


async def bare_database(scratch: ScratchDatabases, shape: Shape, context: RunContext, run_id: UUID) -> ShapeRun:
    """A fresh database of `shape` as the seed's bulk path leaves it before the batches: the history's months
    created, the catalogue copied, the user tables' keys, indexes and foreign keys taken off."""
    url = await fresh_database(scratch, f"bench_seed_{shape.name}_{os.getpid()}", to=shape.migrated_to)
    connection = await open_connection(url)
    # the seed's own call (seed.run); a database at migration 11 has no partitioned table: nothing to do
    await partitions.ensure(connection, now=max(context.anchor, datetime.now(timezone.utc)),
                            since=context.anchor - timedelta(days=HISTORY_DAYS + 1), drop_default=False)
    async with connection.transaction():
        for table in CONTENT_TABLES:
            await connection.copy_records_to_table(table, records=context.content.rows[table], columns=CONTENT_TABLES[table])
        deferred = await bulk.take_off(connection, run_id, list(USER_TABLES))
    months = {table.name: Months.of(table) for table in await partitions.read_tables(connection)} if shape.into_partitions else {}
    return ShapeRun(shape, url, connection, await open_loader(url), deferred, months)


@dataclass(frozen=True)
class RoundTimes:
    """One round's seconds per shape: the history tables' COPY, the other user tables' COPY, the rebuild, and (plain
    and parent: the partition shape's database is the parent's) the pg_restore of a dump of the result."""

    history: dict[str, float]
    rest: dict[str, float]
    rebuild: dict[str, float]
    restore: dict[str, float]

    def measures(self, shape: str) -> dict[str, float]:
        copy = self.history[shape] + self.rest[shape]
        measured = {"history tables' COPY": self.history[shape], "all COPY": copy, "COPY + rebuild": copy + self.rebuild[shape]}
        if shape in self.restore:
            measured[f"pg_restore -j {JOBS}"] = self.restore[shape]
        return measured

    def ratios(self, shape: str) -> dict[str, float]:
        """Each measure against the plain tables' in this round."""
        plain = self.measures("plain")
        return {what: seconds / plain[what] for what, seconds in self.measures(shape).items()}


async def restore_seconds(scratch: ScratchDatabases, runs: Sequence[ShapeRun]) -> dict[str, float]:
    """`pg_dump -Fd` of each run's database (untimed), then `pg_restore -j` of each into a fresh empty database, timed,
    in the order given."""
    folder = Path(tempfile.mkdtemp(prefix="bench-seed-shapes-"))
    try:
        for each in runs:
            run_tool("pg_dump", each.url, "--format=directory", "--jobs", JOBS, "--file", str(folder / each.shape.name))
        seconds = {}
        for each in runs:
            target = await fresh_database(scratch, f"bench_restore_{each.shape.name}_{os.getpid()}", migrated=False)
            try:
                seconds[each.shape.name] = run_tool("pg_restore", target, "--jobs", JOBS, "--no-owner", "--exit-on-error",
                                                    str(folder / each.shape.name))
            finally:
                await scratch.drop(target)
        return seconds
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def rotated(items: Sequence[ShapeRun], turn: int) -> list[ShapeRun]:
    """`items` starting at `turn` (modulo their number): who goes first changes from batch to batch and round to round."""
    turn %= len(items)
    return [*items[turn:], *items[:turn]]


async def partition_round(scratch: ScratchDatabases, context: RunContext, round_index: int) -> RoundTimes:
    """The same batches through the bulk path into every shape, interleaved; the rows checked to be the same; then the
    restore of a dump of the plain and the partitioned database."""
    run_id = uuid4()
    runs: list[ShapeRun] = []
    try:
        for shape in SHAPES:
            runs.append(await bare_database(scratch, shape, context, run_id))
        for batch in range(context.batches):
            rows = generate_batch(context, batch).rows  # outside the clock, once for all shapes
            for each in rotated(runs, batch + round_index):
                await each.copy(rows)
        for each in rotated(runs, round_index):
            await each.rebuild(run_id)
        plain, parent, partition = [await each.placement() for each in runs]
        if parent != partition or [n for *_, n in plain] != [sum(n for t, _, n in parent if t == table) for table, *_ in plain]:
            raise SystemExit(f"the shapes hold different rows: {plain} / {parent} / {partition}")
        restored = await restore_seconds(scratch, rotated(runs[:2], round_index))
        return RoundTimes({each.shape.name: each.history_seconds for each in runs}, {each.shape.name: each.rest_seconds for each in runs},
                          {each.shape.name: each.rebuild_seconds for each in runs}, restored)
    finally:
        for each in runs:
            await each.close()
            await scratch.drop(each.url)


async def compare_partitioned(server: str, users: int, seed: int, anchor: datetime, rounds: int) -> int:
    """`--partitions`: rounds of `partition_round`, then the per-round ratios' medians."""
    context = scale_context(seed, users, anchor)
    scratch = ScratchDatabases(server, "bench_seed_")
    results: list[RoundTimes] = []
    for round_index in range(rounds):
        print(f"round {round_index + 1} of {rounds}: {users} users through the bulk path into {len(SHAPES)} databases, interleaved ...", flush=True)
        times = await partition_round(scratch, context, round_index)
        results.append(times)
        for shape in SHAPES:
            print(f"  {shape.name:<9} " + ", ".join(f"{what} {seconds:.2f} s" for what, seconds in times.measures(shape.name).items()), flush=True)
    print(f"{users} users, {rounds} rounds; time against the plain tables of the same round: median (each round)")
    for shape in SHAPES[1:]:
        ratios = [each.ratios(shape.name) for each in results]
        print(f"  {shape.description}:")
        for what in ratios[0]:
            print(f"    {what:<22} {statistics.median(r[what] for r in ratios):.3f} ({' '.join(f'{r[what]:.3f}' for r in ratios)})")
    print("median seconds:")
    for shape in SHAPES:
        measured = [each.measures(shape.name) for each in results]
        print(f"  {shape.name:<9} " + ", ".join(f"{what} {statistics.median(m[what] for m in measured):.2f}" for what in measured[0]))
    return 0


async def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--users", type=int, default=20_000, help="learners to seed (default 20000)")
    cli.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    cli.add_argument("--raw-copy", action="store_true", help="also measure the old baseline, raw per-row COPY into the migrated schema")
    cli.add_argument("--partitions", action="store_true",
                     help="instead: the bulk path into partitioned history tables against plain ones (migration 11), interleaved")
    cli.add_argument("--rounds", type=int, default=4, help="--partitions: rounds, each with fresh databases (default 4)")
    args = cli.parse_args(argv)
    server = database_url()
    anchor_day = datetime.now(timezone.utc).date() - timedelta(days=1)
    anchor = datetime.combine(anchor_day, clock_time(), tzinfo=timezone.utc)
    if args.partitions:
        return await compare_partitioned(server, args.users, args.seed, anchor, args.rounds)
    scratch = ScratchDatabases(server, "bench_seed_")
    seed_url = await fresh_database(scratch, f"bench_seed_{os.getpid()}")
    restore_url = await fresh_database(scratch, f"bench_restore_{os.getpid()}", migrated=False)
    dump = Path(tempfile.mkdtemp(prefix="bench-seed-dump-")) / "dump"
    try:
        print(f"seeding {args.users} users end to end (langlearn seed) ...", flush=True)
        seeded = run_seed(seed_url, args.users, args.seed, anchor_day.isoformat())
        print(seeded.summary.strip().splitlines()[0], flush=True)
        total = await seeded_rows(seed_url)
        print(f"pg_dump -Fd -j {JOBS} ...", flush=True)
        dump_seconds = run_tool("pg_dump", seed_url, "--format=directory", "--jobs", JOBS, "--file", str(dump))
        print(f"pg_restore -j {JOBS} into an empty database ...", flush=True)
        restore_seconds = run_tool("pg_restore", restore_url, "--jobs", JOBS, "--no-owner", "--exit-on-error", str(dump))
        restored = await seeded_rows(restore_url)
        print("timing the generation alone, one core ...", flush=True)
        per_row = generation_cost(args.seed, anchor)
        raw = None
        if args.raw_copy:
            raw_url = await fresh_database(scratch, f"bench_rawcopy_{os.getpid()}")
            try:
                print("loading the same rows with raw copy_records_to_table into the migrated schema ...", flush=True)
                raw = await raw_copy(raw_url, args.users, args.seed, anchor)
            finally:
                await scratch.drop(raw_url)
    finally:
        shutil.rmtree(dump.parent, ignore_errors=True)
        await scratch.drop(seed_url)
        await scratch.drop(restore_url)
    ratio = restore_seconds / seeded.seconds
    print(f"seed, end to end   : {total:>11,} rows in {seeded.seconds:8.1f} s = {total / seeded.seconds:>9,.0f} rows/s")
    print(f"pg_dump -Fd -j {JOBS}  : {dump_seconds:8.1f} s (not compared)")
    print(f"pg_restore -j {JOBS}   : {restored:>11,} rows in {restore_seconds:8.1f} s = {restored / restore_seconds:>9,.0f} rows/s")
    if raw is not None:
        print(f"raw per-row COPY   : {raw[0]:>11,} rows in {raw[1]:8.1f} s = {raw[0] / raw[1]:>9,.0f} rows/s (COPY time only)")
    cores = os.cpu_count() or 1
    floor = total * per_row / 1e6 / cores
    print(f"generation alone   : {per_row:.1f} µs of Python per row on one core; {total:,} rows on {cores} cores "
          f"need >= {floor:.1f} s, {floor / restore_seconds:.2f}x the restore")
    print(f"ratio restore/seed : {ratio:.2f} (target >= {TARGET_RATIO})")
    print(f"seed peak RSS      : {seeded.peak_rss_mb:.0f} MB, its largest process (target < {RSS_LIMIT_MB} MB)")
    if total != restored:
        print(f"warning: the restore holds another number of rows ({restored} vs {total})")
    return 0 if ratio >= TARGET_RATIO and seeded.peak_rss_mb < RSS_LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
