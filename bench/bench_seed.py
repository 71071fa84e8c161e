"""Benchmark the seed against the limit: raw COPY of the same rows on the same server, in the same run.

    python bench/bench_seed.py                # --users 20000
    python bench/bench_seed.py --users 2000   # a quicker look

1. The seed end to end, as a user runs it: `langlearn seed --users N` in a subprocess, into a fresh
   database at head. Timed from process start to exit (catalogue, password hashes, generation,
   COPY, ranks); its peak RSS is read from the kernel's accounting of that process.
2. The limit, into another fresh database at head: the very same rows (same seed, same anchor,
   same batches) generated in advance, batch by batch outside the clock, then loaded with raw
   asyncpg `copy_records_to_table`, one transaction per batch as the seed does. Only COPY is timed.

Prints both rates in rows/s, their ratio (target: at least 0.5) and the seed's peak RSS (target:
under 500 MB whatever --users is).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from datetime import time as clock_time
from pathlib import Path

import asyncpg

from langlearn import history
from langlearn.databases import ScratchDatabases, with_database
from langlearn.seed.content import load_content
from langlearn.seed.passwords import Passwords
from langlearn.seed.simulate import RunContext, generate_batch
from langlearn.seed.tables import CONTENT_TABLES, TABLES
from langlearn.settings import database_url
from langlearn.urls import asyncpg_url

REPO_ROOT = Path(__file__).resolve().parent.parent

TARGET_RATIO = 0.5
RSS_LIMIT_MB = 500


async def fresh_database(scratch: ScratchDatabases, name: str) -> str:
    """A database at head named `name`, replacing one left by an interrupted run."""
    await scratch.drop(with_database(scratch.url, name))
    url = await scratch.create(name=name)
    await history.upgrade(url)
    return url


def run_seed(url: str, users: int, seed: int, anchor: str) -> tuple[float, float]:
    """Run the seed CLI; return its wall time and peak RSS in MB."""
    env = {**os.environ, "DATABASE_URL": url}
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "langlearn", "seed", "--users", str(users), "--seed", str(seed), "--anchor", anchor, "--no-progress"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the seed failed:\n{output}")
    return wall, usage.ru_maxrss / 1024


async def seeded_rows(url: str) -> int:
    connection = await asyncpg.connect(asyncpg_url(url))
    try:
        return sum([await connection.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES])
    finally:
        await connection.close()


async def raw_copy(url: str, users: int, seed: int, anchor: datetime) -> tuple[int, float]:
    """COPY the seed's rows, generated before each timed COPY; return rows and COPY seconds."""
    content = load_content(seed, anchor)
    passwords = Passwords(seed, demo_password=None, demo_accounts=0, unpredictable=False)
    context = RunContext(seed, users, anchor, content, passwords, 0, False)
    connection = await asyncpg.connect(asyncpg_url(url))
    rows, seconds = 0, 0.0

    async def timed_copy(prepared: dict[str, list[tuple]]) -> None:
        nonlocal rows, seconds
        began = time.perf_counter()
        async with connection.transaction():
            for table, records in prepared.items():
                await connection.copy_records_to_table(table, records=records, columns=TABLES[table])
        seconds += time.perf_counter() - began
        rows += sum(len(records) for records in prepared.values())

    try:
        await timed_copy({table: content.rows[table] for table in CONTENT_TABLES})
        for batch in range(context.batches):
            await timed_copy(generate_batch(context, batch).rows)  # generated before the clock starts
    finally:
        await connection.close()
    return rows, seconds


async def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--users", type=int, default=20_000, help="learners to seed (default 20000)")
    cli.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = cli.parse_args(argv)
    server = database_url()
    anchor_day = datetime.now(timezone.utc).date() - timedelta(days=1)
    anchor = datetime.combine(anchor_day, clock_time(), tzinfo=timezone.utc)
    scratch = ScratchDatabases(server, "bench_seed_")
    seed_url = await fresh_database(scratch, f"bench_seed_{os.getpid()}")
    raw_url = await fresh_database(scratch, f"bench_rawcopy_{os.getpid()}")
    try:
        print(f"seeding {args.users} users end to end (langlearn seed) ...", flush=True)
        seed_wall, peak_mb = run_seed(seed_url, args.users, args.seed, anchor_day.isoformat())
        seed_total = await seeded_rows(seed_url)
        print("loading the same rows with raw copy_records_to_table ...", flush=True)
        raw_total, raw_seconds = await raw_copy(raw_url, args.users, args.seed, anchor)
    finally:
        await scratch.drop(seed_url)
        await scratch.drop(raw_url)
    seed_rate, raw_rate = seed_total / seed_wall, raw_total / raw_seconds
    ratio = seed_rate / raw_rate
    print(f"seed, end to end : {seed_total:>11,} rows in {seed_wall:8.1f} s = {seed_rate:>9,.0f} rows/s")
    print(f"raw COPY (limit) : {raw_total:>11,} rows in {raw_seconds:8.1f} s = {raw_rate:>9,.0f} rows/s")
    print(f"ratio seed/raw   : {ratio:.2f} (target >= {TARGET_RATIO})")
    print(f"seed peak RSS    : {peak_mb:.0f} MB (target < {RSS_LIMIT_MB} MB)")
    if seed_total != raw_total:
        print(f"warning: the two loads differ in rows ({seed_total} vs {raw_total})")
    return 0 if ratio >= TARGET_RATIO and peak_mb < RSS_LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
