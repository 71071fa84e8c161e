"""The hot queries and deletions, before and after the hot-path migrations, on one seeded database in one run.

    python bench/bench_queries.py                                   # creates bench_queries_20000 once, then reuses it
    python bench/bench_queries.py --database-name NAME [--users N]  # another database on the same server (reused if it exists)

The database (`bench_queries_<users>` by default) is created, brought to head and seeded with
`langlearn seed --users N` the first time, then kept: seeding 20,000 users takes minutes. A later run
reuses it (it must hold a completed seed; an interrupted seed is resumed). Nothing is ever dropped.

Each run takes that database back to the migration before the hot-path indexes (`--before`, default 5:
`downgrade --to 5`, which drops migration 7's ledger_seq and constraints and migration 6's indexes),
runs VACUUM ANALYZE and measures "before"; then upgrades it to head (timed: the cost of these
migrations on a populated database), runs VACUUM ANALYZE again and measures "after". The database is
left at head, also when the run is interrupted.

Reads: asyncpg prepared statements on one connection, as a backend sends them, over `--samples`
users (or their wallets, their current league page, the weeks of the history) drawn once with a fixed
seed. Each parameter is run once untimed (warm cache), then timed; slow statements are cut to fit
`--budget` seconds (at least 10 runs). p50 and p95 in ms, measured by the client (a round trip
included). Plan shape: EXPLAIN (FORMAT JSON) with the parameters of the median run, plus the generic
plan when the server switched the prepared statement to it (pg_prepared_statements) and it differs.

Deletions: BEGIN; DELETE ... (timed, cascades included); ROLLBACK, over several rows. Their shape is
the DELETE's own scan plus the lookup each foreign key's trigger runs on the referencing table (the
generic plan of `SELECT 1 FROM child WHERE fk = $1`, as the triggers cache it, following ON DELETE
CASCADE down), and the slowest triggers from EXPLAIN ANALYZE of one representative delete.

Index-backed: no Seq Scan and no whole-index scan (an index read end to end because the condition is
not on its first column, e.g. `lesson_id` in an index on (user_id, lesson_id)).
Targets (after): every per-user read (the league page included: each user opens their own) under 1 ms
p50 and index-backed; deleting a user under 10 ms; a user's or a device's deletion index-backed;
deleting a lesson at least 10x faster than before. The week's ranking, the weekly XP rebuild and
deleting an achievement are batch or admin work: reported, no target; so is deleting a lesson nobody
attempted (a copy made in the same transaction), which isolates the lookups from the cascade. The exit status is 0 whether
or not the targets are met (a benchmark reports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg

from langlearn import history
from langlearn.databases import admin_connection, create_database, database_exists, database_name, with_database
from langlearn.history import version_number
from langlearn.settings import database_url, marked_production, open_connection
from langlearn.urls import redact

REPO_ROOT = Path(__file__).resolve().parent.parent

BEFORE = 5  # the migration before 6_hot_path_indexes
READ_TARGET_MS = 1.0
USER_DELETE_TARGET_MS = 10.0
LESSON_DELETE_MIN_RATIO = 10.0
MIN_RUNS = 10

Params = tuple[Any, ...]


@dataclass(frozen=True)
class Samples:
    """The parameters the statements run with, drawn once (fixed seed) and the same before and after."""

    users: list[Params]
    wallets: list[Params]
    league_pages: list[Params]  # each sample user's league in the latest week they have an entry for
    weeks: list[Params]  # week_start dates, for the whole-week statements
    week_starts: list[Params]  # the same weeks as timestamptz (Monday 00:00 UTC)
    delete_users: list[Params]
    devices: list[Params]
    achievements: list[Params]
    lessons: list[Params]


@dataclass(frozen=True)
class Target:
    """What `after` must show; None/False: not checked."""

    max_p50_ms: float | None = None
    index_backed: bool = False
    min_ratio: float | None = None

    def describe(self) -> str:
        parts = [f"p50 < {self.max_p50_ms:g} ms"] if self.max_p50_ms is not None else []
        parts += ["index-backed"] if self.index_backed else []
        parts += [f">= {self.min_ratio:g}x faster"] if self.min_ratio is not None else []
        return ", ".join(parts) or "-"


PER_USER_READ = Target(max_p50_ms=READ_TARGET_MS, index_backed=True)
NO_TARGET = Target()


@dataclass(frozen=True)
class Read:
    name: str
    sql: str
    params: Callable[[Samples], list[Params]]
    target: Target
    sql_before: str | None = None  # where the earlier schema lacks what `sql` uses
    note: str = ""


@dataclass(frozen=True)
class Deletion:
    name: str
    table: str
    ids: Callable[[Samples], list[Params]]
    target: Target
    # run first in the same (rolled-back) transaction; the id it returns is the row deleted
    setup: str | None = None
    note: str = ""


FOLLOWED_FEED = """
    SELECT f.id, f.user_id, f.activity_type, f.message, f.created_at
    FROM user_following AS uf JOIN activity_feeds AS f ON f.user_id = uf.following_id
    WHERE uf.follower_id = $1 AND f.is_public
    ORDER BY f.created_at DESC LIMIT 50"""
LEDGER = "SELECT id, transaction_type, amount, balance_after, created_at FROM wallet_transactions WHERE wallet_id = $1 ORDER BY {order} LIMIT 50"

READS = (
    Read("due reviews", "SELECT vocab_id, next_review_date, strength, interval_days FROM user_vocab_knowledge "
         "WHERE user_id = $1 AND next_review_date <= now() ORDER BY next_review_date LIMIT 20", lambda s: s.users, PER_USER_READ),
    Read("own feed", "SELECT id, activity_type, message, is_public, created_at FROM activity_feeds WHERE user_id = $1 ORDER BY created_at DESC LIMIT 50",
         lambda s: s.users, PER_USER_READ),
    Read("feed of people followed", FOLLOWED_FEED, lambda s: s.users, PER_USER_READ),
    Read("followers", "SELECT follower_id FROM user_following WHERE following_id = $1", lambda s: s.users, PER_USER_READ),
    Read("league page", "SELECT user_id, xp_earned, current_rank FROM leaderboard_entries WHERE week_start = $1 AND league = $2 "
         "ORDER BY xp_earned DESC LIMIT 50", lambda s: s.league_pages, PER_USER_READ, note="each sample user's own league, latest week"),
    Read("wallet's ledger", LEDGER.format(order="created_at DESC, ledger_seq DESC"), lambda s: s.wallets, PER_USER_READ,
         sql_before=LEDGER.format(order="created_at DESC"), note="before: ORDER BY created_at DESC (no ledger_seq before migration 7)"),
    Read("user's transactions", "SELECT id, wallet_id, transaction_type, amount, balance_after, created_at FROM wallet_transactions "
         "WHERE user_id = $1 ORDER BY created_at DESC LIMIT 50", lambda s: s.users, PER_USER_READ),
    Read("user's lesson attempts", "SELECT id, lesson_id, started_at, score, passed, xp_earned FROM lesson_attempts "
         "WHERE user_id = $1 ORDER BY started_at DESC LIMIT 50", lambda s: s.users, PER_USER_READ),
    Read("week's ranking", "SELECT user_id, league, xp_earned, rank() OVER (PARTITION BY league ORDER BY xp_earned DESC) AS rank "
         "FROM leaderboard_entries WHERE week_start = $1", lambda s: s.weeks, NO_TARGET, note="batch: every league of one week"),
    Read("weekly XP rebuild", "SELECT user_id, sum(xp_earned) AS xp FROM lesson_attempts "
         "WHERE started_at >= $1::timestamptz AND started_at < $1::timestamptz + interval '7 days' GROUP BY user_id",
         lambda s: s.week_starts, NO_TARGET, note="batch: one week's attempts summed per user"),
)

DELETIONS = (
    Deletion("delete a user", "users", lambda s: s.delete_users, Target(max_p50_ms=USER_DELETE_TARGET_MS, index_backed=True)),
    Deletion("delete a device", "user_devices", lambda s: s.devices, Target(index_backed=True), note="per-user path: signing a device out for good"),
    Deletion("delete an achievement", "achievements", lambda s: s.achievements, NO_TARGET),
    Deletion("delete a lesson", "lessons", lambda s: s.lessons, Target(min_ratio=LESSON_DELETE_MIN_RATIO)),
    Deletion(
        "delete a lesson nobody attempted", "lessons", lambda s: s.lessons, NO_TARGET,
        # a copy of a seeded lesson made in the same transaction: the lookups without the cascade's volume
        setup="INSERT INTO lessons (id, course_id, unit_id, title, order_index) "
              "SELECT gen_random_uuid(), course_id, unit_id, 'bench_queries: unattempted', order_index + 100000 FROM lessons WHERE id = $1 RETURNING id",
        note="diagnostic: a fresh copy of a seeded lesson, so only the foreign-key lookups remain",
    ),
)


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p95_ms: float
    runs: int


@dataclass(frozen=True)
class Shape:
    text: str
    full_scans: tuple[str, ...]  # Seq Scans and whole-index scans
    generic: str | None = None  # the generic plan's shape, when it differs
    details: tuple[str, ...] = ()  # trigger times of a deletion


@dataclass(frozen=True)
class Measured:
    timing: Timing
    shape: Shape


@dataclass
class Row:
    name: str
    target: Target
    note: str
    before: Measured | None = None
    after: Measured | None = None
    misses: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        assert self.before and self.after
        return self.before.timing.p50_ms / self.after.timing.p50_ms

    def judge(self) -> None:
        assert self.before and self.after
        target, after = self.target, self.after
        if target.max_p50_ms is not None and after.timing.p50_ms >= target.max_p50_ms:
            self.misses.append(f"p50 {after.timing.p50_ms:.2f} ms >= {target.max_p50_ms:g} ms")
        if target.index_backed and after.shape.full_scans:
            self.misses.append("; ".join(after.shape.full_scans))
        if target.min_ratio is not None and self.ratio < target.min_ratio:
            self.misses.append(f"only {self.ratio:.2f}x faster (target {target.min_ratio:g}x)")


# --- the database ---------------------------------------------------------------------------------


async def prepare_database(server: str, name: str, users: int, seed: int, method: str = "auto") -> str:
    """The seeded database `name`: created, migrated and seeded (`langlearn seed --method`) if it does not exist, else reused as it is."""
    url = with_database(server, name)
    admin = await admin_connection(server)
    try:
        exists = await database_exists(admin, name)
    finally:
        await admin.close()
    if not exists:
        await create_database(server, name)
        print(f"created {name} (kept after the run; `langlearn db drop {name} --yes` removes it)", flush=True)
    await history.upgrade(url)  # also finishes a run interrupted while the database was at --before
    connection = await open_connection(url)
    try:
        marker = await connection.fetchval("SELECT current_setting('langlearn.environment', true)")
        if marked_production(marker):
            raise SystemExit(f"{name} is marked langlearn.environment = {marker!r}; this benchmark downgrades its database, pick another")
        completed = await connection.fetchval("SELECT (parameters->>'users')::int FROM seed_runs WHERE status = 'completed' LIMIT 1")
    finally:
        await connection.close()
    if completed is None:
        print(f"seeding {name}: langlearn seed --users {users} --seed {seed} (minutes; done once, the database is kept) ...", flush=True)
        started = time.perf_counter()
        environment = {**os.environ, "DATABASE_URL": url}
        result = subprocess.run([sys.executable, "-m", "langlearn", "seed", "--users", str(users), "--seed", str(seed), "--method", method, "--no-progress"],
                                cwd=REPO_ROOT, env=environment, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"langlearn seed --users {users} failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
        print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)
    elif completed != users:
        print(f"note: {name} holds a seed of {completed} users, not {users}; measuring it as it is")
    return url


async def vacuum_analyze(url: str) -> float:
    """VACUUM ANALYZE, so both sides have fresh statistics and visibility maps (index-only scans) whatever ran before."""
    connection = await open_connection(url)
    try:
        started = time.perf_counter()
        await connection.execute("VACUUM (ANALYZE)")
        return time.perf_counter() - started
    finally:
        await connection.close()


async def timed(step: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await step
    return time.perf_counter() - started


async def draw_samples(connection: asyncpg.Connection, count: int, deletes: int, seed: int) -> Samples:
    rng = random.Random(seed)

    async def some(query: str, k: int) -> list[Params]:
        rows = [tuple(row) for row in await connection.fetch(query)]
        return rng.sample(rows, min(k, len(rows)))

    users = await some("SELECT id FROM users ORDER BY id", count)
    user_ids = [user for (user,) in users]
    wallets = {row["user_id"]: row["id"] for row in await connection.fetch("SELECT id, user_id FROM user_wallets WHERE user_id = ANY($1::uuid[])", user_ids)}
    pages = {
        row["user_id"]: (row["week_start"], row["league"])
        for row in await connection.fetch(
            "SELECT DISTINCT ON (user_id) user_id, week_start, league::text AS league FROM leaderboard_entries "
            "WHERE user_id = ANY($1::uuid[]) ORDER BY user_id, week_start DESC", user_ids)
    }
    weeks: list[date] = [row["week_start"] for row in await connection.fetch("SELECT DISTINCT week_start FROM leaderboard_entries ORDER BY 1")]
    return Samples(
        users=users,
        wallets=[(wallets[user],) for user in user_ids if user in wallets],
        league_pages=[pages[user] for user in user_ids if user in pages],
        weeks=[(week,) for week in weeks] * 3,  # a handful of weeks: each three times for a steadier median
        week_starts=[(datetime(week.year, week.month, week.day, tzinfo=timezone.utc),) for week in weeks] * 3,
        delete_users=users[:deletes],
        devices=await some("SELECT id FROM user_devices ORDER BY id", deletes),
        achievements=await some("SELECT id FROM achievements ORDER BY id", max(3, deletes // 4)),
        lessons=await some("SELECT id FROM lessons ORDER BY id", max(3, deletes // 4)),
    )


# --- plans ----------------------------------------------------------------------------------------


async def explain(connection: asyncpg.Connection, sql: str, params: Sequence[Any], *options: str) -> dict[str, Any]:
    document = await connection.fetchval(f"EXPLAIN ({', '.join(('FORMAT JSON', *options))}) {sql}", *params)
    explained: dict[str, Any] = json.loads(document)[0]
    return explained


async def generic_plan(connection: asyncpg.Connection, sql: str, parameters: int) -> dict[str, Any]:
    """The plan the server caches for a prepared statement once it stops planning per execution (the values do not matter)."""
    # PREPARE over the simple protocol: asyncpg would take `$1` in EXPLAIN (GENERIC_PLAN) for its own parameter
    await connection.execute(f"PREPARE bench_generic AS {sql}")
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        arguments = f"({', '.join(['NULL'] * parameters)})" if parameters else ""
        document = await connection.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE bench_generic{arguments}")
    finally:
        await connection.execute("RESET plan_cache_mode; DEALLOCATE bench_generic")
    plan: dict[str, Any] = json.loads(document)[0]["Plan"]
    return plan


@dataclass(frozen=True)
class ForeignKey:
    name: str
    child: str
    parent: str
    columns: tuple[str, ...]
    on_delete: str  # pg_constraint.confdeltype: a no action, r restrict, c cascade, n set null, d set default


async def foreign_keys(connection: asyncpg.Connection) -> list[ForeignKey]:
    rows = await connection.fetch("""
        SELECT c.conname, c.conrelid::regclass::text AS child, c.confrelid::regclass::text AS parent, c.confdeltype::text,
               array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, position)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.position) AS columns
        FROM pg_constraint c WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace ORDER BY 1""")
    return [ForeignKey(row["conname"], row["child"], row["parent"], tuple(row["columns"]), row["confdeltype"]) for row in rows]


@dataclass(frozen=True)
class Catalog:
    """What reading one side's plans needs from its live schema."""

    leading: dict[str, str]  # index name -> its first column (expression indexes left out)
    keys: list[ForeignKey]

    def whole_index(self, node: dict[str, Any]) -> bool:
        """An index read from end to end: no condition on its first column (the planner may still pick it over the table)."""
        lead = self.leading.get(node.get("Index Name", ""))
        return lead is not None and not re.search(rf"\b{re.escape(lead)}\b", node.get("Index Cond", ""))

    def render(self, node: dict[str, Any]) -> str:
        """A plan as nested node names: `Sort(Index Scan idx_x)`; Limit is left out (every page has one)."""
        kind = node["Node Type"]
        if kind == "Aggregate":
            kind = {"Hashed": "HashAggregate", "Sorted": "GroupAggregate", "Mixed": "MixedAggregate"}.get(node.get("Strategy", ""), "Aggregate")
        if node.get("Parallel Aware"):
            kind = f"Parallel {kind}"
        if "Index Name" in node:
            backward = " Backward" if node.get("Scan Direction") == "Backward" else ""
            kind = f"{kind}{backward} {node['Index Name']}" + (" (whole index)" if self.whole_index(node) else "")
        elif "Relation Name" in node and node["Node Type"] != "ModifyTable":
            kind = f"{kind} on {node['Relation Name']}"
        children = [self.render(child) for child in node.get("Plans", [])]
        if node["Node Type"] in ("Limit", "ModifyTable"):
            return ", ".join(children)
        return f"{kind}({', '.join(children)})" if children else kind

    def full_scans(self, node: dict[str, Any]) -> list[str]:
        """The reads of a whole table or a whole index in a plan: what a per-user path must not have."""
        found = []
        if node["Node Type"] == "Seq Scan":
            found.append(f"Seq Scan on {node['Relation Name']}")
        elif self.whole_index(node):
            found.append(f"whole-index scan of {node['Index Name']} (no condition on {self.leading[node['Index Name']]})")
        for child in node.get("Plans", []):
            found += self.full_scans(child)
        return list(dict.fromkeys(found))


async def read_catalog(connection: asyncpg.Connection) -> Catalog:
    rows = await connection.fetch("""
        SELECT c.relname, a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE c.relnamespace = current_schema()::regnamespace""")
    return Catalog({row["relname"]: row["attname"] for row in rows}, await foreign_keys(connection))


async def read_shape(connection: asyncpg.Connection, catalog: Catalog, sql: str, params: Params) -> Shape:
    """The custom plan for `params`, and the generic plan where the server used it for some of the timed runs."""
    custom = (await explain(connection, sql, params))["Plan"]
    scans = catalog.full_scans(custom)
    # counts of the protocol-level statement asyncpg prepared: after five runs the server may switch to the generic plan
    usage = await connection.fetchrow("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", sql)
    text, generic = catalog.render(custom), None
    if usage and usage["generic_plans"]:
        plan = await generic_plan(connection, sql, len(params))
        scans = list(dict.fromkeys(scans + catalog.full_scans(plan)))
        if catalog.render(plan) != text:
            generic = f"{catalog.render(plan)} ({usage['generic_plans']} of {usage['generic_plans'] + usage['custom_plans']} executions, warm-up included)"
    return Shape(text, tuple(scans), generic)


def reached(keys: list[ForeignKey], table: str) -> list[ForeignKey]:
    """The foreign keys whose triggers a delete from `table` fires: those referencing it, and down every CASCADE."""
    found: list[ForeignKey] = []
    pending, seen = [table], {table}
    while pending:
        parent = pending.pop(0)
        for key in keys:
            if key.parent == parent:
                found.append(key)
                if key.on_delete == "c" and key.child not in seen:
                    seen.add(key.child)
                    pending.append(key.child)
    return found


async def lookup_shapes(connection: asyncpg.Connection, catalog: Catalog, keys: list[ForeignKey]) -> list[str]:
    """Each key's referencing-side lookup as its trigger plans it (generic plan: the triggers' plans are cached)."""
    shapes = []
    for key in keys:
        condition = " AND ".join(f'"{column}" = ${position}' for position, column in enumerate(key.columns, 1))
        plan = await generic_plan(connection, f"SELECT 1 FROM ONLY {key.child} WHERE {condition}", len(key.columns))
        for scan in catalog.full_scans(plan):
            rows = await connection.fetchval("SELECT reltuples::bigint FROM pg_class WHERE oid = $1::regclass", key.child)
            shapes.append(f"{scan} ({key.child}.{', '.join(key.columns)}; {rows:,} rows)")
    return shapes


async def deletion_shape(connection: asyncpg.Connection, catalog: Catalog, deletion: Deletion, row_id: Any) -> Shape:
    transaction = connection.transaction()
    await transaction.start()
    try:
        if deletion.setup:
            row_id = await connection.fetchval(deletion.setup, row_id)
        analyzed = await explain(connection, f"DELETE FROM {deletion.table} WHERE id = $1", (row_id,), "ANALYZE")
    finally:
        await transaction.rollback()
    path = reached(catalog.keys, deletion.table)
    scans = await lookup_shapes(connection, catalog, path)
    indexed = len(path) - len(scans)
    text = f"{catalog.render(analyzed['Plan'])}; FK lookups: {indexed} by index" + (f", {', '.join(scans)}" if scans else "")
    triggers = sorted(analyzed.get("Triggers", []), key=lambda trigger: -trigger["Time"])
    details = tuple(f"{trigger.get('Constraint Name', trigger['Trigger Name'])} {trigger['Time']:.1f} ms ({trigger['Calls']} calls)" for trigger in triggers[:4])
    return Shape(text, tuple(scans), details=details)


# --- timing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runs:
    timing: Timing
    median_params: Params  # those of the median run: the plan shown is theirs


async def measure(run: Callable[[Params], Awaitable[float]], params: list[Params], budget: float) -> Runs:
    """Run each parameter once untimed (warm cache), then once timed; as many parameters as fit `budget`
    (at least MIN_RUNS)."""
    first = await run(params[0])
    count = min(len(params), max(MIN_RUNS, int(budget / max(first, 1e-6))))
    chosen = params[:count]
    for values in chosen:
        await run(values)
    times = [await run(values) for values in chosen]
    median_index = sorted(range(count), key=times.__getitem__)[count // 2]
    p95 = statistics.quantiles(times, n=20, method="inclusive")[18] if count > 1 else times[0]
    return Runs(Timing(statistics.median(times) * 1000, p95 * 1000, count), chosen[median_index])


async def measure_read(connection: asyncpg.Connection, catalog: Catalog, read: Read, samples: Samples, budget: float, before: bool) -> Measured:
    sql = read.sql_before if before and read.sql_before else read.sql
    statement = await connection.prepare(sql)

    async def run(values: Params) -> float:
        started = time.perf_counter()
        await statement.fetch(*values)
        return time.perf_counter() - started

    runs = await measure(run, read.params(samples), budget)
    return Measured(runs.timing, await read_shape(connection, catalog, sql, runs.median_params))


async def measure_deletion(connection: asyncpg.Connection, catalog: Catalog, deletion: Deletion, samples: Samples, budget: float) -> Measured:
    statement = await connection.prepare(f"DELETE FROM {deletion.table} WHERE id = $1")
    setup = await connection.prepare(deletion.setup) if deletion.setup else None

    async def run(values: Params) -> float:
        transaction = connection.transaction()
        await transaction.start()
        try:
            row_id = await setup.fetchval(*values) if setup else values[0]
            started = time.perf_counter()
            await statement.fetch(row_id)
            return time.perf_counter() - started
        finally:
            await transaction.rollback()  # nothing is deleted: the next run finds the same rows

    runs = await measure(run, deletion.ids(samples), budget)
    return Measured(runs.timing, await deletion_shape(connection, catalog, deletion, runs.median_params[0]))


async def measure_side(url: str, samples: Samples, budget: float, rows: dict[str, Row], before: bool) -> None:
    label = "before" if before else "after"
    connection = await open_connection(url)
    try:
        catalog = await read_catalog(connection)
        for read in READS:
            measured = await measure_read(connection, catalog, read, samples, budget, before)
            setattr(rows[read.name], label, measured)
            print(f"  {label:6} {read.name:34} p50 {measured.timing.p50_ms:9.2f} ms  {measured.shape.text}", flush=True)
        for deletion in DELETIONS:
            measured = await measure_deletion(connection, catalog, deletion, samples, budget)
            setattr(rows[deletion.name], label, measured)
            print(f"  {label:6} {deletion.name:34} p50 {measured.timing.p50_ms:9.2f} ms  {measured.shape.text}", flush=True)
    finally:
        await connection.close()


# --- report ---------------------------------------------------------------------------------------


def cell(measured: Measured) -> str:
    return f"{measured.timing.p50_ms:.2f} / {measured.timing.p95_ms:.2f}"


def print_report(rows: list[Row]) -> None:
    print()
    print("| query | before p50 / p95 ms | plan before | after p50 / p95 ms | plan after | before/after | target | met |")
    print("|---|---:|---|---:|---|---:|---|---|")
    for row in rows:
        assert row.before and row.after
        verdict = "-" if row.target == NO_TARGET else ("yes" if not row.misses else "**NO**")
        print(f"| {row.name} | {cell(row.before)} | {row.before.shape.text} | {cell(row.after)} | {row.after.shape.text} | "
              f"{row.ratio:.1f}x | {row.target.describe()} | {verdict} |")
    print()
    for row in rows:
        assert row.before and row.after
        lines = [f"note: {row.note}"] if row.note else []
        for label, measured in (("before", row.before), ("after", row.after)):
            if measured.shape.generic:
                lines.append(f"{label}: generic plan, which the server switched to for part of the runs: {measured.shape.generic}")
            if measured.shape.details:
                lines.append(f"{label}: slowest FK triggers: {', '.join(measured.shape.details)}")
            lines.append(f"{label}: {measured.timing.runs} timed runs")
        print(f"{row.name}:")
        for line in lines:
            print(f"    {line}")
    missed = [row for row in rows if row.misses]
    print()
    if not missed:
        print("targets: all met")
    else:
        print("targets NOT met:")
        for row in missed:
            assert row.after
            slowest = f"; slowest FK trigger after: {row.after.shape.details[0]}" if row.after.shape.details else ""
            print(f"  - {row.name}: {'; '.join(row.misses)} (plan after: {row.after.shape.text}{slowest})")


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000, help="users to seed when the database is created (default 20000)")
    parser.add_argument("--database-name", help="the seeded database to use, created and seeded if missing, else reused (default bench_queries_<users>)")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the data and of the samples (default 42)")
    parser.add_argument("--samples", type=int, default=200, help="sample users for the per-user reads (default 200)")
    parser.add_argument("--deletes", type=int, default=20, help="users and devices deleted (rolled back) per side; a quarter as many achievements and lessons (default 20)")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per statement and side before runs are cut, at least 10 runs (default 5)")
    parser.add_argument("--before", type=int, default=BEFORE, help=f"the migration measured as 'before' (default {BEFORE})")
    args = parser.parse_args(argv)
    server = database_url()
    name = args.database_name or f"bench_queries_{args.users}"
    url = await prepare_database(server, name, args.users, args.seed)

    connection = await open_connection(url)
    try:
        samples = await draw_samples(connection, args.samples, args.deletes, args.seed)
        users = await connection.fetchval("SELECT count(*) FROM users")
        rows_total = await connection.fetchval("SELECT sum(n_live_tup)::bigint FROM pg_stat_user_tables")
        head = (await history.read_state(connection)).current
    finally:
        await connection.close()
    print(f"database {database_name(url)} on {redact(server)}: {users:,} users, ~{rows_total:,} rows, at {head}")
    print(f"samples: {len(samples.users)} users, {len(samples.league_pages)} league pages, {len(samples.weeks) // 3} weeks; "
          f"deletes (rolled back): {len(samples.delete_users)} users, {len(samples.devices)} devices, "
          f"{len(samples.achievements)} achievements, {len(samples.lessons)} lessons")

    rows = {item.name: Row(item.name, item.target, item.note) for item in (*READS, *DELETIONS)}
    at_head = False  # from here until the upgrade succeeds, an interruption takes the database back to head
    try:
        downgrade = await timed(history.downgrade(url, to=args.before))
        print(f"downgrade head -> {args.before}: {downgrade:.1f} s; VACUUM ANALYZE: {await vacuum_analyze(url):.1f} s", flush=True)
        await measure_side(url, samples, args.budget, rows, before=True)
        steps: dict[int, float] = {}
        for number in [version_number(version) for version in history.version_files() if version_number(version) > args.before]:
            steps[number] = await timed(history.upgrade(url, to=number))  # one at a time, to time each
        at_head = True
        upgrade = f"{sum(steps.values()):.1f} s ({', '.join(f'{number}: {step:.1f} s' for number, step in steps.items())})"
        print(f"upgrade {args.before} -> head on the populated database: {upgrade}; VACUUM ANALYZE: {await vacuum_analyze(url):.1f} s", flush=True)
        await measure_side(url, samples, args.budget, rows, before=False)
    finally:
        if not at_head:
            print("taking the database back to head ...", flush=True)
            await history.upgrade(url)
    for row in rows.values():
        row.judge()
    print_report(list(rows.values()))
    print(f"\nupgrade {args.before} -> head on this database ({rows_total:,} rows): {upgrade}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
