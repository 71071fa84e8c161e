"""Speed of `langlearn.verify`: the schema check's statement count and time, and how the invariants scale.

Schema: the statements `check_schema` sends (counted with asyncpg's query logger) on an empty
database and on one at head must be the same handful, whatever the number of tables; its median
time at head, with the models' spelling cached and uncached, is compared with the empty database's
(the baseline: the same work minus reading the live tables) and with the 300 ms target. Sides are measured in turn, so noise hits them alike.

Invariants: two fresh databases seeded by `langlearn seed --users N` and `--users 2N`; each
invariant's median time on both. The ratio of total times is set against the ratio of rows and
against a baseline measured in the same run: one plain scan of every table the invariants read
(on this server, reading twice the data already costs a little more than twice the time once it
outgrows the buffer cache). Set-based queries must grow no faster than the data (10% noise allowed).
Databases are created and dropped here unless `--keep`.

    python bench/bench_verify.py [--repeat 20] [--users 20000] [--skip-invariants] [--keep]
    python bench/bench_verify.py --seeded SMALL_URL LARGE_URL   # re-measure kept databases
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from langlearn import history
from langlearn.databases import ScratchDatabases
from langlearn.settings import database_url
from langlearn.urls import asyncpg_url, redact
from langlearn.verify import check_schema
from langlearn.verify.invariants import INVARIANTS, WORK_MEM

REPO_ROOT = Path(__file__).resolve().parent.parent

TARGET_MS = 300
# the tables the invariants read, whose rows are "the data"
INVARIANT_TABLES = (
    "users", "courses", "units", "lessons", "lesson_attempts", "achievements", "user_achievements", "user_wallets",
    "wallet_transactions", "leaderboard_entries", "streaks", "daily_review_sessions", "user_vocab_knowledge",
)


async def alternating_medians_ms(runs: list, repeat: int) -> list[float]:
    """Median times of several runs measured in turn, so noise on a shared machine hits them alike."""
    for run in runs:
        await run()  # warm-up
    timings: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for run, times in zip(runs, timings):
            started = time.perf_counter()
            await run()
            times.append(time.perf_counter() - started)
    return [statistics.median(times) * 1000 for times in timings]


async def schema_statements(connection) -> list[str]:
    """The statements one schema check sends, as asyncpg's query logger sees them."""
    statements: list[str] = []

    def log(record) -> None:
        statements.append(" ".join(record.query.split())[:70])

    connection.add_query_logger(log)
    try:
        await check_schema(connection)
    finally:
        connection.remove_query_logger(log)
    return statements


@contextmanager
def cold_cache():
    """An empty spelling cache (seed/verify/spelling.py) for the duration."""
    previous = os.environ.get("LANGLEARN_CACHE_DIR")
    with tempfile.TemporaryDirectory() as empty:
        os.environ["LANGLEARN_CACHE_DIR"] = empty
        try:
            yield
        finally:
            os.environ.pop("LANGLEARN_CACHE_DIR")
            if previous is not None:
                os.environ["LANGLEARN_CACHE_DIR"] = previous


async def cold_check(connection) -> None:
    with cold_cache():
        await check_schema(connection)


def seed(url: str, users: int) -> float:
    started = time.perf_counter()
    environment = {**os.environ, "DATABASE_URL": url}
    result = subprocess.run([sys.executable, "-m", "langlearn", "seed", "--users", str(users)], cwd=REPO_ROOT, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"langlearn seed --users {users} failed: {result.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - started


async def invariant_times(urls: list[str], repeat: int) -> list[tuple[int, float, dict[str, float]]]:
    """For each database: rows in the tables the invariants read, the baseline (one plain scan of
    each) and each invariant's median time, in milliseconds, the databases measured in turn."""
    connections = [await asyncpg.connect(asyncpg_url(url)) for url in urls]
    try:
        rows = []
        for connection in connections:
            await connection.execute("VACUUM ANALYZE")
            rows.append(sum([await connection.fetchval(f'SELECT count(*) FROM "{table}"') for table in INVARIANT_TABLES]))
            await connection.execute(f"SET work_mem = '{WORK_MEM}'")  # as check_invariants sets it
        # `ctid IS NOT NULL` makes each count read the heap, as the invariants do
        scan = "; ".join(f'SELECT count(*) FROM "{table}" WHERE ctid IS NOT NULL' for table in INVARIANT_TABLES)
        baselines = await alternating_medians_ms([lambda c=c: c.execute(scan) for c in connections], repeat)
        times: list[dict[str, float]] = [{} for _ in connections]
        for invariant in INVARIANTS:
            medians = await alternating_medians_ms([lambda c=c, q=invariant.query: c.fetchrow(q) for c in connections], repeat)
            for per_database, median in zip(times, medians):
                per_database[invariant.kind] = median
    finally:
        for connection in connections:
            await connection.close()
    return list(zip(rows, baselines, times))


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="measured runs of the schema check (default 20); the invariants run a quarter as many")
    parser.add_argument("--users", type=int, default=20000, help="users in the smaller seeded database (default 20000); the larger has twice as many")
    parser.add_argument("--skip-invariants", action="store_true", help="measure only the schema check (needs no seed)")
    parser.add_argument("--keep", action="store_true", help="keep the seeded databases (their URLs are printed), to re-measure them with --seeded")
    parser.add_argument("--seeded", nargs=2, metavar=("SMALL_URL", "LARGE_URL"), help="measure the invariants on these seeded databases instead of seeding two")
    args = parser.parse_args(argv)
    server = ScratchDatabases(database_url(), "bench_verify_")
    created: list[str] = []
    try:
        empty, head = await server.create(), await server.create()
        created += [empty, head]
        await history.upgrade(head)

        print("schema check")
        connections = [await asyncpg.connect(asyncpg_url(url)) for url in (empty, head)]
        try:
            with cold_cache():
                cold_statements = await schema_statements(connections[1])
            await check_schema(connections[1])  # fills the spelling cache
            statements, empty_statements = [await schema_statements(connection) for connection in reversed(connections)]
            empty_ms, head_ms, cold_ms = await alternating_medians_ms(
                [lambda c=c: check_schema(c) for c in connections] + [lambda: cold_check(connections[1])], args.repeat
            )
            tables = await connections[1].fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
        finally:
            for connection in connections:
                await connection.close()
        print(f"  statements: {len(cold_statements)} at head ({tables} tables) with the spelling uncached, "
              f"{len(statements)} cached, {len(empty_statements)} on an empty database")
        for statement in cold_statements:
            print(f"    {statement}")
        print(f"  median: {head_ms:.1f} ms at head ({cold_ms:.1f} ms uncached), {empty_ms:.1f} ms on the empty database "
              f"(ratio {head_ms / empty_ms:.2f}); target < {TARGET_MS} ms: {'met' if max(head_ms, cold_ms) < TARGET_MS else 'MISSED'}")

        if args.skip_invariants:
            return 0
        print("invariants")
        if args.seeded:
            urls = list(args.seeded)
        else:
            urls = []
            for users in (args.users, 2 * args.users):
                url = await server.create(name=f"bench_verify_{users}_{uuid.uuid4().hex[:6]}" if args.keep else None)
                if not args.keep:
                    created.append(url)
                await history.upgrade(url)
                seconds = seed(url, users)
                print(f"  langlearn seed --users {users}: {seconds:.0f} s" + (f" (kept: {redact(url)})" if args.keep else ""))
                urls.append(url)
        sizes = [await _count_users(url) for url in urls]
        measured = dict(zip(sizes, await invariant_times(urls, max(5, args.repeat // 2))))
        for users in sizes:
            print(f"  {users} users: {measured[users][0]} rows in the tables the invariants read")
        (small_rows, small_scan, small), (large_rows, large_scan, large) = measured[sizes[0]], measured[sizes[1]]
        print(f"  {'invariant':34} {sizes[0]:>9} {sizes[1]:>9}  ratio")
        for kind in small:
            print(f"  {kind:34} {small[kind]:7.1f}ms {large[kind]:7.1f}ms  {large[kind] / small[kind]:.2f}")
        print(f"  {'baseline: one scan of each table':34} {small_scan:7.1f}ms {large_scan:7.1f}ms  {large_scan / small_scan:.2f}")
        time_ratio = sum(large.values()) / sum(small.values())
        row_ratio, scan_ratio = large_rows / small_rows, large_scan / small_scan
        verdict = "grows no faster than the data" if time_ratio <= max(row_ratio, scan_ratio) * 1.1 else "GROWS FASTER THAN THE DATA"
        print(f"  total: {sum(small.values()):.0f} ms -> {sum(large.values()):.0f} ms: time ratio {time_ratio:.2f}, "
              f"row ratio {row_ratio:.2f}, baseline scan ratio {scan_ratio:.2f}: {verdict}")
    finally:
        for url in created:
            await server.drop(url)
    return 0


async def _count_users(url: str) -> int:
    connection = await asyncpg.connect(asyncpg_url(url))
    try:
        return await connection.fetchval("SELECT count(*) FROM users")
    finally:
        await connection.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
