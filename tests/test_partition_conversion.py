"""Migrations 12 and 13 turn question_attempts and activity_feeds into partitioned tables on a populated
database under traffic, and back: tested, not hoped for.

A scale seed (USERS learners) is taken back to migration 11 by the real downgrade (the rows go back into
plain tables), then converted while clients read and write both history tables: the answers of a lesson
attempt, a user's own feed and the feed of the people they follow; a lesson attempt written with its
answers, an event, a lesson attempt deleted (the cascade). No workload statement may fail or wait longer
than the migration's lock timeout, and no row is lost. The swap window (the one short transaction per
table) is measured. Then the conversion is killed (kill -9 of the migrating process) after every statement,
and inside the statements that wait (an index build, the swap), and each rerun reaches head. The write
path's plans stay index-backed (EXPLAIN, not timing).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import asyncpg
import pytest

from langlearn import history
from langlearn.databases import database_name
from langlearn.history.runner import session_statements, timeout_settings
from langlearn.operations.social import FEED, OWN_FEED
from langlearn.verify import check_schema
from tests.catalog import describe_difference, snapshot
from tests.conftest import PREFIX, REPO_ROOT, run_cli
from tests.test_online_migration import (
    HEAD_REACHED,
    UPGRADE_COMMANDS,
    Timing,
    assert_verifies_clean,
    clone,
    current_version,
    invalid_indexes,
    percentile,
    watched_upgrade,
)

pytestmark = pytest.mark.slow

# Measured on 2 cores: the seed of 1500 users (670,000 rows) takes 35 s, the whole file about three minutes.
USERS = 1500
LOCK_TIMEOUT = 2.0  # seconds: the migration's lock timeout (the swap uses at most 500 ms of it)
WORKLOAD_LOCK_TIMEOUT = 30  # far above LOCK_TIMEOUT, so a blocked workload statement waits and its wait is measured
CLIENTS = 4
HISTORY = history.load_history()
BEFORE = "11"  # the last migration before the history keys (12) and the partitions (13)
WIDEN_KEYS = HISTORY.resolve("12").version
PARTITION = HISTORY.resolve("13").version
HISTORY_TABLES = ("question_attempts", "activity_feeds")
ROW_COUNTS = "SELECT (SELECT count(*) FROM question_attempts) AS questions, (SELECT count(*) FROM activity_feeds) AS events"


@pytest.fixture(scope="module")
async def scale_template(server, head_template):
    """A database at head holding a scale seed of USERS learners (written into the partitions), used only as a template."""
    url = await server.create(template=head_template, name=f"{PREFIX}tmpl_partitions_scale")
    # per row: the bulk path's take-off and rebuild of keys and indexes learn partitioned tables with `langlearn partitions`
    seeded = run_cli("langlearn", "seed", "--preset", "scale", "--users", str(USERS), "--method", "per-row", "--no-progress",
                     database=url, timeout=600)
    assert seeded.returncode == 0, seeded.stderr
    yield database_name(url)
    await server.drop(url)


@pytest.fixture(scope="module")
async def scale_template_at_11(server, scale_template):
    """The scale seed taken back to migration 11 by `langlearn downgrade`: plain history tables holding every row."""
    url = await clone(server, scale_template)
    downgraded = run_cli("langlearn", "downgrade", "--to", BEFORE, "--yes", database=url)
    assert downgraded.returncode == 0, downgraded.stderr
    yield database_name(url)
    await server.drop(url)


@pytest.fixture
async def populated_db(server, scale_template_at_11):
    url = await clone(server, scale_template_at_11)
    yield url
    await server.drop(url)


@pytest.fixture
async def populated_head_db(server, scale_template):
    url = await clone(server, scale_template)
    yield url
    await server.drop(url)


# --- the workload ----------------------------------------------------------------------------------

ANSWERS = "SELECT question_id, is_correct, time_spent_ms FROM question_attempts WHERE lesson_attempt_id = $1"
ATTEMPT = (
    "INSERT INTO lesson_attempts (user_id, lesson_id, started_at, finished_at, score, total_questions, correct_answers, time_spent_ms) "
    "VALUES ($1, $2, now() - interval '2 minutes', now(), 80, 3, 2, 120000) RETURNING id"
)
QUESTIONS = (
    "INSERT INTO question_attempts (lesson_attempt_id, question_id, question_type, user_answer, correct_answer, is_correct, time_spent_ms) "
    "SELECT $1, 'q' || n, 'translate', 'a', 'a', n <> 2, 1000 FROM generate_series(1, 3) n"
)
EVENT = "INSERT INTO activity_feeds (user_id, activity_type, message, is_public) VALUES ($1, 'workload', 'practised', true)"
DELETE_ATTEMPT = "DELETE FROM lesson_attempts WHERE id = $1"


@dataclass
class Client:
    """The service in miniature on one connection: the reads and writes of the two history tables, each statement
    timed, each error kept. It deletes only the lesson attempts it wrote (no XP: the invariants stay true)."""

    number: int
    connection: asyncpg.Connection
    users: list[uuid.UUID]
    attempts: list[uuid.UUID]  # seeded lesson attempts, whose answers it reads
    lessons: list[uuid.UUID]
    rng: random.Random
    timings: list[Timing] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    written: list[uuid.UUID] = field(default_factory=list)
    warmed: asyncio.Event = field(default_factory=asyncio.Event)
    inserted: dict[str, int] = field(default_factory=lambda: {"questions": 0, "events": 0})

    async def run(self, stop: asyncio.Event) -> None:
        await self.connection.execute(f"SET lock_timeout = '{WORKLOAD_LOCK_TIMEOUT}s'")
        while not stop.is_set():
            try:
                await self.iteration()
            except (asyncpg.PostgresError, asyncpg.InterfaceError):
                pass  # recorded by `timed`; the service carries on
            self.warmed.set()

    async def iteration(self) -> None:
        user = self.rng.choice(self.users)
        await self.timed("read: a lesson attempt's answers", self.connection.fetch, ANSWERS, self.rng.choice(self.attempts))
        await self.timed("read: own feed", self.connection.fetch, OWN_FEED, user, None, None, 20)
        await self.timed("read: feed of people followed", self.connection.fetch, FEED, user, None, None, 20)
        async with self.connection.transaction():
            attempt = await self.timed("write: a lesson attempt", self.connection.fetchval, ATTEMPT, user, self.rng.choice(self.lessons))
            await self.timed("write: its answers", self.connection.execute, QUESTIONS, attempt)
        self.written.append(attempt)
        self.inserted["questions"] += 3
        await self.timed("write: an event", self.connection.execute, EVENT, user)
        self.inserted["events"] += 1
        if len(self.written) > 3:  # the cascade from a deleted lesson attempt to its answers
            await self.timed("write: delete a lesson attempt", self.connection.execute, DELETE_ATTEMPT, self.written.pop(0))
            self.inserted["questions"] -= 3

    async def timed(self, label: str, method, *args):
        started = time.monotonic()
        try:
            return await method(*args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            self.errors.append(f"client {self.number}, {label}: {type(error).__name__}: {error}")
            raise
        finally:
            self.timings.append(Timing(label, started, time.monotonic()))


@dataclass
class Workload:
    clients: list[Client]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task] = field(default_factory=list)

    @classmethod
    async def start(cls, url: str, connect) -> Workload:
        reader = await connect(url)
        users = [row["user_id"] for row in await reader.fetch(
            "SELECT DISTINCT user_id FROM activity_feeds ORDER BY user_id LIMIT 200")]
        attempts = [row["lesson_attempt_id"] for row in await reader.fetch(
            "SELECT DISTINCT lesson_attempt_id FROM question_attempts ORDER BY lesson_attempt_id LIMIT 400")]
        lessons = [row["id"] for row in await reader.fetch("SELECT id FROM lessons")]
        workload = cls([Client(n, await connect(url), users[n::CLIENTS], attempts, lessons, random.Random(n)) for n in range(CLIENTS)])
        workload.tasks = [asyncio.create_task(client.run(workload.stop)) for client in workload.clients]
        await asyncio.wait_for(asyncio.gather(*(client.warmed.wait() for client in workload.clients)), 60)
        return workload

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)

    def during(self, start: float, end: float) -> list[Timing]:
        return [timing for client in self.clients for timing in client.timings if timing.overlaps(start, end)]

    def assert_unharmed(self, start: float, end: float, what: str) -> Timing:
        """No workload error; writes to both tables really overlapped; no statement waited the lock timeout. The slowest."""
        assert [error for client in self.clients for error in client.errors] == []
        during = self.during(start, end)
        assert sum(1 for timing in during if timing.label == "write: its answers") >= 10, "the workload did not overlap the migration"
        slowest = max(during, key=lambda timing: timing.elapsed)
        latencies = [timing.elapsed for timing in during]
        print(
            f"\nworkload during {what} ({end - start:.2f} s): {len(during)} statements by {CLIENTS} clients, "
            f"max {slowest.elapsed * 1000:.1f} ms ({slowest.label}), p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
            f"median {percentile(latencies, 0.5) * 1000:.1f} ms"
        )
        assert slowest.elapsed < LOCK_TIMEOUT, f"{slowest.label} took {slowest.elapsed:.3f} s"
        return slowest

    def inserted(self) -> dict[str, int]:
        return {key: sum(client.inserted[key] for client in self.clients) for key in ("questions", "events")}


async def partitions(connection: asyncpg.Connection, table: str) -> dict[str, str]:
    """name -> bound, as the catalog has them."""
    rows = await connection.fetch(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass ORDER BY 1", table,
    )
    return {row["relname"]: row["bound"] for row in rows}


async def assert_converted(connection: asyncpg.Connection) -> None:
    """Both tables partitioned as the contract says: the original table FROM (MINVALUE), months, the DEFAULT partition."""
    for table in HISTORY_TABLES:
        assert await connection.fetchval("SELECT relkind::text FROM pg_class WHERE oid = $1::regclass", table) == "p"
        bounds = await partitions(connection, table)
        first = [name for name, bound in bounds.items() if bound.startswith("FOR VALUES FROM (MINVALUE)")]
        assert len(first) == 1 and first[0].startswith(f"{table}_pre_"), bounds
        assert bounds[f"{table}_default"] == "DEFAULT"
        months = [name for name in bounds if name.startswith(f"{table}_p2")]
        assert len(months) >= 3, bounds


# --- conversion under load -------------------------------------------------------------------------


@pytest.mark.parametrize("runner", UPGRADE_COMMANDS)
async def test_the_conversion_under_load_fails_no_statement_makes_none_wait_the_lock_timeout_and_keeps_every_row(populated_db, connect, runner):
    observer = await connect(populated_db)
    assert await current_version(observer) == HISTORY.resolve(BEFORE).version
    rows_before = dict(await observer.fetchrow(ROW_COUNTS))
    workload = await Workload.start(populated_db, connect)
    try:
        upgrade = await asyncio.wait_for(watched_upgrade(populated_db, runner=runner), 300)
    finally:
        await workload.finish()
    assert upgrade.returncode == 0, upgrade.stderr
    assert HEAD_REACHED[runner] in upgrade.stdout
    workload.assert_unharmed(upgrade.applying[WIDEN_KEYS], upgrade.ended, f"migrations 12 and 13 by {runner}")
    inserted = workload.inserted()
    assert dict(await observer.fetchrow(ROW_COUNTS)) == {key: rows_before[key] + inserted[key] for key in rows_before}
    await assert_converted(observer)
    assert await invalid_indexes(observer) == []
    assert_verifies_clean(populated_db)


@dataclass(frozen=True)
class StatementTime:
    version: str
    number: int
    statement: str
    seconds: float


async def run_timed(url: str, version: str, notices: list[str], direction: str = "up") -> list[StatementTime]:
    """One migration's statements sent one at a time as the runners send them (same session limits), each timed, its
    notices kept; recorded as applied (or reverted) as `langlearn upgrade` would, by running the bookkeeping of its step."""
    from langlearn.history.plan import Step
    from langlearn.settings import open_connection

    step = Step(HISTORY.get(version), direction)
    connection = await open_connection(url)
    connection.add_log_listener(lambda _, message: notices.append(message.message))
    times = []
    try:
        for statement in session_statements(timeout_settings(lock_timeout=LOCK_TIMEOUT, statement_timeout=120)):
            await connection.execute(statement)
        for number, statement in enumerate(step.statements, 1):
            started = time.monotonic()
            await connection.execute(statement)
            times.append(StatementTime(version, number, statement, time.monotonic() - started))
        async with connection.transaction():
            for statement in step.bookkeeping:
                await connection.execute(statement)
    finally:
        await connection.close()
    return times


async def test_the_swap_window_under_load_and_the_downgrade_back_under_load(populated_db, empty_db, connect):
    """The swap, one transaction per table, measured as the statement that runs it; then `langlearn downgrade`
    under the same load returns the plain tables of migration 11, with every row."""
    observer = await connect(populated_db)
    at_11 = await snapshot(observer)
    rows_before = dict(await observer.fetchrow(ROW_COUNTS))
    workload = await Workload.start(populated_db, connect)
    try:
        started = time.monotonic()
        notices: list[str] = []
        times = await run_timed(populated_db, WIDEN_KEYS, notices) + await run_timed(populated_db, PARTITION, notices)
        converted = time.monotonic()
        await asyncio.sleep(0.5)  # writes into the partitioned tables, which the downgrade moves back
        downgrade = await asyncio.to_thread(run_cli, "langlearn", "downgrade", "--to", BEFORE, "--yes", database=populated_db)
        ended = time.monotonic()
    finally:
        await workload.finish()
    # the swap reports how long it held its locks (from the last one granted to its end; the commit follows)
    windows = {match[1]: float(match[2]) for notice in notices if (match := re.match(r"swap window of (\w+): ([\d.]+) ms", notice))}
    print(
        f"\nswap windows: {windows} ms; each statement, lock waits included: "
        + ", ".join(f"{entry.version[:2]}.{entry.number}: {entry.seconds * 1000:.0f} ms" for entry in times)
    )
    assert set(windows) == set(HISTORY_TABLES)
    assert all(window < 500 for window in windows.values()), windows
    workload.assert_unharmed(started, converted, "migrations 12 and 13, statement by statement")
    assert downgrade.returncode == 0, downgrade.stderr
    workload.assert_unharmed(converted, ended, "the downgrade to 11")

    inserted = workload.inserted()
    assert dict(await observer.fetchrow(ROW_COUNTS)) == {key: rows_before[key] + inserted[key] for key in rows_before}
    difference = describe_difference(at_11, await snapshot(observer))
    assert not difference, f"the downgrade did not restore migration 11's tables:\n{difference}"
    assert await current_version(observer) == HISTORY.resolve(BEFORE).version


# --- kill -9 at each phase, then a rerun ----------------------------------------------------------

# The migrating process: sends the statements of migrations 12 and 13 one at a time and records each migration after
# its last one (as both runners do, with their session limits), says which statement it starts and which it finished,
# and stops after `stop` statements, to be killed; it pauses before statement `pause_before` until told to go on.
MIGRATOR = """
import asyncio, sys
from langlearn import history
from langlearn.history.plan import Step
from langlearn.history.runner import session_statements, timeout_settings
from langlearn.settings import open_connection

async def main(url, versions, stop, pause_before):
    loaded = history.load_history()
    steps = [Step(loaded.get(version), "up") for version in versions]
    connection = await open_connection(url)
    for statement in session_statements(timeout_settings(lock_timeout=30, statement_timeout=120)):
        await connection.execute(statement)
    number = 0
    for step in steps:
        for statement in step.statements:
            number += 1
            if number == pause_before:  # until the test has set up what this statement will wait for
                print("paused", flush=True)
                await asyncio.to_thread(sys.stdin.readline)
            if number > stop:
                print("waiting", flush=True)
                await asyncio.sleep(3600)
            print(f"started {number}", flush=True)
            await connection.execute(statement)
            print(f"finished {number}", flush=True)
        async with connection.transaction():  # recorded as applied, as both runners record a migration after its last statement
            for statement in step.bookkeeping:
                await connection.execute(statement)
    print("waiting", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4])))
"""
CONVERSION = (WIDEN_KEYS, PARTITION)
STATEMENTS = [(version, number, statement) for version in CONVERSION for number, statement in enumerate(HISTORY.get(version).statements("up"), 1)]
# a kill after a statement that changes nothing in the database (a session setting, a function in pg_temp) is a kill after the one before
SESSION_ONLY = ("SET ", "SELECT SET_CONFIG(", "CREATE OR REPLACE FUNCTION PG_TEMP.")
PHASES = [
    position for position, (_, _, statement) in enumerate(STATEMENTS[:-1], 1)
    if not "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip().upper().startswith(SESSION_ONLY)
]


@pytest.fixture(scope="module")
async def small_template_at_11(server, seeded_template):
    """The demo seed taken back to 11: a cheap database on which to kill the conversion again and again."""
    url = await clone(server, seeded_template)
    await history.downgrade(url, to=BEFORE)
    yield database_name(url)
    await server.drop(url)


def start_migrator(url: str, stop: int, pause_before: int = 0) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    return subprocess.Popen(
        [sys.executable, "-c", MIGRATOR, url, ",".join(CONVERSION), str(stop), str(pause_before)],
        cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.PIPE,
    )


def wait_for_line(process: subprocess.Popen, wanted: str) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == wanted:
            return
    raise AssertionError(f"the migrator ended before {wanted!r}: {process.stderr.read() if process.stderr else ''}")


async def killed_session_gone(connection: asyncpg.Connection, pid: int | None = None) -> None:
    """The server ends a killed client's session (and cancels its statement) within client_connection_check_interval (1 s).
    `pid`: that session's; else every other session of the database."""
    for _ in range(200):
        if not await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND ($1::int IS NULL OR pid = $1)", pid
        ):
            return
        await asyncio.sleep(0.05)
    left = await connection.fetch("SELECT pid, state, wait_event_type, wait_event, backend_type, left(query, 60) AS query FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    raise AssertionError(f"the killed migrator's session is still there: {[dict(row) for row in left]}")


async def rerun_reaches_head(url: str, connection: asyncpg.Connection, rows: dict, where: str) -> None:
    await killed_session_gone(connection)
    await history.upgrade(url)
    assert await current_version(connection) == HISTORY.versions[-1], where
    assert await check_schema(connection) == [], where
    assert await invalid_indexes(connection) == [], where
    await assert_converted(connection)
    assert dict(await connection.fetchrow(ROW_COUNTS)) == rows, where


@pytest.mark.parametrize("stop", PHASES, ids=[f"after_{STATEMENTS[stop - 1][0][:2]}.{STATEMENTS[stop - 1][1]}" for stop in PHASES])
async def test_killed_after_each_statement_the_rerun_reaches_head(server, small_template_at_11, connect, stop):
    url = await clone(server, small_template_at_11)
    try:
        connection = await connect(url)
        rows = dict(await connection.fetchrow(ROW_COUNTS))
        migrator = start_migrator(url, stop)
        try:
            wait_for_line(migrator, "waiting")
        finally:
            migrator.kill()  # SIGKILL
            migrator.wait()
        await rerun_reaches_head(url, connection, rows, f"killed after statement {STATEMENTS[stop - 1][:2]}")
    finally:
        await server.drop(url)


# Statements that wait for another session, killed while they wait: the index build (waiting for an older
# snapshot: killed, it leaves an INVALID index), the validation and the swap (waiting for a table lock).
BLOCKERS = {  # the statement, what makes it wait, what the kill leaves INVALID
    "build of the new key's index": ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS \"question_attempts_id_created_at_key\"",
                                     "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM users", ["question_attempts_id_created_at_key"]),
    "validation of the bound": ("langlearn_validate_partition_bound('question_attempts')",
                                "BEGIN; LOCK TABLE question_attempts IN SHARE UPDATE EXCLUSIVE MODE", []),
    "swap": ("langlearn_partition_by_month('question_attempts')", "BEGIN; LOCK TABLE lesson_attempts IN ACCESS SHARE MODE", []),
}


@pytest.mark.parametrize("phase", BLOCKERS)
async def test_killed_inside_a_waiting_statement_the_rerun_reaches_head(server, small_template_at_11, connect, phase):
    fragment, blocking, left_invalid = BLOCKERS[phase]
    number = next(n for n, (_, _, statement) in enumerate(STATEMENTS, 1) if fragment in statement and "CREATE OR REPLACE FUNCTION" not in statement)
    url = await clone(server, small_template_at_11)
    try:
        connection = await connect(url)
        rows = dict(await connection.fetchrow(ROW_COUNTS))
        blocker = await connect(url)
        migrator = start_migrator(url, number, pause_before=number)
        try:
            wait_for_line(migrator, "paused")
            for statement in blocking.split("; "):
                await blocker.execute(statement)
            assert migrator.stdin is not None
            migrator.stdin.write("go\n")
            migrator.stdin.flush()
            wait_for_line(migrator, f"started {number}")
            for _ in range(200):  # until its statement waits for the blocker
                migrating = await connection.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1",
                    f"%{fragment[:40]}%",
                )
                if migrating is not None:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"statement {number} never waited")
        finally:
            migrator.kill()
            migrator.wait()
        # Its session outlives the process while it waits (an index build waiting for older snapshots does not even heed
        # pg_terminate_backend): ended as soon as the blocker lets it go on, before it finishes its statement
        await connection.execute("SELECT pg_terminate_backend($1)", migrating)
        await blocker.close()
        await killed_session_gone(connection, migrating)
        assert await invalid_indexes(connection) == left_invalid
        await rerun_reaches_head(url, connection, rows, f"killed inside the {phase}")
    finally:
        await server.drop(url)


# --- the write path's plans ------------------------------------------------------------------------


def plan_nodes(plan: dict) -> list[dict]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += plan_nodes(child)
    return nodes


async def generic_plan(connection: asyncpg.Connection, sql: str, arguments: str) -> list[dict]:
    """The generic plan of `sql`, the one a foreign key's trigger caches and a pooled prepared statement ends up with."""
    await connection.execute("SET plan_cache_mode = force_generic_plan")
    await connection.execute(f"PREPARE probe AS {sql}")
    try:
        raw = await connection.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE probe({arguments})")
    finally:
        await connection.execute("DEALLOCATE probe")
    return plan_nodes(json.loads(raw)[0]["Plan"])


async def test_the_cascade_and_the_per_user_reads_stay_index_backed_on_the_partitions(populated_head_db, connect):
    connection = await connect(populated_head_db)
    await connection.execute("ANALYZE")
    # the partition holding the most rows: the original table in a converted database, a month in a seeded one
    # (the seed gives its history a partition per month: docs/scale-out.md, "Partition maintenance")
    largest = "SELECT relid::regclass::text FROM pg_partition_tree($1::regclass) WHERE isleaf ORDER BY pg_relation_size(relid) DESC LIMIT 1"
    first_partitions = {table: await connection.fetchval(largest, table) for table in HISTORY_TABLES}
    attempt = await connection.fetchval("SELECT lesson_attempt_id FROM question_attempts LIMIT 1")
    user = await connection.fetchval("SELECT user_id FROM activity_feeds LIMIT 1")

    def scans_of(nodes: list[dict], partition: str) -> list[dict]:
        return [node for node in nodes if node.get("Relation Name") == partition]

    # the query the ON DELETE CASCADE trigger of question_attempts runs for a deleted lesson attempt
    cascade = await generic_plan(connection, "DELETE FROM question_attempts WHERE lesson_attempt_id = $1", f"'{attempt}'::uuid")
    answers = await generic_plan(connection, ANSWERS, f"'{attempt}'::uuid")
    own_feed = await generic_plan(connection, OWN_FEED, f"'{user}'::uuid, NULL, NULL, 20")
    feed = await generic_plan(connection, FEED, f"'{user}'::uuid, NULL, NULL, 20")
    for name, nodes, table in (("cascade", cascade, "question_attempts"), ("answers", answers, "question_attempts"),
                               ("own feed", own_feed, "activity_feeds"), ("feed", feed, "activity_feeds")):
        scans = scans_of(nodes, first_partitions[table])
        assert scans, f"{name}: the first partition is not read: {[node['Node Type'] for node in nodes]}"
        assert all(node["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan") for node in scans), (name, scans)


# --- the downgrade of what the partitions hold -------------------------------------------------------

COMMENTS = """
    SELECT c.relname, obj_description(c.oid, 'pg_class') AS table_comment,
           array(SELECT a.attname || ': ' || col_description(c.oid, a.attnum) FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND col_description(c.oid, a.attnum) IS NOT NULL ORDER BY a.attnum) AS column_comments
    FROM pg_class c WHERE c.relname = ANY($1::text[]) ORDER BY 1
"""


async def first_month(connection: asyncpg.Connection, table: str) -> datetime:
    """The lower bound of the earliest month partition, read from the catalog."""
    lower = min(bound.split("'")[1] for bound in (await partitions(connection, table)).values() if bound.startswith("FOR VALUES FROM ('"))
    return datetime.fromisoformat(lower)


async def test_the_downgrade_moves_back_the_rows_of_every_partition_even_when_the_first_one_was_retired(
    server, small_template_at_11, seeded_db, connect
):
    """Rows in a month partition and in the DEFAULT one go back into the plain table; with the first partition retired
    (detached and dropped, as `retire` does), the oldest month left becomes the plain table, with the catalog and the
    comments of migration 11's."""
    reference = await clone(server, small_template_at_11)
    try:
        at_11 = await connect(reference)
        expected_catalog, expected_comments = await snapshot(at_11), await at_11.fetch(COMMENTS, list(HISTORY_TABLES))
    finally:
        await server.drop(reference)
    connection = await connect(seeded_db)
    attempt = await connection.fetchval("SELECT id FROM lesson_attempts LIMIT 1")
    user = await connection.fetchval("SELECT id FROM users LIMIT 1")
    kept: dict[str, list[uuid.UUID]] = {}
    for table, insert, owner in (
        ("question_attempts", "INSERT INTO question_attempts (lesson_attempt_id, question_id, question_type, created_at) "
                              "VALUES ($1, 'q1', 'translate', $2) RETURNING id", attempt),
        ("activity_feeds", "INSERT INTO activity_feeds (user_id, activity_type, message, created_at) VALUES ($1, 'test', 'ahead', $2) RETURNING id", user),
    ):
        month = await first_month(connection, table)
        in_month = await connection.fetchval(insert, owner, month)
        far_ahead = await connection.fetchval(insert, owner, datetime(2999, 1, 1, tzinfo=timezone.utc))  # no month partition: the DEFAULT one
        assert await connection.fetchval(f"SELECT tableoid::regclass::text FROM {table} WHERE id = $1", far_ahead) == f"{table}_default"
        first = next(name for name, bound in (await partitions(connection, table)).items() if "MINVALUE" in bound)
        await connection.execute(f'ALTER TABLE "{table}" DETACH PARTITION "{first}"')  # retired, as `langlearn partitions retire` would
        await connection.execute(f'DROP TABLE "{first}"')
        kept[table] = [in_month, far_ahead]
    rows = dict(await connection.fetchrow(ROW_COUNTS))

    await history.downgrade(seeded_db, to=BEFORE)

    assert dict(await connection.fetchrow(ROW_COUNTS)) == rows
    for table, ids in kept.items():
        assert await connection.fetchval(f"SELECT count(*) FROM {table} WHERE id = ANY($1::uuid[])", ids) == 2
    difference = describe_difference(expected_catalog, await snapshot(connection))
    assert not difference, f"the downgrade did not restore migration 11's tables:\n{difference}"
    assert await connection.fetch(COMMENTS, list(HISTORY_TABLES)) == expected_comments
