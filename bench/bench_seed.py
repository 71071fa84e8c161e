"""Benchmark the seed against restoring a dump of what it wrote, on the same server, in the same run.

    python bench/bench_seed.py                       # --users 20000
    python bench/bench_seed.py --users 2000          # a quicker look
    python bench/bench_seed.py --raw-copy            # also the old baseline: per-row COPY into the migrated schema

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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from datetime import time as clock_time
from pathlib import Path

import asyncpg

from langlearn import history
from langlearn.backups import client_program, libpq_target
from langlearn.databases import ScratchDatabases, with_database
from langlearn.seed.content import load_content
from langlearn.seed.loader import open_loader
from langlearn.seed.passwords import Passwords
from langlearn.seed.simulation import BATCH_USERS, RunContext, generate_batch
from langlearn.seed.tables import CONTENT_TABLES, TABLES
from langlearn.settings import database_url
from langlearn.urls import asyncpg_url

REPO_ROOT = Path(__file__).resolve().parent.parent

TARGET_RATIO = 1.0  # restore time / seed time
RSS_LIMIT_MB = 500
JOBS = "2"  # pg_dump and pg_restore -j: one per core of the machine measured


@dataclass(frozen=True)
class SeedRun:
    seconds: float
    peak_rss_mb: float
    summary: str  # the seed's own report


async def fresh_database(scratch: ScratchDatabases, name: str, *, migrated: bool = True) -> str:
    """A database named `name` (at head, or empty for a restore), replacing one left by an interrupted run."""
    await scratch.drop(with_database(scratch.url, name))
    url = await scratch.create(name=name)
    if migrated:
        await history.upgrade(url)
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


async def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--users", type=int, default=20_000, help="learners to seed (default 20000)")
    cli.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    cli.add_argument("--raw-copy", action="store_true", help="also measure the old baseline, raw per-row COPY into the migrated schema")
    args = cli.parse_args(argv)
    server = database_url()
    anchor_day = datetime.now(timezone.utc).date() - timedelta(days=1)
    anchor = datetime.combine(anchor_day, clock_time(), tzinfo=timezone.utc)
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
