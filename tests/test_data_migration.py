"""The data migration recipe in tests/data_migration/ (docs/migrations.md, "Data migrations: a backfill recipe").

Its four files give lesson_attempts the course_id of their lesson: expand, backfill in batches,
constraints NOT VALID, validate. They run from a copy of the real history with the recipe after its
head (`recipe_history`), never from the shipped one, on the demo seed (some 1600 lesson attempts, as
many as its anchor day gives: in batches of 200 here, nine or so). A copy can retune the backfill
(`batch_size`, `pause`) so that a writer or a kill meets it midway.
"""

from __future__ import annotations

import ast
import asyncio
import os
import random
import re
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from langlearn import history
from langlearn.history.lock import lock_holder
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION
from tests.catalog import describe_difference, snapshot
from tests.conftest import LANGLEARN, REPO_ROOT, run_cli
from tests.test_migrations import HAND_WRITTEN_SQL

HEAD = history.version_files()
LAST = history.version_number(HEAD[-1])
RECIPE = Path(__file__).parent / "data_migration"
RECIPE_FILES = [RECIPE / name for name in history.version_files(RECIPE)]
# Numbered after the real head, whatever it is when this runs, so the recipe never collides with a real migration.
VERSIONS = {path.name: f"{LAST + n}_{path.name.split('_', 1)[1]}" for n, path in enumerate(RECIPE_FILES, 1)}
EXPAND, BACKFILL, NOT_VALID, VALIDATE = VERSIONS.values()
BATCH_SIZE = 200  # the demo seed's size of batch (the recipe's 1000 would make two)

# What the recipe leaves, compared with the head: all the catalog shows (the trigger goes with its function).
RECIPE_SCHEMA = "\n".join([
    "columns: gained ('lesson_attempts', 'course_id'): uuid NOT NULL",
    "constraints: gained ('lesson_attempts', 'lesson_attempts_course_id_fkey'): FOREIGN KEY (course_id) REFERENCES courses(id) ON DELETE CASCADE",
    "indexes: gained ('lesson_attempts', 'idx_lesson_attempt_course_started'): "
    "CREATE INDEX idx_lesson_attempt_course_started ON public.lesson_attempts USING btree (course_id, started_at)",
    "functions: gained ('lesson_attempts_course_id', 'lesson_attempts_course_id'): ",
])


def recipe_history(tmp_path: Path, *, batch_size: int = BATCH_SIZE, pause: float | None = None) -> str:
    """A copy of the real history with the recipe after its head, and its lint allowlist with the recipe's
    entries; returns its location. `batch_size` and `pause` retune the backfill of this copy only."""
    location = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_LOCATION, location, ignore=shutil.ignore_patterns("__pycache__"))
    # the recipe changes no model, so every file of it records the head's models state
    head_state = re.search(r"^MODELS_STATE = \(.*?^\)$", (location / APP_LABEL / HEAD[-1]).read_text(), re.S | re.M)
    assert head_state is not None
    for source in RECIPE_FILES:
        text = source.read_text()
        if VERSIONS[source.name] == BACKFILL:
            text = tuned(text, batch_size=batch_size, pause=pause)
        (location / APP_LABEL / VERSIONS[source.name]).write_text(f"{text}\n\n{head_state.group(0)}\n")
    entries = (RECIPE / "lint-allowlist.toml").read_text()
    for name, version in VERSIONS.items():
        entries = entries.replace(name, version)
    with (location / "lint-allowlist.toml").open("a") as allowlist:
        allowlist.write(f"\n{entries}")
    return str(location)


def tuned(source: str, *, batch_size: int | None, pause: float | None) -> str:
    """The backfill with other values for its constants (each must be there, once)."""
    for constant, value in (("batch_size CONSTANT integer", batch_size), ("pause CONSTANT interval", None if pause is None else f"'{pause} s'")):
        if value is not None:
            source, count = re.subn(rf"{constant} := [^;]+;", f"{constant} := {value};", source)
            assert count == 1, f"the backfill declares no {constant!r} any more"
    return source


async def progress(connection: asyncpg.Connection) -> tuple[int, int] | None:
    """(rows with course_id, rows without), or None before the expand step added the column."""
    try:
        row = await connection.fetchrow("SELECT count(course_id) AS filled, count(*) - count(course_id) AS missing FROM lesson_attempts")
    except asyncpg.UndefinedColumnError:
        return None
    return row["filled"], row["missing"]


async def wrong_rows(connection: asyncpg.Connection) -> int:
    """Lesson attempts whose course_id is not their lesson's, computed here independently of the recipe."""
    return await connection.fetchval(
        "SELECT count(*) FROM lesson_attempts a JOIN lessons l ON l.id = a.lesson_id WHERE a.course_id IS DISTINCT FROM l.course_id"
    )


def batches_of(total: int) -> list[int]:
    """The batches the key walk cuts `total` rows into, largest first."""
    full, rest = divmod(total, BATCH_SIZE)
    return [BATCH_SIZE] * full + [rest] * bool(rest)


async def batch_sizes(connection: asyncpg.Connection) -> list[int]:
    """How many lesson attempts each transaction wrote last: a row's xmin is the transaction that wrote its version."""
    rows = await connection.fetch("SELECT count(*) AS n FROM lesson_attempts GROUP BY xmin::text ORDER BY n DESC")
    return [row["n"] for row in rows]


async def rows_digest(connection: asyncpg.Connection) -> str:
    """The lesson attempts, every column the head has: unchanged by the recipe there and back."""
    return await connection.fetchval(
        "SELECT md5(string_agg(concat_ws('|', id, created_at, started_at, finished_at, score, passed, xp_earned, total_questions, "
        "correct_answers, hints_used, lives_remaining, time_spent_ms, avg_response_time_ms, device_type, idempotency_key, outcome, "
        "lesson_id, user_id), ',' ORDER BY id)) FROM lesson_attempts"
    )


async def applied(connection: asyncpg.Connection) -> list[str]:
    return [row["version"] for row in await connection.fetch("SELECT version FROM aerich WHERE app = $1 ORDER BY id", APP_LABEL)]


async def start_upgrade(database: str, location: str) -> asyncio.subprocess.Process:
    """`langlearn upgrade` in a process of its own, as a deploy step runs it."""
    return await asyncio.create_subprocess_exec(
        LANGLEARN, "upgrade", "--migrations", location, cwd=REPO_ROOT, env={**os.environ, "DATABASE_URL": database},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


# --- the backfill ----------------------------------------------------------------------------------


async def test_the_recipe_fills_every_row_in_committed_batches_and_ends_with_the_constraints(seeded_db, connect, tmp_path):
    location = recipe_history(tmp_path)
    observer = await connect(seeded_db)
    before = await snapshot(observer)
    total = await observer.fetchval("SELECT count(*) FROM lesson_attempts")
    assert total > 5 * BATCH_SIZE

    assert await history.upgrade(seeded_db, location=location, lock_timeout=5, statement_timeout=120) == list(VERSIONS.values())

    assert await wrong_rows(observer) == 0
    assert await progress(observer) == (total, 0)
    assert await batch_sizes(observer) == batches_of(total)  # one transaction per batch
    assert describe_difference(before, await snapshot(observer)) == RECIPE_SCHEMA


async def test_writers_wait_at_most_a_batch_while_the_recipe_runs_and_their_rows_come_out_right(seeded_db, connect, tmp_path):
    location = recipe_history(tmp_path, pause=0.1)  # the real batches, spread over a second or so
    observer = await connect(seeded_db)
    writers = [Writer(await connect(seeded_db), random.Random(n)) for n in range(2)]
    for writer in writers:
        await writer.prepare()

    migrator = await start_upgrade(seeded_db, location)
    finished = asyncio.create_task(migrator.communicate())
    tasks = [asyncio.create_task(writer.run_until(finished)) for writer in writers]
    seen: list[tuple[float, tuple[int, int] | None]] = []
    while not finished.done():
        seen.append((time.monotonic(), await progress(observer)))
        await asyncio.sleep(0.02)
    _, stderr = await finished
    await asyncio.gather(*tasks)  # a lock timeout or any other error of a writer fails the test here

    assert migrator.returncode == 0, stderr.decode()
    midway = [at for at, state in seen if state is not None and state[0] > 0 and state[1] > 0]
    assert midway, "no observation caught the backfill between its first and its last batch"
    during = [waited for writer in writers for at, waited in writer.timings if midway[0] <= at <= midway[-1]]
    assert len(during) > 50  # the writers really ran while the batches did
    longest = max(waited for writer in writers for _, waited in writer.timings)
    assert longest < Writer.LOCK_TIMEOUT, f"a writer's statement took {longest:.3f} s"
    assert sum(writer.inserted for writer in writers) > 0 and sum(writer.moved for writer in writers) > 0
    assert await wrong_rows(observer) == 0  # the trigger kept what the writers wrote, the backfill the rest


@dataclass
class Writer:
    """The running service in miniature: reads, updates, inserts and moves lesson attempts, timing each statement."""

    LOCK_TIMEOUT = 0.5  # seconds; a statement that waits longer fails, and the test with it

    connection: asyncpg.Connection
    rng: random.Random
    attempt_ids: list[uuid.UUID] = field(default_factory=list)
    lesson_ids: list[uuid.UUID] = field(default_factory=list)
    user_ids: list[uuid.UUID] = field(default_factory=list)
    own: list[uuid.UUID] = field(default_factory=list)  # the lesson attempts this writer inserted
    timings: list[tuple[float, float]] = field(default_factory=list)  # (when it ended, how long it took)
    inserted: int = 0
    moved: int = 0

    async def prepare(self) -> None:
        await self.connection.execute(f"SET lock_timeout = '{self.LOCK_TIMEOUT * 1000:.0f}ms'")
        self.attempt_ids = [row["id"] for row in await self.connection.fetch("SELECT id FROM lesson_attempts")]
        self.lesson_ids = [row["id"] for row in await self.connection.fetch("SELECT id FROM lessons")]
        self.user_ids = [row["id"] for row in await self.connection.fetch("SELECT id FROM users")]

    async def run_until(self, finished: asyncio.Task) -> None:
        while not finished.done():
            await self.timed("SELECT count(*) FROM lesson_attempts WHERE lesson_id = $1", self.rng.choice(self.lesson_ids))
            await self.timed("UPDATE lesson_attempts SET time_spent_ms = time_spent_ms + 1 WHERE id = $1", self.rng.choice(self.attempt_ids))
            self.own.append(await self.timed(
                "INSERT INTO lesson_attempts (lesson_id, user_id) VALUES ($1, $2) RETURNING id",
                self.rng.choice(self.lesson_ids), self.rng.choice(self.user_ids),
            ))
            self.inserted += 1
            # another lesson, maybe of another course: the trigger must follow (the service knows no course_id yet)
            await self.timed("UPDATE lesson_attempts SET lesson_id = $2 WHERE id = $1", self.rng.choice(self.own), self.rng.choice(self.lesson_ids))
            self.moved += 1

    async def timed(self, query: str, *args):
        started = time.monotonic()
        result = await self.connection.fetchval(query, *args)
        ended = time.monotonic()
        self.timings.append((ended, ended - started))
        return result


async def test_a_backfill_killed_midway_continues_where_it_stopped(seeded_db, connect, tmp_path):
    location = recipe_history(tmp_path, batch_size=100, pause=0.2)  # some 16 batches over more than three seconds
    observer = await connect(seeded_db)
    migrator = await start_upgrade(seeded_db, location)
    try:
        while (state := await progress(observer)) is None or state[0] < 200:
            assert migrator.returncode is None, (await migrator.communicate())[1].decode()
            await asyncio.sleep(0.02)
    finally:
        if migrator.returncode is None:
            migrator.send_signal(signal.SIGKILL)
        await migrator.wait()
    # its session ends once the server notices the dead client (runner.DEAD_CLIENT_CHECK), maybe after another batch
    deadline = time.monotonic() + 10
    while await lock_holder(observer) is not None:
        assert time.monotonic() < deadline, "the killed migrator's session never ended"
        await asyncio.sleep(0.05)

    filled, missing = await progress(observer)
    assert filled > 0 and missing > 0, "the kill did not land mid-backfill"
    assert await applied(observer) == [*HEAD, EXPAND]  # the backfill is not recorded: the next upgrade runs it again
    done_before = {row["id"]: row["xmin"] for row in await observer.fetch("SELECT id, xmin::text FROM lesson_attempts WHERE course_id IS NOT NULL")}

    rerun = run_cli(LANGLEARN, "upgrade", "--migrations", location, database=seeded_db)

    assert rerun.returncode == 0, rerun.stderr
    assert await applied(observer) == [*HEAD, *VERSIONS.values()]
    assert await wrong_rows(observer) == 0
    # the rows done before the kill were not written again: their row versions are the ones the first run wrote
    again = await observer.fetch("SELECT id, xmin::text FROM lesson_attempts WHERE id = ANY($1::uuid[])", list(done_before))
    assert {row["id"]: row["xmin"] for row in again} == done_before


# --- statement_timeout -----------------------------------------------------------------------------


@pytest.mark.parametrize("inside", ["", "PERFORM set_config('statement_timeout', '0', false);"], ids=["commits", "a SET inside"])
async def test_statement_timeout_bounds_a_do_block_as_a_whole(head_db, connect, inside):
    """Why the backfill lifts statement_timeout before its DO block: COMMITs inside do not re-arm it, nor does a SET."""
    connection = await connect(head_db)
    await connection.execute("SET statement_timeout = '500ms'")
    started = time.monotonic()
    with pytest.raises(asyncpg.QueryCanceledError, match="statement timeout"):
        await connection.execute(f"DO $$ BEGIN {inside} FOR i IN 1..4 LOOP PERFORM pg_sleep(0.2); COMMIT; END LOOP; END $$")
    assert time.monotonic() - started > 0.45  # cut in its third batch, though no batch came near 500 ms


async def test_the_backfill_outlasts_statement_timeout_and_gives_it_back(seeded_db, connect, tmp_path):
    location = recipe_history(tmp_path, pause=0.2)  # nine batches or so: about two seconds, against a one-second limit
    connection = await connect(seeded_db)
    started = time.monotonic()

    await history.migrate(connection, location=location, lock_timeout=5, statement_timeout=1)

    assert time.monotonic() - started > 1
    assert await wrong_rows(connection) == 0
    assert await connection.fetchval("SHOW statement_timeout") == "1s"  # the limit of the migrations after it, and of the session


# --- the contract steps ----------------------------------------------------------------------------


async def test_set_not_null_takes_the_validated_check_instead_of_a_scan(seeded_db, connect, tmp_path):
    location = recipe_history(tmp_path)
    await history.upgrade(seeded_db, location=location, to=NOT_VALID)
    connection = await connect(seeded_db)
    messages: list[str] = []
    connection.add_log_listener(lambda _, message: messages.append(message.message))
    await connection.execute("SET client_min_messages = debug1")  # PostgreSQL says what it verifies at DEBUG1

    assert (await history.migrate(connection, location=location)).done == (VALIDATE,)

    scans = [message for message in messages if message.startswith("verifying table")]
    assert scans == ['verifying table "lesson_attempts"']  # the CHECK's VALIDATE, and no other
    assert 'existing constraints on column "lesson_attempts.course_id" are sufficient to prove that it does not contain nulls' in messages


# --- there and back, for review ----------------------------------------------------------------------


MIGRATION_IMPORTS = {("tortoise", "BaseDBAsyncClient"), ("langlearn.history.aerich", "statement_by_statement")}


def test_the_recipe_follows_the_review_rules_of_the_history():
    """So that it can be copied into migrations/models as it is (docs/migrations.md, "Complete it by hand")."""
    for source in RECIPE_FILES:
        text = source.read_text()
        assert text.startswith('"""'), f"{source.name} opens with no docstring"
        imported = {
            (getattr(node, "module", None), alias.name)
            for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Import | ast.ImportFrom) for alias in node.names
        }
        # a migration is SQL, frozen when it is written: it imports at most Aerich's type and the sender of a migration outside a transaction
        assert imported <= MIGRATION_IMPORTS, f"{source.name} imports {sorted(map(str, imported - MIGRATION_IMPORTS))}"
        if HAND_WRITTEN_SQL.search(text):
            assert "-- hand edit:" in text, f"{source.name} holds SQL Aerich never writes and no hand-edit comment"


async def test_each_step_reverts_to_the_schema_before_it_and_keeps_every_row(seeded_db, connect, tmp_path):
    location = recipe_history(tmp_path)
    observer = await connect(seeded_db)
    rows = await rows_digest(observer)
    schemas = {HEAD[-1]: await snapshot(observer)}
    for version in VERSIONS.values():
        await history.upgrade(seeded_db, location=location, to=version)
        schemas[version] = await snapshot(observer)

    steps = [HEAD[-1], *VERSIONS.values()]
    for above, below in zip(reversed(steps[2:]), reversed(steps[1:-1])):
        assert await history.downgrade(seeded_db, to=below, location=location) == [above]
        assert describe_difference(schemas[below], await snapshot(observer)) == "", f"reverting {above}"
    reverted = run_cli(LANGLEARN, "downgrade", "--to", str(LAST), "--yes", "--migrations", location, database=seeded_db)

    assert reverted.returncode == 0, reverted.stderr
    assert describe_difference(schemas[HEAD[-1]], await snapshot(observer)) == ""
    assert await applied(observer) == HEAD
    assert await rows_digest(observer) == rows


async def test_the_printed_sql_is_the_recipe_and_psql_runs_it_to_the_same_end(seeded_db, connect, tmp_path):
    location = recipe_history(tmp_path)
    printed = run_cli(LANGLEARN, "migrations", "sql", "--from", str(LAST), "--migrations", location)
    assert printed.returncode == 0, printed.stderr
    script = printed.stdout
    for migration in history.load_history(location):
        if migration.version in VERSIONS.values():
            assert f"-- apply  {migration.version}  {migration.mode}" in script
            assert all(statement in script for statement in migration.statements("up"))
    (tmp_path / "recipe.sql").write_text(script)
    observer = await connect(seeded_db)
    before = await snapshot(observer)
    total = await observer.fetchval("SELECT count(*) FROM lesson_attempts")

    ran = run_cli(LANGLEARN, "server", "psql", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(tmp_path / "recipe.sql"), database=seeded_db)

    assert ran.returncode == 0, ran.stderr
    assert await applied(observer) == [*HEAD, *VERSIONS.values()]
    assert await wrong_rows(observer) == 0
    assert await batch_sizes(observer) == batches_of(total)
    assert describe_difference(before, await snapshot(observer)) == RECIPE_SCHEMA


def test_lint_finds_nothing_new_in_the_recipe(tmp_path):
    location = recipe_history(tmp_path)

    linted = run_cli(LANGLEARN, "migrations", "lint", "--migrations", location, *(str(LAST + n) for n in range(1, len(VERSIONS) + 1)))

    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout.splitlines()[-1] == f"no new finding in {len(VERSIONS)} migrations (1 allowed)"
    assert "stale" not in linted.stdout + linted.stderr
