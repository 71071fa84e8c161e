"""Each way a migration fails under the runner: a failing statement, a lock timeout, a statement timeout and a
killed connection, up and down, through the CLI (`langlearn upgrade`/`downgrade` as a user runs them) and through
the library's `upgrade()`/`downgrade()` with their defaults (no timeouts of their own: the server's apply). Each
ends in one line, the database's own words for the error, and the database is where that line says.

The failures are real: another connection holds the table lock, the server's timeout cancels the statement,
`pg_terminate_backend` ends the migrating session. The failing migration is one more file in a copy of the
history, after its head."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from langlearn import history
from langlearn.databases import database_name
from langlearn.errors import StartupError
from langlearn.history.lock import lock_holder
from tests.conftest import LANGLEARN, run_cli
from tests.test_migration_tools import copy_history, refused
from tests.test_startup import database_contents

HISTORY = history.load_history()
HEAD = HISTORY.versions[-1]
TROUBLE = f"{len(HISTORY)}_20990101000000_trouble.py"
MARKER = "trouble_marker"  # the table the migration's first statement creates (its downgrade's first drops it)
SLEEP = "SELECT pg_sleep(60)"  # the statement the killed session runs

# each failure: the statement that fails (second of two), and the database's words for it
FAILURES = {
    "failing statement": ("SELECT 1 / 0", "division by zero"),
    "lock timeout": ('LOCK TABLE "seed_runs" IN ACCESS EXCLUSIVE MODE', "canceling statement due to lock timeout"),
    "statement timeout": ("SELECT pg_sleep(30)", "canceling statement due to statement timeout"),
    # asyncpg's words for a connection lost mid-statement, around the server's
    "killed connection": (SLEEP, "connection was closed in the middle of operation: terminating connection due to administrator command"),
}
# what the reason adds for a timeout: the CLI sets its own (here 0.5 s), the library functions none
CLI_TIMEOUT = "0.5"
SERVER_TIMEOUT = "500ms"  # ALTER DATABASE … SET, for the library's runs
EXPLAINED = {
    ("lock timeout", "cli"): f" (another session held a table lock longer than lock_timeout={CLI_TIMEOUT} s; retry when it is done, or raise the lock timeout)",
    ("lock timeout", "library"): f" (another session held a table lock longer than the server's lock_timeout of {SERVER_TIMEOUT}, as none was given; "
    "retry when it is done, or raise the lock timeout)",
    ("statement timeout", "cli"): f" (a statement ran longer than statement_timeout={CLI_TIMEOUT} s; raise it if the migration needs longer)",
    ("statement timeout", "library"): f" (a statement ran longer than the server's statement_timeout of {SERVER_TIMEOUT}, as none was given; "
    "raise it if the migration needs longer)",
}


def history_with_trouble(tmp_path: Path, *, up: str = "", down: str = "", transactional: bool = True) -> str:
    """A copy of the history with one more migration: it creates (drops, down) the marker table, then runs `up` (`down`)."""
    location, folder = copy_history(tmp_path)
    head_state = re.search(r"^MODELS_STATE = \(.*?^\)$", (folder / HEAD).read_text(), re.S | re.M)
    assert head_state is not None
    (folder / TROUBLE).write_text(
        f'"""A migration that fails where a test says."""\n\nRUN_IN_TRANSACTION = {transactional}\n\n\n'
        f'async def upgrade(db) -> str:\n    return """\n        CREATE TABLE "{MARKER}" (id INT);\n        {up + ";" if up else ""}"""\n\n\n'
        f'async def downgrade(db) -> str:\n    return """\n        DROP TABLE "{MARKER}";\n        {down + ";" if down else ""}"""\n\n\n'
        f"{head_state.group(0)}\n"  # the models do not change
    )
    return location


async def kill_when_running(observer: asyncpg.Connection, statement: str) -> None:
    """pg_terminate_backend of the session that runs `statement`, as soon as it runs it."""
    for _ in range(1800):
        pid = await observer.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
            f"%{statement}%",
        )
        if pid is not None:
            assert await observer.fetchval("SELECT pg_terminate_backend($1)", pid)
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no session ran {statement!r} within 90 s")


async def run_failing(entry: str, direction: str, database: str, location: str, kind: str, during: Callable[[], Awaitable[None]] | None = None) -> str:
    """Run the failing upgrade (or downgrade) through `entry` while `during` runs; return its one line, asserting
    that it is one line, the command's only error, with no traceback."""
    beside = asyncio.ensure_future(during()) if during else None
    try:
        if entry == "cli":
            timeouts = {"lock timeout": ["--lock-timeout", CLI_TIMEOUT], "statement timeout": ["--statement-timeout", CLI_TIMEOUT]}.get(kind, [])
            command = ["upgrade"] if direction == "up" else ["downgrade", "--steps", "1", "--yes"]
            result = await asyncio.to_thread(run_cli, LANGLEARN, *command, "--migrations", location, *timeouts, database=database, timeout=90)
            line = refused(result)
            assert line.startswith("error: ") and "TypeError" not in result.stderr
            return line.removeprefix("error: ")
        run = history.upgrade(database, location=location) if direction == "up" else history.downgrade(database, to=HEAD, location=location)
        with pytest.raises(StartupError) as failed:  # not a TypeError from the message, nor the driver's own error
            await run
        message = str(failed.value)
        assert "\n" not in message
        return message
    finally:
        if beside is not None:  # what happened instead shows in the line, if it did not get its chance
            beside.cancel()  # and awaited: it may still be using the observer's connection
            with contextlib.suppress(asyncio.CancelledError):
                await beside


@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("entry", ["cli", "library"])
@pytest.mark.parametrize("kind", list(FAILURES))
async def test_a_failed_migration_ends_in_the_databases_one_line_and_leaves_the_database_where_it_says(head_db, connect, tmp_path, kind, entry, direction):
    statement, words = FAILURES[kind]
    location = history_with_trouble(tmp_path, **{direction: statement})
    observer = await connect(head_db)
    if direction == "down":
        assert await history.upgrade(head_db, location=location) == [TROUBLE]
    if entry == "library" and kind.endswith("timeout"):  # upgrade() and downgrade() set none: the database's own apply
        setting = kind.replace(" ", "_")
        await observer.execute(f'ALTER DATABASE "{database_name(head_db)}" SET {setting} = \'{SERVER_TIMEOUT}\'')
    before = await database_contents(observer)

    holding = None
    if kind == "lock timeout":  # a long read of the table the migration locks
        blocker = await connect(head_db)
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute('LOCK TABLE "seed_runs" IN ACCESS SHARE MODE')
    killer = (lambda: kill_when_running(observer, SLEEP)) if kind == "killed connection" else None
    try:
        line = await run_failing(entry, direction, head_db, location, kind, killer)
    finally:
        if holding is not None:
            await holding.rollback()

    stays_at, command = (HEAD, "upgrade") if direction == "up" else (TROUBLE, "downgrade")
    verb = "migration" if direction == "up" else "the downgrade of"
    assert line == (
        f"{verb} {TROUBLE} failed at statement 2 of 2 and was rolled back: {words}{EXPLAINED.get((kind, entry), '')}; "
        f"the database stays at {stays_at}; fix the cause, then run `langlearn {command}`"
    )
    assert await database_contents(observer) == before  # rolled back: schema and recorded versions as they were
    assert (await history.read_state(observer, location=location)).current == stays_at
    assert await lock_holder(observer) is None


@pytest.mark.parametrize("entry", ["cli", "library"])
async def test_a_killed_migration_outside_a_transaction_keeps_what_ran_and_is_not_recorded(head_db, connect, tmp_path, entry):
    location = history_with_trouble(tmp_path, up=SLEEP, transactional=False)
    observer = await connect(head_db)

    line = await run_failing(entry, "up", head_db, location, "killed connection", lambda: kill_when_running(observer, SLEEP))

    assert line == (
        f"migration {TROUBLE} failed at statement 2 of 2; it runs outside a transaction, so the 1 statement(s) before it stay applied "
        f"and it is not recorded: {FAILURES['killed connection'][1]}; the database stays at {HEAD}; "
        "fix the cause, then run `langlearn upgrade`"
    )
    assert await observer.fetchval("SELECT to_regclass($1) IS NOT NULL", MARKER)
    assert (await history.read_state(observer, location=location)).current == HEAD
    assert await lock_holder(observer) is None
