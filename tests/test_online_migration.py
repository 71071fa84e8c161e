"""Lock safety of migrations 6 and 7 on a populated database under traffic: tested, not hoped for.

A scale seed (USERS learners, about half a million rows per thousand) is taken back to migration 5,
then `langlearn upgrade --lock-timeout 2`, or plain `aerich upgrade` with the same limit (the real
CLIs, each in a process of its own), applies 6 and 7 while clients read and write the tables they change. No workload statement may wait longer than
the migration's lock timeout, and none may fail. The failure paths are real too: an index build
that times out and leaves an INVALID index, a VALIDATE that meets a bad row, each recovered by
running the upgrade again; and the downgrade returns the catalog to migration 5's.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta

import asyncpg
import pytest

from langlearn import history
from langlearn.databases import database_name, with_database
from tests.catalog import describe_difference, snapshot
from tests.conftest import LANGLEARN, PREFIX, REPO_ROOT, run_cli

pytestmark = pytest.mark.slow

# Measured on 2 cores: the seed of 2000 users takes 50 to 95 s (as busy as the machine is), the whole file about two minutes.
USERS = 2000
LOCK_TIMEOUT = 2.0  # seconds: the migration's --lock-timeout
WORKLOAD_LOCK_TIMEOUT = 30  # seconds: far above LOCK_TIMEOUT, so a blocked workload statement waits and its wait is measured
CLIENTS = 4
LEARNERS_PER_CLIENT = 25

HISTORY = history.load_history()
HEAD = HISTORY.versions[-1]
BEFORE = "5_20261124041220_seed_runs.py"  # the last migration before the online ones
HOT_PATH_INDEXES = "6_20261125214626_hot_path_indexes.py"
LEDGER_ORDER = "7_20261125214835_ledger_order_and_constraints.py"


async def clone(server, template: str) -> str:
    """A copy of `template` by file copy: half a second for a scale database, where the default strategy
    (WAL_LOG, what `server.create` uses) writes all of it through the WAL, some five seconds."""
    name = f"{PREFIX}{uuid.uuid4().hex[:10]}"  # the session's prefix, so conftest drops it if this session is killed
    admin = await server.admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    finally:
        await admin.close()
    return with_database(server.url, name)


@pytest.fixture(scope="module")
async def scale_template(server, head_template):
    """A database at head holding a scale seed of USERS learners, used only as a template (and read by one test)."""
    url = await server.create(template=head_template, name=f"{PREFIX}tmpl_scale")
    seeded = run_cli("langlearn", "seed", "--preset", "scale", "--users", str(USERS), "--no-progress", database=url, timeout=600)
    assert seeded.returncode == 0, seeded.stderr
    yield database_name(url)
    await server.drop(url)


@pytest.fixture(scope="module")
async def scale_template_at_5(server, scale_template):
    """The scale seed taken back to migration 5 by `langlearn downgrade`, used only as a template."""
    url = await clone(server, scale_template)
    downgraded = run_cli("langlearn", "downgrade", "--to", BEFORE, "--yes", database=url)
    assert downgraded.returncode == 0, downgraded.stderr
    yield database_name(url)
    await server.drop(url)


@pytest.fixture
async def populated_db(server, scale_template_at_5):
    """A new populated database at migration 5: migrations 6 and 7 pending."""
    url = await clone(server, scale_template_at_5)
    yield url
    await server.drop(url)


@pytest.fixture
async def populated_head_db(server, scale_template):
    """A new populated database at head."""
    url = await clone(server, scale_template)
    yield url
    await server.drop(url)


# --- helpers ---------------------------------------------------------------------------------------


def statement_number(version: str, fragment: str) -> tuple[int, int]:
    """(the 1-based number of the one statement of `version`'s upgrade containing `fragment`, how many there are),
    as the runner counts them in its failure message."""
    statements = HISTORY.get(version).statements("up")
    numbers = [number for number, statement in enumerate(statements, 1) if fragment in statement]
    assert len(numbers) == 1, f"{fragment!r} is in statements {numbers} of {version}"
    return numbers[0], len(statements)


def validated_from(version: str, number: int) -> set[str]:
    """The constraints that statements `number`.. of `version`'s upgrade validate."""
    statements = HISTORY.get(version).statements("up")[number - 1:]
    return {match.group(1) for statement in statements if (match := re.search(r'VALIDATE CONSTRAINT "(\w+)"', statement))}


def upgrade_cli(database: str):
    return run_cli("langlearn", "upgrade", "--lock-timeout", f"{LOCK_TIMEOUT:g}", database=database, timeout=300)


def failure_line(stderr: str) -> str:
    """The one line in which the CLI says which statement failed (the others are the log's `applying ...`)."""
    lines = [line for line in stderr.splitlines() if "failed at statement" in line]
    assert len(lines) == 1, stderr
    return lines[0]


def verify_findings(database: str) -> list[dict]:
    """`langlearn verify --json` on `database`, without the invariants (the failure tests look at the schema's findings)."""
    result = run_cli("langlearn", "verify", "--json", "--skip-invariants", database=database)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)["findings"]


def assert_verifies_clean(database: str) -> None:
    result = run_cli("langlearn", "verify", database=database, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


async def current_version(connection: asyncpg.Connection) -> str:
    return await connection.fetchval("SELECT version FROM aerich ORDER BY id DESC LIMIT 1")


async def invalid_indexes(connection: asyncpg.Connection) -> list[str]:
    return [row["name"] for row in await connection.fetch("SELECT indexrelid::regclass::text AS name FROM pg_index WHERE NOT indisvalid ORDER BY 1")]


# --- the workload ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    label: str
    started: float
    ended: float

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    def overlaps(self, start: float, end: float) -> bool:
        return self.started < end and self.ended > start


@dataclass(frozen=True)
class Learner:
    user_id: uuid.UUID
    wallet_id: uuid.UUID
    progress_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class World:
    """What the clients pick from: existing rows read once before the workload starts."""

    learners: list[Learner]
    user_ids: list[uuid.UUID]
    lesson_ids: list[uuid.UUID]
    boards: list[tuple[date, str]]  # (week_start, league) of the seeded leagues

    @classmethod
    async def read(cls, connection: asyncpg.Connection) -> World:
        wallets = await connection.fetch(
            "SELECT w.user_id, w.id FROM user_wallets w WHERE EXISTS (SELECT 1 FROM user_progress p WHERE p.user_id = w.user_id) "
            "ORDER BY w.user_id LIMIT $1",
            CLIENTS * LEARNERS_PER_CLIENT,
        )
        progress: dict[uuid.UUID, list[uuid.UUID]] = {}
        for row in await connection.fetch("SELECT user_id, id FROM user_progress WHERE user_id = ANY($1::uuid[])", [row["user_id"] for row in wallets]):
            progress.setdefault(row["user_id"], []).append(row["id"])
        return cls(
            learners=[Learner(row["user_id"], row["id"], tuple(progress[row["user_id"]])) for row in wallets],
            user_ids=[row["id"] for row in await connection.fetch("SELECT id FROM users")],
            lesson_ids=[row["id"] for row in await connection.fetch("SELECT id FROM lessons")],
            boards=[(row["week_start"], row["league"]) for row in await connection.fetch("SELECT DISTINCT week_start, league::text FROM leaderboard_entries")],
        )


# Columns are named, as the ORM names them: a `SELECT *` prepared before ADD COLUMN would fail inside a transaction
# (asyncpg's InvalidCachedStatementError), a client-side cache problem, not a lock.
USER_TRANSACTIONS = "SELECT id, amount, balance_after, created_at FROM wallet_transactions WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20"
LEAGUE_PAGE = "SELECT user_id, xp_earned, current_rank FROM leaderboard_entries WHERE week_start = $1 AND league = $2::league_type ORDER BY xp_earned DESC LIMIT 30"
USER_ATTEMPTS = "SELECT id, lesson_id, score, started_at FROM lesson_attempts WHERE user_id = $1 ORDER BY started_at DESC LIMIT 20"
FOLLOWERS = "SELECT follower_id FROM user_following WHERE following_id = $1"
LOCK_WALLET = "SELECT gems FROM user_wallets WHERE id = $1 FOR UPDATE"
# created_at is now(), the transaction's start: the client owns the wallet, so no other entry of it can start later and commit first
LEDGER_ENTRY = (
    "INSERT INTO wallet_transactions (wallet_id, user_id, transaction_type, amount, balance_after, source) "
    "VALUES ($1, $2, $3::transaction_type, $4, $5, 'workload')"
)
WALLET_BALANCE = (
    "UPDATE user_wallets SET gems = gems + $2, total_gems_earned = total_gems_earned + greatest($2, 0), "
    "total_gems_spent = total_gems_spent + greatest(-$2, 0), updated_at = now() WHERE id = $1"
)
PROGRESS = "UPDATE user_progress SET time_spent_seconds = time_spent_seconds + 30, attempts = attempts + 1, updated_at = now() WHERE id = $1"
# no XP: the user's total_xp and the week's league XP (both checked by `langlearn verify`) stay right
ATTEMPT = (
    "INSERT INTO lesson_attempts (user_id, lesson_id, started_at, finished_at, score, total_questions, correct_answers, time_spent_ms) "
    "VALUES ($1, $2, now() - interval '2 minutes', now(), 80, 10, 8, 120000)"
)
FOLLOW = "INSERT INTO user_following (follower_id, following_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id"
UNFOLLOW = "DELETE FROM user_following WHERE id = $1"
LOGIN = "UPDATE users SET last_login_at = now() WHERE id = $1"
# a Monday long before the seed's weeks: no XP that week and no ranked entry in its league, so verify's league checks hold
LEAGUE_ENTRY = "INSERT INTO leaderboard_entries (user_id, week_start, week_end, league) VALUES ($1, $2::date, $2::date + 6, 'bronze')"
FIRST_MONDAY = date(2000, 1, 3)


@dataclass
class Client:
    """The service in miniature on a connection of its own: the reads and writes of the tables migrations 6 and 7
    change, each statement timed, each error kept. It alone writes its learners' wallets, so its ledger entries
    are in ledger order by construction."""

    number: int
    connection: asyncpg.Connection
    world: World
    learners: list[Learner]
    rng: random.Random
    timings: list[Timing] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warmed: asyncio.Event = field(default_factory=asyncio.Event)
    iterations: int = 0

    async def prepare(self) -> None:
        await self.connection.execute(f"SET lock_timeout = '{WORKLOAD_LOCK_TIMEOUT}s'")
        await self.connection.execute(f"SET statement_timeout = '{2 * WORKLOAD_LOCK_TIMEOUT}s'")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.iteration()
            except (asyncpg.PostgresError, asyncpg.InterfaceError):
                pass  # recorded by `timed`; the transaction rolled back, the client carries on as a service would
            self.iterations += 1
            self.warmed.set()

    async def iteration(self) -> None:
        learner = self.rng.choice(self.learners)
        week_start, league = self.rng.choice(self.world.boards)
        await self.timed("read: a user's transactions", self.connection.fetch, USER_TRANSACTIONS, learner.user_id)
        await self.timed("read: a league page", self.connection.fetch, LEAGUE_PAGE, week_start, league)
        await self.timed("read: a user's lesson attempts", self.connection.fetch, USER_ATTEMPTS, learner.user_id)
        await self.timed("read: a user's followers", self.connection.fetch, FOLLOWERS, learner.user_id)
        await self.ledger_entry(learner)
        await self.timed("write: user_progress", self.connection.execute, PROGRESS, self.rng.choice(learner.progress_ids))
        await self.timed("write: a lesson attempt", self.connection.execute, ATTEMPT, learner.user_id, self.rng.choice(self.world.lesson_ids))
        followee = self.rng.choice([user for user in self.rng.sample(self.world.user_ids, 2) if user != learner.user_id])
        follow = await self.timed("write: follow", self.connection.fetchval, FOLLOW, learner.user_id, followee)
        if follow is not None:
            await self.timed("write: unfollow", self.connection.execute, UNFOLLOW, follow)
        await self.timed("write: users.last_login_at", self.connection.execute, LOGIN, learner.user_id)
        # each (client, iteration) its own Monday, going back in time: never the same (user, week) twice
        monday = FIRST_MONDAY - timedelta(weeks=self.iterations * CLIENTS + self.number + 1)
        await self.timed("write: a league entry", self.connection.execute, LEAGUE_ENTRY, learner.user_id, monday)

    async def ledger_entry(self, learner: Learner) -> None:
        """Earn or spend gems: lock the wallet row, then insert the entry with the balance it leaves and update the wallet.

        Even clients insert the entry first; odd ones update the wallet first, which holds ROW EXCLUSIVE on user_wallets
        while waiting for wallet_transactions: the reverse of the order in which migration 7's ADD FOREIGN KEY locks
        them, a deadlock PostgreSQL breaks after deadlock_timeout (1 s) by failing one side. The migration gives up
        first (its lock_timeout there is under 1 s) and its runner tries again, so no writer fails."""
        async with self.connection.transaction():
            gems = await self.timed("write: lock the wallet", self.connection.fetchval, LOCK_WALLET, learner.wallet_id)
            amount = -3 if gems >= 3 and self.rng.random() < 0.5 else 5
            kind = "spend" if amount < 0 else "earn"
            entry = (self.connection.execute, LEDGER_ENTRY, learner.wallet_id, learner.user_id, kind, amount, gems + amount)
            balance = (self.connection.execute, WALLET_BALANCE, learner.wallet_id, amount)
            steps = [("write: a ledger entry", entry), ("write: the wallet's balance", balance)]
            for label, (method, *args) in steps if self.number % 2 == 0 else reversed(steps):
                await self.timed(label, method, *args)

    async def timed(self, label: str, method, *args):
        started = time.monotonic()
        try:
            return await method(*args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            self.errors.append(f"client {self.number}, {label}: {type(error).__name__}: {error}")
            raise
        finally:
            self.timings.append(Timing(label, started, time.monotonic()))


@dataclass(frozen=True)
class UpgradeRun:
    """A `langlearn upgrade` (or `aerich upgrade`) run in a process of its own, with when it started each migration and when it ended."""

    returncode: int
    stdout: str
    stderr: str
    applying: dict[str, float]  # version -> when its "applying" line came
    ended: float


# Each runner's command with the lock timeout (Aerich's CLI has no option for it: an environment variable gives it)
UPGRADE_COMMANDS = {
    "langlearn": ([LANGLEARN, "upgrade", "--lock-timeout", f"{LOCK_TIMEOUT:g}"], {}),
    "aerich": (["aerich", "upgrade"], {"LANGLEARN_LOCK_TIMEOUT": f"{LOCK_TIMEOUT:g}"}),
}
HEAD_REACHED = {"langlearn": f"database at {HEAD} (head)", "aerich": f"Success upgrading to {HEAD}"}


async def watched_upgrade(database: str, *options: str, runner: str = "langlearn") -> UpgradeRun:
    command, environment = UPGRADE_COMMANDS[runner]
    process = await asyncio.create_subprocess_exec(
        *command, *options, cwd=REPO_ROOT, env={**os.environ, **environment, "DATABASE_URL": database},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    applying: dict[str, float] = {}
    lines: list[str] = []

    async def watch(stderr: asyncio.StreamReader) -> None:
        async for raw in stderr:  # both runners log "applying <version>" as they start each migration outside a transaction
            line = raw.decode().rstrip("\n")
            lines.append(line)
            if line.startswith("applying "):
                applying[line.split()[1]] = time.monotonic()

    stdout, _ = await asyncio.gather(process.stdout.read(), watch(process.stderr))
    returncode = await process.wait()
    return UpgradeRun(returncode, stdout.decode(), "\n".join(lines), applying, time.monotonic())


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- the tests -------------------------------------------------------------------------------------


def test_a_scale_seed_verifies_clean(server, scale_template):
    """Every check, the invariants and the new constraints included: the seed writes what the schema now enforces."""
    assert_verifies_clean(with_database(server.url, scale_template))


@pytest.mark.parametrize("runner", UPGRADE_COMMANDS)
async def test_no_workload_statement_waits_longer_than_the_lock_timeout_while_6_and_7_are_applied(populated_db, connect, runner):
    """Why LOCK_TIMEOUT bounds every wait: a workload statement blocks only when it queues behind a lock the migration
    has requested or holds. A request waits at most lock_timeout (else the statement fails, and so would the upgrade,
    which must succeed here); once granted, the lock is held for a catalog change only (ADD COLUMN, ADD CONSTRAINT ...
    NOT VALID, SET NOT NULL: `test_only_statements_that_block_no_writes_read_whole_tables`), while the builds and
    validations take locks that block no reads or writes. So a wait above LOCK_TIMEOUT means a lock held for work."""
    observer = await connect(populated_db)
    assert await current_version(observer) == BEFORE
    world = await World.read(observer)
    assert len(world.learners) == CLIENTS * LEARNERS_PER_CLIENT
    clients = [
        Client(n, await connect(populated_db), world, world.learners[n::CLIENTS], random.Random(n))  # disjoint learners
        for n in range(CLIENTS)
    ]
    for client in clients:
        await client.prepare()

    stop = asyncio.Event()
    running = [asyncio.create_task(client.run(stop)) for client in clients]
    try:
        await asyncio.wait_for(asyncio.gather(*(client.warmed.wait() for client in clients)), 60)  # every client in its loop
        upgrade = await asyncio.wait_for(watched_upgrade(populated_db, runner=runner), 300)
    finally:
        stop.set()
        await asyncio.gather(*running)

    assert upgrade.returncode == 0, upgrade.stderr
    assert HEAD_REACHED[runner] in upgrade.stdout
    errors = [error for client in clients for error in client.errors]
    assert errors == []
    timings = [timing for client in clients for timing in client.timings]
    start, end = upgrade.applying[HOT_PATH_INDEXES], upgrade.ended
    during = [timing for timing in timings if timing.overlaps(start, end)]
    windows = {"6": (start, upgrade.applying[LEDGER_ORDER]), "7": (upgrade.applying[LEDGER_ORDER], end)}
    ledger_writes = {
        name: sum(1 for timing in during if timing.label == "write: a ledger entry" and timing.overlaps(*window)) for name, window in windows.items()
    }
    latencies = [timing.elapsed for timing in during]
    slowest = max(during, key=lambda timing: timing.elapsed)
    print(
        f"\nworkload during the upgrade ({end - start:.1f} s; migration 6 {windows['6'][1] - windows['6'][0]:.1f} s, "
        f"7 {windows['7'][1] - windows['7'][0]:.1f} s): {len(during)} statements by {CLIENTS} clients, ledger entries {ledger_writes}, "
        f"max {max(latencies) * 1000:.1f} ms ({slowest.label}), p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
        f"median {percentile(latencies, 0.5) * 1000:.1f} ms"
    )
    # the workload really overlapped both migrations, writes included (so the assertions below are not vacuous)
    assert all(count >= 10 for count in ledger_writes.values()), ledger_writes
    assert slowest.elapsed < LOCK_TIMEOUT, f"{slowest.label} took {slowest.elapsed:.3f} s"

    assert await invalid_indexes(observer) == []
    # the workload's writes kept every invariant (its ledger entries, half of them written after ledger_seq appeared, included)
    assert_verifies_clean(populated_db)


# What PostgreSQL says at DEBUG1 when a statement reads a whole table, and the statements whose locks block no writes while they do.
SCAN = re.compile(r"^(building index|verifying table|validating foreign key constraint|rewriting table)")
BLOCKS_NO_WRITES = re.compile(r"CREATE (UNIQUE )?INDEX CONCURRENTLY|VALIDATE CONSTRAINT")


async def scanning_statements(connection: asyncpg.Connection, version: str) -> dict[int, list[str]]:
    """Send `version`'s upgrade statements one by one, as the runner does; return those that read a whole table, by number."""
    messages: list[str] = []
    connection.add_log_listener(lambda _, message: messages.append(message.message))
    await connection.execute("SET client_min_messages = debug1")
    scans = {}
    for number, statement in enumerate(HISTORY.get(version).statements("up"), 1):
        messages.clear()
        await connection.execute(statement)
        if found := [message for message in messages if SCAN.match(message)]:
            scans[number] = found
    return scans


async def test_only_statements_that_block_no_writes_read_whole_tables(empty_db, connect):
    """The workload test's bound is the lock timeout, and at this seed's size even a blocking build or validation ends
    within it; this holds at any size: every statement that scans or rewrites a table is a CREATE INDEX CONCURRENTLY or a
    VALIDATE CONSTRAINT, so the others (ADD COLUMN, ADD CONSTRAINT ... NOT VALID, SET DEFAULT, SET NOT NULL) hold their
    write-blocking locks for a catalog change only."""
    await history.upgrade(empty_db, to=BEFORE)
    connection = await connect(empty_db)
    for version in (HOT_PATH_INDEXES, LEDGER_ORDER):
        statements = HISTORY.get(version).statements("up")
        online = {number for number, statement in enumerate(statements, 1) if BLOCKS_NO_WRITES.search(statement)}

        scans = await scanning_statements(connection, version)

        assert {number: (statements[number - 1], found) for number, found in scans.items() if number not in online} == {}, version
        assert set(scans) == online, version  # and each build or validation was seen reading its table: the check sees scans


async def test_an_index_build_that_times_out_leaves_an_invalid_index_that_the_next_upgrade_rebuilds(populated_db, connect):
    observer = await connect(populated_db)
    number, total = statement_number(HOT_PATH_INDEXES, '"idx_lesson_attempt_lesson"')
    # a writer's transaction left open on lesson_attempts: CREATE INDEX CONCURRENTLY waits for it to end, past lock_timeout
    writer = await connect(populated_db)
    open_transaction = writer.transaction()
    await open_transaction.start()
    await writer.execute("UPDATE lesson_attempts SET hints_used = hints_used WHERE id = (SELECT id FROM lesson_attempts ORDER BY id LIMIT 1)")

    failed = upgrade_cli(populated_db)

    assert failed.returncode == 1, failed.stdout + failed.stderr
    line = failure_line(failed.stderr)
    assert f"migration {HOT_PATH_INDEXES} failed at statement {number} of {total}" in line
    assert "lock timeout" in line and f"the database stays at {BEFORE}" in line
    assert await invalid_indexes(observer) == ["idx_lesson_attempt_lesson"]
    assert {"kind": "invalid_index", "subject": "lesson_attempts.idx_lesson_attempt_lesson"} in [
        {"kind": finding["kind"], "subject": finding["subject"]} for finding in verify_findings(populated_db)
    ]
    await open_transaction.rollback()

    rerun = upgrade_cli(populated_db)

    assert rerun.returncode == 0, rerun.stderr
    assert await current_version(observer) == HEAD
    assert await invalid_indexes(observer) == []
    assert_verifies_clean(populated_db)


async def test_a_validation_that_meets_a_bad_row_fails_naming_its_constraint_and_the_upgrade_resumes_once_the_row_is_fixed(populated_db, connect):
    observer = await connect(populated_db)
    constraint = "leaderboard_entries_week_start_check"
    number, total = statement_number(LEDGER_ORDER, f'VALIDATE CONSTRAINT "{constraint}"')
    # before migration 7 nothing stops a week that starts on a Tuesday (2001-01-02); no XP that week, no rank
    entry = await observer.fetchval(
        "INSERT INTO leaderboard_entries (user_id, week_start, week_end, league) "
        "VALUES ((SELECT id FROM users ORDER BY id LIMIT 1), DATE '2001-01-02', DATE '2001-01-08', 'bronze') RETURNING id"
    )

    failed = upgrade_cli(populated_db)

    assert failed.returncode == 1, failed.stdout + failed.stderr
    line = failure_line(failed.stderr)
    assert f"migration {LEDGER_ORDER} failed at statement {number} of {total}" in line
    assert f'check constraint "{constraint}" of relation "leaderboard_entries" is violated by some row' in line
    assert await current_version(observer) == HOT_PATH_INDEXES  # 6 done and recorded, 7 not
    # this constraint and those whose VALIDATE comes after it were left NOT VALID; the ones before it were validated
    later = validated_from(LEDGER_ORDER, number)
    assert constraint in later and len(later) > 1
    unvalidated = {finding["subject"].split(".")[1] for finding in verify_findings(populated_db) if finding["kind"] == "unvalidated_constraint"}
    assert unvalidated == later

    await observer.execute("UPDATE leaderboard_entries SET week_start = DATE '2001-01-01', week_end = DATE '2001-01-07' WHERE id = $1", entry)
    rerun = upgrade_cli(populated_db)

    assert rerun.returncode == 0, rerun.stderr
    assert await current_version(observer) == HEAD
    assert not await observer.fetchval("SELECT count(*) FROM pg_constraint WHERE NOT convalidated")
    assert_verifies_clean(populated_db)


async def test_downgrade_to_5_returns_a_populated_database_to_migration_5s_catalog_and_the_upgrade_runs_again(populated_head_db, empty_db, head_db, connect):
    await history.upgrade(empty_db, to=BEFORE)  # what migration 5 builds, from nothing
    at_5 = await snapshot(await connect(empty_db))
    at_head = await snapshot(await connect(head_db))
    populated = await connect(populated_head_db)
    entries = await populated.fetchval("SELECT count(*) FROM wallet_transactions")

    downgraded = run_cli("langlearn", "downgrade", "--to", BEFORE, "--yes", database=populated_head_db)

    assert downgraded.returncode == 0, downgraded.stderr
    assert describe_difference(at_5, await snapshot(populated)) == ""
    assert await populated.fetchval("SELECT count(*) FROM wallet_transactions") == entries  # a column went, no row

    upgraded = upgrade_cli(populated_head_db)

    assert upgraded.returncode == 0, upgraded.stderr
    assert describe_difference(at_head, await snapshot(populated)) == ""
    assert_verifies_clean(populated_head_db)  # ledger_seq numbered again, in the order the ledger had


async def test_a_writer_taking_the_wallet_tables_in_the_other_order_is_never_the_deadlocks_victim(head_db, connect):
    """Migration 7's ADD FOREIGN KEY locks wallet_transactions, then user_wallets; a writer that updated a wallet and
    then inserts its entry takes them the other way round. The migration gives up on that statement before
    PostgreSQL's deadlock check would pick a victim, and its runner tries it again once the writer is done."""
    ok_run = run_cli(LANGLEARN, "downgrade", "--to", HOT_PATH_INDEXES, "--yes", database=head_db)
    assert ok_run.returncode == 0, ok_run.stderr
    writer, observer = await connect(head_db), await connect(head_db)
    user, wallet = uuid.uuid4(), uuid.uuid4()
    await writer.execute("INSERT INTO users (id, email, username, hashed_password) VALUES ($1, 'w@example.com', 'w', 'x')", user)
    await writer.execute("INSERT INTO user_wallets (id, user_id, gems, total_gems_earned) VALUES ($1, $2, 0, 0)", wallet, user)

    transaction = writer.transaction()
    await transaction.start()
    await writer.execute("UPDATE user_wallets SET gems = 5, total_gems_earned = 5 WHERE id = $1", wallet)  # ROW EXCLUSIVE on user_wallets
    upgrade = asyncio.create_task(watched_upgrade(head_db))
    deadline = time.monotonic() + 60
    # the migration holds wallet_transactions and waits for user_wallets, behind the writer
    while not await observer.fetchval(
        "SELECT count(*) FROM pg_locks WHERE relation = 'user_wallets'::regclass AND mode = 'ShareRowExclusiveLock' AND NOT granted"
    ):
        assert not upgrade.done() and time.monotonic() < deadline, "the migration never waited for user_wallets"
        await asyncio.sleep(0.02)
    started = time.monotonic()
    await writer.execute(  # ROW EXCLUSIVE on wallet_transactions, which the migration holds: the cycle
        "INSERT INTO wallet_transactions (wallet_id, user_id, transaction_type, amount, balance_after) VALUES ($1, $2, 'earn', 5, 5)", wallet, user
    )
    waited = time.monotonic() - started
    await transaction.commit()
    result = await upgrade

    assert waited < 1.0  # the migration let go before deadlock_timeout: the writer was never at risk
    assert result.returncode == 0, result.stderr
    assert f"{LEDGER_ORDER}: statement" in result.stderr and "did not get its lock" in result.stderr
    assert f"database at {HEAD} (head)" in result.stdout
