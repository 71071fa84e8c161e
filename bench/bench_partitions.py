"""The time-partitioned history (migrations 12 and 13), before and after, and retiring a month, in one run.

    python bench/bench_partitions.py                                   # bench_queries_20000 and bench_retire_20000, each created once
    python bench/bench_partitions.py --users 5000                      # a quicker look: bench_queries_5000 and bench_retire_5000
    python bench/bench_partitions.py --database-name NAME [--retire-database-name NAME] [--users N] [--seed-method per-row]

Two databases on the same server, each created, brought to head and seeded the first time, then reused
(seeding 20,000 learners takes minutes each): bench_queries' (`prepare_database`, `--database-name`,
default bench_queries_<users>; `--seed-method` is passed to `langlearn seed --method`) for step 1, and
bench_partition_retire's (`--retire-database-name`, default bench_retire_<users>: seeded with an anchor
at the first of this month, so that the last month is a partition of its own) for step 2. Each run:

1. `measure_conversion_under_load`: takes the database back to migration 11 (`langlearn downgrade`: the
   history tables plain again, every row kept), VACUUM ANALYZE, measures "before" (`measure_side`), then
   converts it to head while CLIENTS clients read and write both history tables, and reports the swap
   window of each table (the NOTICE the swap raises: from its last lock granted to its end, the commit
   follows), every statement's time (lock waits included), and the workload's slowest statement and
   p99 during the conversion; VACUUM ANALYZE, then measures "after"; then partitioning's own cost
   (`measure_partition_cost`): each per-user read through the parent against the same read of its first
   partition (the table of "before", attached as it was), alternated ROUNDS times at the same moment, so
   that the machine's drift between the two sides (minutes apart) does not pass for a cost; the
   database is left at head;
2. `bench_partition_retire.measure_retirement`: retires one month of three copies of its template, by
   DELETE (then VACUUM), by DETACH ... CONCURRENTLY + DROP (each statement timed) and by the whole
   `partitions retire --drop`: time, WAL written, both tables' size after (see that module's docstring).
   The copies are dropped.

Reads (bench_queries' machinery: prepared statements, warm cache, p50/p95 by the client, plan shape from
EXPLAIN, generic plan where the server switched to it): the own feed, the feed of the people followed,
a lesson attempt's answers, and the weekly XP rebuild; the deletion of a lesson attempt (its cascade to
the answers, rolled back). One report at the end lists every target as met or missed: every per-user
read's p50 within 10 % of before and index-backed (the rebuild, batch work, reported without a target),
the cascade index-backed, each swap window under 100 ms, no workload error during the conversion, and
retiring a month at least 100x faster than DELETE (for the DETACH, and for DETACH + DROP). The ratios are
taken within the run, on the same machine at the same time: what this noisy machine can compare; the
alternated partition cost is printed beside the reads' target, not in its place. The
exit status is 0 whether or not the targets are met (a benchmark reports).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field, replace

import asyncpg
from bench_partition_retire import Check, measure_retirement, print_checks, print_retirement, retirement_checks
from bench_queries import (
    PER_USER_READ,
    READS,
    Deletion,
    Read,
    Row,
    Samples,
    Target,
    draw_samples,
    measure_deletion,
    measure_read,
    prepare_database,
    read_catalog,
    vacuum_analyze,
)

from langlearn import history
from langlearn.databases import database_name
from langlearn.history.runner import Target as MigrationTarget
from langlearn.history.runner import migrate
from langlearn.settings import database_url, open_connection
from langlearn.urls import redact

BEFORE = 11  # the migration before the history keys (12) and the partitions (13)
CLIENTS = 4
LOCK_TIMEOUT = 2.0  # the conversion's lock_timeout, seconds
READ_MAX_SLOWDOWN = 1.10  # after / before, p50
SWAP_WINDOW_TARGET_MS = 100.0
ANSWERS = "SELECT question_id, is_correct, time_spent_ms FROM question_attempts WHERE lesson_attempt_id = $1"


def history_reads(attempts: list[tuple[uuid.UUID]]) -> tuple[Read, ...]:
    by_name = {read.name: read for read in READS}
    return (
        by_name["own feed"],
        by_name["feed of people followed"],
        Read("a lesson attempt's answers", ANSWERS, lambda _: attempts, PER_USER_READ),
        by_name["weekly XP rebuild"],
    )


def history_deletions(attempts: list[tuple[uuid.UUID]]) -> tuple[Deletion, ...]:
    return (Deletion("delete a lesson attempt", "lesson_attempts", lambda _: attempts, Target(index_backed=True),
                     note="the cascade to its answers in every partition"),)


async def measure_side(url: str, samples: Samples, reads: tuple[Read, ...], deletions: tuple[Deletion, ...], budget: float,
                       rows: dict[str, Row], before: bool) -> None:
    label = "before" if before else "after"
    connection = await open_connection(url)
    try:
        catalog = await read_catalog(connection)
        for read in reads:
            measured = await measure_read(connection, catalog, read, samples, budget, before)
            setattr(rows[read.name], label, measured)
            print(f"  {label:6} {read.name:30} p50 {measured.timing.p50_ms:9.2f} ms  {measured.shape.text}", flush=True)
        for deletion in deletions:
            measured = await measure_deletion(connection, catalog, deletion, samples, budget)
            setattr(rows[deletion.name], label, measured)
            print(f"  {label:6} {deletion.name:30} p50 {measured.timing.p50_ms:9.2f} ms  {measured.shape.text}", flush=True)
    finally:
        await connection.close()


# --- the workload during the conversion ----------------------------------------------------------

OWN_FEED = "SELECT id, activity_type, message, created_at FROM activity_feeds WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20"
ATTEMPT = (
    "INSERT INTO lesson_attempts (user_id, lesson_id, started_at, finished_at, score, total_questions, correct_answers, time_spent_ms) "
    "VALUES ($1, $2, now() - interval '2 minutes', now(), 80, 3, 2, 120000) RETURNING id"
)
QUESTIONS = (
    "INSERT INTO question_attempts (lesson_attempt_id, question_id, question_type, user_answer, correct_answer, is_correct, time_spent_ms) "
    "SELECT $1, 'q' || n, 'translate', 'a', 'a', n <> 2, 1000 FROM generate_series(1, 3) n"
)
EVENT = "INSERT INTO activity_feeds (user_id, activity_type, message) VALUES ($1, 'bench_partitions', 'practised')"


@dataclass
class Client:
    """Reads a user's feed and a lesson attempt's answers, writes a lesson attempt with its answers and an event (no XP:
    the invariants stay true), deletes the attempts it wrote; every statement timed, every error kept."""

    connection: asyncpg.Connection
    users: list[uuid.UUID]
    attempts: list[uuid.UUID]
    lessons: list[uuid.UUID]
    rng: random.Random
    times: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    errors: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        await self.connection.execute("SET lock_timeout = '30s'")
        written: list[uuid.UUID] = []
        while not stop.is_set():
            user = self.rng.choice(self.users)
            try:
                await self.timed(self.connection.fetch(OWN_FEED, user))
                await self.timed(self.connection.fetch(ANSWERS, self.rng.choice(self.attempts)))
                async with self.connection.transaction():
                    attempt = await self.timed(self.connection.fetchval(ATTEMPT, user, self.rng.choice(self.lessons)))
                    await self.timed(self.connection.execute(QUESTIONS, attempt))
                written.append(attempt)
                await self.timed(self.connection.execute(EVENT, user))
                if len(written) > 3:
                    await self.timed(self.connection.execute("DELETE FROM lesson_attempts WHERE id = $1", written.pop(0)))
            except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                self.errors.append(f"{type(error).__name__}: {error}")

    async def timed(self, statement):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        try:
            return await statement
        finally:
            self.times.append((started, time.monotonic() - started))


EMPTY_PARTITIONS = "SELECT relname FROM pg_class WHERE relispartition AND relkind = 'r' AND relpages = 0"


@dataclass(frozen=True)
class Conversion:
    seconds: float
    swap_windows_ms: dict[str, float]
    workload_statements: int
    workload_errors: list[str]
    workload_max_ms: float
    workload_p99_ms: float
    empty_partitions: frozenset[str] = frozenset()  # after the conversion: a Seq Scan of one reads nothing


async def convert_under_load(url: str, users: list[uuid.UUID], attempts: list[uuid.UUID], lessons: list[uuid.UUID]) -> Conversion:
    """`langlearn upgrade`'s own runner (`migrate`) on one connection, whose notices carry the swap windows."""
    connections = [await open_connection(url) for _ in range(CLIENTS)]
    clients = [Client(connection, users[n::CLIENTS], attempts, lessons, random.Random(n)) for n, connection in enumerate(connections)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client.run(stop)) for client in clients]
    notices: list[str] = []
    migrator = await open_connection(url)
    migrator.add_log_listener(lambda _, message: notices.append(message.message))
    try:
        await asyncio.sleep(1.0)  # the workload in its stride
        started = time.monotonic()
        await migrate(migrator, MigrationTarget(), lock_timeout=LOCK_TIMEOUT)
        ended = time.monotonic()
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for connection in (*connections, migrator):
            await connection.close()
    during = sorted(seconds for client in clients for start, seconds in client.times if start < ended and start + seconds > started)
    windows = {match[1]: float(match[2]) for notice in notices if (match := re.match(r"swap window of (\w+): ([\d.]+) ms", notice))}
    return Conversion(
        seconds=ended - started,
        swap_windows_ms=windows,
        workload_statements=len(during),
        workload_errors=[error for client in clients for error in client.errors],
        workload_max_ms=during[-1] * 1000 if during else 0.0,
        workload_p99_ms=statistics.quantiles(during, n=100)[98] * 1000 if len(during) > 1 else 0.0,
    )


ROUNDS = 5  # the parent and its first partition, alternated
FIRST_PARTITIONS = """
    SELECT p.relname AS parent, c.relname AS partition FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
    WHERE p.relname = ANY($1::text[]) AND pg_get_expr(c.relpartbound, c.oid) LIKE 'FOR VALUES FROM (MINVALUE)%'"""


@dataclass(frozen=True)
class PartitionCost:
    """A read through the partitioned parent against the same read of its first partition (the table of "before",
    attached as it was: same rows, indexes and statistics), alternated on one connection at one time: what
    partitioning itself adds, without the machine's drift between the "before" and "after" sides."""

    name: str
    parent_p50_ms: float
    direct_p50_ms: float

    @property
    def ratio(self) -> float:
        return self.parent_p50_ms / self.direct_p50_ms


async def measure_partition_cost(url: str, samples: Samples, reads: tuple[Read, ...], budget: float) -> list[PartitionCost]:
    """Each per-user read, ROUNDS times through the parent then its first partition; the median of each side's p50s."""
    connection = await open_connection(url)
    try:
        catalog = await read_catalog(connection)
        first = {row["parent"]: row["partition"] for row in await connection.fetch(FIRST_PARTITIONS, ["question_attempts", "activity_feeds"])}
        costs = []
        for read in (read for read in reads if read.target.max_p50_ms):
            direct = replace(read, sql=re.sub(r"\b(question_attempts|activity_feeds)\b", lambda match: first[match[1]], read.sql))
            parent_p50s, direct_p50s = [], []
            for _ in range(ROUNDS):
                parent_p50s.append((await measure_read(connection, catalog, read, samples, budget / ROUNDS, False)).timing.p50_ms)
                direct_p50s.append((await measure_read(connection, catalog, direct, samples, budget / ROUNDS, False)).timing.p50_ms)
            costs.append(PartitionCost(read.name, statistics.median(parent_p50s), statistics.median(direct_p50s)))
        return costs
    finally:
        await connection.close()


@dataclass(frozen=True)
class ConversionMeasured:
    rows: list[Row]
    conversion: Conversion
    partition_costs: list[PartitionCost]


async def measure_conversion_under_load(url: str, samples: Samples, budget: float, seed: int) -> ConversionMeasured:
    """Step 1 of the module docstring: reads before (at 11) and after (at head), the conversion under load between,
    then partitioning's own cost per read (`measure_partition_cost`)."""
    connection = await open_connection(url)
    try:
        rng = random.Random(seed)
        attempt_rows = [tuple(row) for row in await connection.fetch("SELECT DISTINCT lesson_attempt_id FROM question_attempts LIMIT 20000")]
        attempts = rng.sample(attempt_rows, min(len(samples.users), len(attempt_rows)))
        workload_users = [row["user_id"] for row in await connection.fetch("SELECT DISTINCT user_id FROM activity_feeds LIMIT 400")]
        lessons = [row["id"] for row in await connection.fetch("SELECT id FROM lessons")]
    finally:
        await connection.close()
    reads, deletions = history_reads(attempts), history_deletions(attempts[:20])
    rows = {item.name: Row(item.name, item.target, item.note) for item in (*reads, *deletions)}
    at_head = False
    try:
        downgrade = time.perf_counter()
        await history.downgrade(url, to=BEFORE)
        print(f"downgrade head -> {BEFORE}: {time.perf_counter() - downgrade:.1f} s; VACUUM ANALYZE: {await vacuum_analyze(url):.1f} s", flush=True)
        await measure_side(url, samples, reads, deletions, budget, rows, before=True)
        conversion = await convert_under_load(url, workload_users, [attempt for (attempt,) in attempts], lessons)
        at_head = True
        print(f"conversion {BEFORE} -> head under load: {conversion.seconds:.1f} s; VACUUM ANALYZE: {await vacuum_analyze(url):.1f} s", flush=True)
        connection = await open_connection(url)
        try:
            conversion = replace(conversion, empty_partitions=frozenset(row["relname"] for row in await connection.fetch(EMPTY_PARTITIONS)))
        finally:
            await connection.close()
        await measure_side(url, samples, reads, deletions, budget, rows, before=False)
        partition_costs = await measure_partition_cost(url, samples, reads, budget)
    finally:
        if not at_head:
            print("taking the database back to head ...", flush=True)
            await history.upgrade(url)
    return ConversionMeasured(list(rows.values()), conversion, partition_costs)


def report_conversion(measured: ConversionMeasured) -> list[Check]:
    """Step 1's table and lines; its targets, checked."""
    rows, conversion = measured.rows, measured.conversion
    print()
    print("| statement | before p50 / p95 ms | after p50 / p95 ms | after/before | after-before p50 ms | plan after | target |")
    print("|---|---:|---:|---:|---:|---|---|")
    checks = []
    for row in rows:
        assert row.before and row.after
        slowdown = row.after.timing.p50_ms / row.before.timing.p50_ms
        added_ms = row.after.timing.p50_ms - row.before.timing.p50_ms
        # the planner reads an empty partition (the months ahead, the DEFAULT one) by a Seq Scan of no page: not a miss
        full_scans = [scan for scan in row.after.shape.full_scans if not any(f" {empty} " in f"{scan} " for empty in conversion.empty_partitions)]
        target = f"p50 <= {READ_MAX_SLOWDOWN:.2f}x before, index-backed" if row.target.max_p50_ms else row.target.describe()
        if row.target.max_p50_ms:
            checks.append(Check(f"{row.name}: p50 within {READ_MAX_SLOWDOWN - 1:.0%} of before",
                                f"{slowdown:.2f}x ({row.before.timing.p50_ms:.3f} -> {row.after.timing.p50_ms:.3f} ms, {added_ms:+.3f} ms)",
                                slowdown <= READ_MAX_SLOWDOWN))
        if row.target.index_backed:
            checks.append(Check(f"{row.name}: index-backed", "; ".join(full_scans) or "yes", not full_scans))
        print(f"| {row.name} | {row.before.timing.p50_ms:.2f} / {row.before.timing.p95_ms:.2f} | {row.after.timing.p50_ms:.2f} / "
              f"{row.after.timing.p95_ms:.2f} | {slowdown:.2f} | {added_ms:+.3f} | {row.after.shape.text} | {target} |")
    print()
    windows = ", ".join(f"{table} {window:.1f} ms" for table, window in conversion.swap_windows_ms.items())
    print(f"swap windows (locks held, commit excluded): {windows}")
    print(f"workload during the conversion ({conversion.seconds:.1f} s): {conversion.workload_statements} statements by {CLIENTS} clients, "
          f"max {conversion.workload_max_ms:.1f} ms, p99 {conversion.workload_p99_ms:.1f} ms, {len(conversion.workload_errors)} error(s) "
          f"(lock_timeout {LOCK_TIMEOUT:g} s)")
    print(f"partitioning's own cost, each read through the parent against its first partition read directly, alternated {ROUNDS} times "
          "(the same moment: no drift between sides): " + "; ".join(f"{cost.name} {cost.direct_p50_ms:.3f} -> {cost.parent_p50_ms:.3f} ms p50, "
                                                                   f"{cost.ratio:.2f}x" for cost in measured.partition_costs))
    checks += [Check(f"swap window of {table} < {SWAP_WINDOW_TARGET_MS:g} ms", f"{window:.1f} ms", window < SWAP_WINDOW_TARGET_MS)
               for table, window in conversion.swap_windows_ms.items()]
    checks.append(Check("no workload error during the conversion", "; ".join(conversion.workload_errors[:3]) or "none",
                        not conversion.workload_errors))
    return checks


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000, help="users to seed when the database is created (default 20000)")
    parser.add_argument("--database-name", help="step 1's seeded database, created and seeded if missing, else reused (default bench_queries_<users>)")
    parser.add_argument("--retire-database-name", help="step 2's seeded template, created and seeded if missing, else reused (default bench_retire_<users>)")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the data and of the samples (default 42)")
    parser.add_argument("--seed-method", choices=("auto", "bulk", "per-row"), default="auto", help="`langlearn seed --method` when seeding (default auto)")
    parser.add_argument("--samples", type=int, default=200, help="sample users and lesson attempts for the reads (default 200)")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per statement and side before runs are cut, at least 10 runs (default 5)")
    args = parser.parse_args(argv)
    server = database_url()
    name = args.database_name or f"bench_queries_{args.users}"
    url = await prepare_database(server, name, args.users, args.seed, args.seed_method)
    connection = await open_connection(url)
    try:
        samples = await draw_samples(connection, args.samples, 0, args.seed)
        counts = await connection.fetchrow("SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM question_attempts) AS answers, "
                                           "(SELECT count(*) FROM activity_feeds) AS events")
    finally:
        await connection.close()
    print(f"database {database_name(url)} on {redact(server)}: {counts['users']:,} users, {counts['answers']:,} question attempts, "
          f"{counts['events']:,} feed events")
    checks = report_conversion(await measure_conversion_under_load(url, samples, args.budget, args.seed))
    retirement = await measure_retirement(server, args.users, args.seed, args.retire_database_name)
    print_retirement(retirement)
    print_checks(checks + retirement_checks(retirement))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
