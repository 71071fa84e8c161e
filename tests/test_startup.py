"""The startup context manager and `langlearn upgrade|check|status`: the migration lock, the check, the retries.

Concurrency is tested with real processes started at once (a barrier on stdin), failures with a
copy of the migration history plus a broken migration, timeouts with real blocking sessions.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from langlearn import history
from langlearn.databases import with_database
from langlearn.errors import DatabaseAhead, DatabaseBehind, MigrationFailed, MigrationLockTimeout, SchemaDrift, StartupError
from langlearn.history.lock import MIGRATION_LOCK_KEY, lock_holder
from langlearn.models import Course
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION, ConfigError
from langlearn.startup import StartupOptions, connect, database, prepare
from langlearn.urls import asyncpg_url
from tests.catalog import snapshot
from tests.conftest import LANGLEARN, REPO_ROOT, run_cli

HEAD = history.version_files()
LAST = history.version_number(HEAD[-1])

# A replica in miniature: imports everything, says "armed", waits for "go" on stdin, then starts in
# `apply` mode, runs one query through the models and reports what it applied.
STARTER = """
import asyncio, json, sys
from langlearn.startup import database
from langlearn.models import Course

async def main():
    async with database(migrate="apply", migrations_location=sys.argv[1], lock_wait=60) as startup:
        print(json.dumps({"applied": list(startup.applied), "courses": await Course.all().count()}), flush=True)

print("armed", flush=True)
sys.stdin.readline()
asyncio.run(main())
"""


def python_env(database: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database}


async def start_at_once(count: int, database: str, location: str = MIGRATIONS_LOCATION, timeout: float = 120):
    """Start `count` starters, release them together once all are armed; return (returncode, stdout, stderr)s."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", STARTER, location, cwd=REPO_ROOT, env=python_env(database),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(count)
    ]
    try:
        for process in processes:
            assert (await asyncio.wait_for(process.stdout.readline(), timeout)).strip() == b"armed"
        for process in processes:
            process.stdin.write(b"go\n")
        results = await asyncio.wait_for(asyncio.gather(*(process.communicate() for process in processes)), timeout)
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
    return [(process.returncode, out.decode(), err.decode()) for process, (out, err) in zip(processes, results, strict=True)]


async def aerich_rows(connection) -> dict[str, int]:
    rows = await connection.fetch("SELECT version, count(*) AS n FROM aerich WHERE app = $1 GROUP BY version", APP_LABEL)
    return {row["version"]: row["n"] for row in rows}


async def database_contents(connection) -> tuple:
    """The whole schema and the recorded versions: everything a migration could change."""
    return await snapshot(connection, include_aerich=True), await aerich_rows(connection)


def history_with(tmp_path: Path, name: str, sql: str) -> str:
    """A copy of the migrations folder with one extra migration after the head; returns its location."""
    location = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_LOCATION, location, ignore=shutil.ignore_patterns("__pycache__"))
    head_state = re.search(r"^MODELS_STATE = \(.*?^\)$", (location / APP_LABEL / HEAD[-1]).read_text(), re.S | re.M)
    assert head_state is not None
    (location / APP_LABEL / f"{LAST + 1}_20990101000000_{name}.py").write_text(
        f'RUN_IN_TRANSACTION = True\n\n\nasync def upgrade(db) -> str:\n    return """{sql}"""\n\n\n'
        f'async def downgrade(db) -> str:\n    return ""\n\n\n{head_state.group(0)}\n'  # the models do not change
    )
    return str(location)


BROKEN = """
        CREATE TABLE half_done (id INT);
        ALTER TABLE users ADD COLUMN half_done INT;
        SELECT 1 / 0;
"""


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def error_line(stderr: str) -> str:
    """The one line a failed command printed (asserting it is the only one)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- apply: the lock ---------------------------------------------------------------------------


async def test_eight_processes_applying_at_once_apply_every_migration_exactly_once(empty_db, connect):
    results = await start_at_once(8, empty_db)

    for returncode, _, stderr in results:
        assert returncode == 0, stderr
        assert "Error" not in stderr and "Traceback" not in stderr, stderr
    reports = [json.loads(stdout) for _, stdout, _ in results]
    assert all(report["courses"] == 0 for report in reports)  # every one became ready
    appliers = [report["applied"] for report in reports if report["applied"]]
    assert appliers == [HEAD]  # one applied the whole history, the seven others found nothing to do
    assert await aerich_rows(await connect(empty_db)) == {version: 1 for version in HEAD}


async def test_apply_on_a_database_at_head_applies_nothing_and_initialises_the_models(head_db):
    async with database(head_db, migrate="apply") as startup:
        assert startup.applied == ()
        assert startup.state.at_head and startup.state.current == HEAD[-1]
        assert startup.lock_waited == 0.0
        assert await Course.all().count() == 0
    with pytest.raises(RuntimeError, match="No TortoiseContext is currently active"):  # left: the models are closed
        await Course.all().count()


async def test_a_failing_migration_is_rolled_back_releases_the_lock_and_leaves_the_database_as_before(head_db, connect, tmp_path):
    location = history_with(tmp_path, "broken", BROKEN)
    observer = await connect(head_db)
    before = await database_contents(observer)

    with pytest.raises(MigrationFailed) as refused:
        await prepare(head_db, "apply", StartupOptions(migrations=location))
    assert (refused.value.version, refused.value.statement, refused.value.statements) == (f"{LAST + 1}_20990101000000_broken.py", 3, 3)
    assert refused.value.at == HEAD[-1]

    assert str(refused.value) == (
        f"migration {LAST + 1}_20990101000000_broken.py failed at statement 3 of 3 and was rolled back: division by zero; "
        f"the database stays at {HEAD[-1]}; fix the cause, then run `langlearn upgrade`"
    )
    assert await lock_holder(observer) is None
    assert await database_contents(observer) == before


async def test_every_starter_reports_a_failing_migration_and_none_hangs(head_db, connect, tmp_path):
    location = history_with(tmp_path, "broken", BROKEN)
    observer = await connect(head_db)
    before = await database_contents(observer)

    results = await start_at_once(3, head_db, location, timeout=60)

    for returncode, stdout, stderr in results:
        assert returncode == 1 and stdout == ""
        assert stderr.strip().splitlines()[-1].startswith(
            f"langlearn.errors.MigrationFailed: migration {LAST + 1}_20990101000000_broken.py failed at statement 3 of 3 and was rolled back: division by zero"
        ), stderr
    assert await database_contents(observer) == before


async def test_apply_names_the_lock_holder_when_the_wait_times_out(head_db, connect):
    holder = await asyncpg.connect(asyncpg_url(head_db), server_settings={"application_name": "deploy-42"})
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        started = time.monotonic()
        with pytest.raises(MigrationLockTimeout) as refused:
            await prepare(head_db, "apply", StartupOptions(lock_wait=0.5))
        assert time.monotonic() - started < 5
        assert refused.value.waited == 0.5 and f"pid {holder.get_server_pid()}" in (refused.value.holder or "")
        message = str(refused.value)
        pid = holder.get_server_pid()
        assert message.startswith(f"timed out after 0.5 s waiting for the migration lock, held by pid {pid} (application_name 'deploy-42', ")
        assert "connected since " in message and "pg_terminate_backend(pid)" in message
    finally:
        await holder.close()


async def test_apply_waits_for_the_lock_then_proceeds_when_it_is_released(head_db):
    holder = await asyncpg.connect(asyncpg_url(head_db))
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        waiting = asyncio.create_task(prepare(head_db, "apply", StartupOptions(lock_wait=30)))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        startup = await asyncio.wait_for(waiting, 10)
    finally:
        await holder.close()
    assert startup.lock_waited >= 0.4 and startup.state.at_head


async def test_migration_ddl_gives_up_after_lock_timeout_instead_of_queueing(empty_db, connect):
    await history.upgrade(empty_db, to=3)  # migration 4 adds tables referencing users
    blocker = await connect(empty_db)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")  # a long transaction on a hot table
    started = time.monotonic()
    try:
        with pytest.raises(StartupError) as refused:
            await prepare(empty_db, "apply", StartupOptions(lock_timeout=0.5))
    finally:
        await transaction.rollback()
    assert time.monotonic() - started < 10
    assert str(refused.value).startswith(
        f"migration {HEAD[4]} failed at statement 12 of 56 and was rolled back: canceling statement due to lock timeout "
        "(another session held a table lock longer than lock_timeout=0.5 s"
    )
    assert (await history.read_state(blocker)).pending == HEAD[4:]


async def test_a_migration_statement_running_past_statement_timeout_is_cancelled(head_db, tmp_path):
    location = history_with(tmp_path, "slow", "SELECT pg_sleep(30);")
    started = time.monotonic()
    with pytest.raises(StartupError, match=r"canceling statement due to statement timeout \(a statement ran longer than statement_timeout=0.5 s"):
        await prepare(head_db, "apply", StartupOptions(migrations=location, statement_timeout=0.5))
    assert time.monotonic() - started < 10


async def test_apply_refuses_a_database_ahead_of_the_code(head_db, connect):
    await (await connect(head_db)).execute(
        "INSERT INTO aerich (version, app, content) VALUES ('99_20990101000000_future.py', $1, '{}')", APP_LABEL
    )
    with pytest.raises(DatabaseAhead, match=r"^database is ahead of the code: it recorded 99_20990101000000_future.py, ") as refused:
        await prepare(head_db, "apply")
    assert refused.value.unknown == ("99_20990101000000_future.py",)


# --- check ---------------------------------------------------------------------------------------


async def test_check_starts_on_a_clean_database_at_head(head_db):
    result = run_cli("langlearn", "check", database=head_db)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"database at {HEAD[-1]} (head); schema matches the models\n", "")


async def test_check_initialises_the_models_and_applies_nothing(head_db, connect):
    async with database(head_db, migrate="check") as startup:
        assert startup.applied == () and startup.state.at_head
        assert await Course.all().count() == 0


async def test_check_refuses_a_database_behind_naming_the_pending_versions(empty_db, connect):
    await history.upgrade(empty_db, to=2)
    pending = HEAD[3:]
    result = run_cli("langlearn", "check", database=empty_db)
    assert result.returncode == 1 and result.stdout == ""
    assert error_line(result.stderr) == (  # one short line: the count and the first; `langlearn status` lists the rest
        f"error: database is behind the code: {len(pending)} migration(s) pending, the first {pending[0]}; "
        "run `langlearn upgrade` (`langlearn status` lists them)"
    )
    assert await aerich_rows(await connect(empty_db)) == {version: 1 for version in HEAD[:3]}  # applied nothing


async def test_check_refuses_an_empty_database(empty_db):
    with pytest.raises(DatabaseBehind, match=rf"^database is behind the code: {len(HEAD)} migration\(s\) pending, the first {HEAD[0]}; .*migrate='apply'$") as refused:
        async with database(empty_db, migrate="check"):
            pass
    assert refused.value.pending == tuple(HEAD)


async def test_check_refuses_a_database_ahead_of_the_code(head_db, connect):
    await (await connect(head_db)).execute(
        "INSERT INTO aerich (version, app, content) VALUES ('99_20990101000000_future.py', $1, '{}')", APP_LABEL
    )
    result = run_cli("langlearn", "check", database=head_db)
    assert result.returncode == 1
    assert error_line(result.stderr) == (
        "error: database is ahead of the code: it recorded 99_20990101000000_future.py, which this code does not have; "
        "deploy the code that has it, or run `langlearn downgrade` with that code"
    )


async def test_check_refuses_a_database_whose_schema_drifted(head_db, connect):
    await (await connect(head_db)).execute("DROP INDEX idx_course_level_published")
    result = run_cli("langlearn", "check", database=head_db)
    assert result.returncode == 1
    line = error_line(result.stderr)
    assert line.startswith("error: database schema drifted from the models (1 error(s)): [1] ")
    assert "idx_course_level_published" in line
    assert line.endswith("; run `langlearn verify` for the full report")


async def test_check_after_a_locked_upgrade_refuses_a_schema_changed_by_hand_since(empty_db, connect):
    upgraded = await prepare(empty_db, "apply")
    assert upgraded.applied == tuple(HEAD) and not upgraded.warnings
    await prepare(empty_db, "check")

    await (await connect(empty_db)).execute("DROP INDEX idx_course_level_published")  # by hand, after the upgrade
    with pytest.raises(SchemaDrift, match=r"^database schema drifted from the models \(1 error\(s\)\): \[1\] .*idx_course_level_published") as refused:
        await prepare(empty_db, "check")
    assert [(finding.kind, finding.subject) for finding in refused.value.findings] == [("missing_index", "courses.idx_course_level_published")]


async def test_check_tolerates_schema_warnings(head_db, connect):
    await (await connect(head_db)).execute("CREATE TABLE scratch_notes (id INT)")  # extra table: a warning
    async with database(head_db, migrate="check") as startup:
        assert any("scratch_notes" in finding.subject for finding in startup.warnings)


# --- connecting ------------------------------------------------------------------------------------


async def test_unreachable_server_fails_after_bounded_retries_with_one_line():
    port = unused_port()
    started = time.monotonic()
    result = run_cli("langlearn", "check", "--connect-timeout", "1.5", database=f"postgres://postgres@127.0.0.1:{port}/langlearn")
    elapsed = time.monotonic() - started
    assert result.returncode == 2 and result.stdout == ""
    line = error_line(result.stderr)
    assert line.startswith(f"error: cannot reach PostgreSQL at 127.0.0.1:{port} (")
    attempts = int(line.rsplit("(gave up after ", 1)[1].split()[0])
    assert attempts >= 3 and line.endswith(" s)")
    assert 1.5 <= elapsed < 15


async def test_connect_retries_until_the_server_accepts(head_db):
    """A proxy that starts listening late stands for a server that is still starting."""
    target = urlsplit(head_db)
    port = unused_port()

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def forward(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer), return_exceptions=True)

    async def open_late():
        await asyncio.sleep(1.0)
        return await asyncio.start_server(forward, "127.0.0.1", port)

    opening = asyncio.create_task(open_late())
    started = time.monotonic()
    connection = await connect(target._replace(netloc=f"{target.username}@127.0.0.1:{port}").geturl(), timeout=15)
    try:
        assert time.monotonic() - started >= 1.0
        assert await connection.fetchval("SELECT current_database()") == target.path.lstrip("/")
    finally:
        await connection.close()
        proxy = await opening
        proxy.close()


async def test_a_missing_database_fails_at_once_without_retrying(server):
    missing = with_database(server.url, "no_such_database_here")
    started = time.monotonic()
    with pytest.raises(ConfigError, match="database 'no_such_database_here' does not exist"):
        await connect(missing, timeout=30)
    assert time.monotonic() - started < 5


# --- the CLI ---------------------------------------------------------------------------------------


async def test_cli_upgrade_applies_the_history_then_finds_nothing_to_do(empty_db):
    first = run_cli("langlearn", "upgrade", database=empty_db)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"applied {len(HEAD)} migration(s); database at {HEAD[-1]} (head); schema matches the models\n"
    assert first.stderr == "".join(f"applying {v}\n" for v in HEAD)

    again = run_cli("langlearn", "upgrade", database=empty_db)
    assert (again.returncode, again.stdout, again.stderr) == (0, f"nothing to apply; database at {HEAD[-1]} (head); schema matches the models\n", "")


async def test_cli_status_lists_versions_and_the_lock_holder(empty_db):
    await history.upgrade(empty_db, to=LAST - 1)
    holder = await asyncpg.connect(asyncpg_url(empty_db), server_settings={"application_name": "release-7"})
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        result = run_cli("langlearn", "status", database=empty_db)
    finally:
        await holder.close()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[: len(HEAD)] == [f"applied   {v}" for v in HEAD[:-1]] + [f"pending   {HEAD[-1]}"]
    assert lines[len(HEAD)].startswith(f"migration lock: held by pid {holder.get_server_pid()} (application_name 'release-7'")
    assert lines[-1] == "1 pending: run `langlearn upgrade`"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["upgrade", "--lock-wait", "0"], "argument --lock-wait: '0' must be a finite number of seconds above 0"),
        (["upgrade", "--lock-wait", "inf"], "argument --lock-wait: 'inf' must be a finite number of seconds above 0"),
        (["check", "--connect-timeout", "soon"], "argument --connect-timeout: 'soon' is not a number of seconds"),
        (["migrate"], "argument COMMAND: invalid choice: 'migrate'"),
    ],
)
async def test_cli_rejects_bad_arguments_with_exit_code_2(head_db, args, expected):
    result = run_cli("langlearn", *args, database=head_db)
    assert result.returncode == 2
    assert expected in result.stderr.splitlines()[-1]


async def test_cli_rejects_a_malformed_database_url_with_exit_code_2():
    result = run_cli("langlearn", "check", database="mysql://root@db/langlearn")
    assert result.returncode == 2
    assert error_line(result.stderr) == (
        "error: DATABASE_URL scheme 'mysql' is not PostgreSQL; expected postgres://user:password@host:port/database"
    )


# --- a service's own models beside these ------------------------------------------------------

SERVICE_MODELS = '''
from tortoise import fields
from tortoise.models import Model


class Bookmark(Model):
    """A row of the embedding service's own app, pointing at one of langlearn's users."""

    id = fields.IntField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="bookmarks", on_delete=fields.CASCADE)
    note = fields.CharField(max_length=100)

    class Meta:
        table = "svc_bookmarks"
'''
SERVICE_TABLE_SQL = """CREATE TABLE svc_bookmarks (id SERIAL PRIMARY KEY, user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                                            note VARCHAR(100) NOT NULL)"""


@pytest.fixture
def service_app(tmp_path, monkeypatch):
    module = f"svc_models_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(SERVICE_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return {"svc": {"models": [module]}}


async def test_a_services_own_app_shares_the_connection_and_is_left_out_of_the_check(head_db, connect, service_app):
    await (await connect(head_db)).execute(SERVICE_TABLE_SQL)  # the service's own migration
    async with database(head_db, migrate="check", apps=service_app, global_fallback=False) as startup:
        assert startup.warnings == ()
        from tortoise import Tortoise

        from langlearn.models import User

        bookmark_model = Tortoise.apps["svc"]["Bookmark"]
        assert await Course.all().count() == 0  # langlearn's models work beside it

        owner = await User.create(email="svc@example.com", username="svc", hashed_password="$argon2id$x")
        await bookmark_model.create(user=owner, note="lesson 3")
        assert await bookmark_model.filter(user__username="svc").count() == 1
    # without telling startup about the app, its table is an extra table of the models' schema
    async with database(head_db, migrate="check", global_fallback=False) as plain:
        assert [finding.kind for finding in plain.warnings] == ["extra_table"]
        assert plain.warnings[0].subject == "svc_bookmarks"


async def test_apply_with_a_services_app_migrates_only_langlearns_app(empty_db, connect, service_app):
    async with database(empty_db, migrate="apply", apps=service_app, global_fallback=False) as startup:
        assert startup.applied == tuple(history.version_files())
    connection = await connect(empty_db)
    assert await connection.fetchval("SELECT to_regclass('svc_bookmarks')") is None  # the service's schema is its own
    assert {row["app"] for row in await connection.fetch("SELECT DISTINCT app FROM aerich")} == {APP_LABEL}


async def test_an_app_named_like_langlearns_is_refused(head_db):
    with pytest.raises(ConfigError, match="belongs to langlearn's models"):
        async with database(head_db, apps={"models": {"models": ["x"]}}):
            pass


# --- a migrator killed or interrupted mid-migration ---------------------------------------------

SLOW_STATEMENT_RUNNING = """
    SELECT count(*) FROM pg_stat_activity
    WHERE query LIKE '%pg_sleep(60)%' AND state = 'active' AND pid <> pg_backend_pid() AND datname = current_database()
"""


async def test_a_killed_migrator_stops_its_migration_and_an_immediate_rerun_proceeds(head_db, connect, tmp_path):
    """kill -9 of `langlearn upgrade` during a slow statement: the server ends the statement and its locks
    at once (client_connection_check_interval), so the next upgrade does not wait on an orphan."""
    location = history_with(tmp_path, "slow", "ALTER TABLE users ADD COLUMN slow_marker INT; SELECT pg_sleep(60);")
    migrator = subprocess.Popen(
        [LANGLEARN, "upgrade", "--migrations", location], cwd=REPO_ROOT, env=python_env(head_db),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    watcher = await connect(head_db)
    deadline = time.monotonic() + 60
    while not await watcher.fetchval(SLOW_STATEMENT_RUNNING):
        assert migrator.poll() is None and time.monotonic() < deadline, "the slow migration never started"
        await asyncio.sleep(0.1)
    migrator.kill()
    migrator.wait()
    killed_at = time.monotonic()
    while await watcher.fetchval(SLOW_STATEMENT_RUNNING):
        assert time.monotonic() - killed_at < 5, "the orphaned migration statement kept running after its client died"
        await asyncio.sleep(0.1)
    assert await lock_holder(watcher) is None
    assert not await watcher.fetchval("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'slow_marker'")
    # the operator reruns at once, the migration now without its sleep: it needs the lock on users the orphan held
    fixed = history_with(tmp_path / "fixed", "slow", "ALTER TABLE users ADD COLUMN slow_marker INT;")
    rerun = run_cli(LANGLEARN, "upgrade", "--lock-wait", "5", "--lock-timeout", "2", "--migrations", fixed, database=head_db, timeout=30)
    assert rerun.returncode == 0 and rerun.stdout.startswith("applied 1 migration(s); "), rerun.stderr
    assert await watcher.fetchval("SELECT count(*) FROM aerich WHERE version LIKE '%_slow.py'") == 1


@pytest.mark.parametrize(("signal_number", "exit_code", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
async def test_an_interrupted_upgrade_rolls_back_the_migration_in_flight_and_says_so_in_one_line(
    head_db, connect, tmp_path, signal_number, exit_code, name
):
    location = history_with(tmp_path, "slow", "ALTER TABLE users ADD COLUMN slow_marker INT; SELECT pg_sleep(60);")
    before = await database_contents(await connect(head_db))
    migrator = subprocess.Popen(
        [LANGLEARN, "upgrade", "--migrations", location], cwd=REPO_ROOT, env=python_env(head_db),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    watcher = await connect(head_db)
    deadline = time.monotonic() + 60
    while not await watcher.fetchval(SLOW_STATEMENT_RUNNING):
        assert migrator.poll() is None and time.monotonic() < deadline, "the slow migration never started"
        await asyncio.sleep(0.1)
    migrator.send_signal(signal_number)
    _, stderr = migrator.communicate(timeout=30)
    assert migrator.returncode == exit_code, stderr
    assert stderr.splitlines()[-1] == (
        f"error: interrupted by {name} during `langlearn upgrade`: the migrations applied before it are kept and the one "
        "in flight was rolled back; run it again to apply the rest"
    )
    assert await database_contents(watcher) == before
    assert await lock_holder(watcher) is None


async def test_upgrade_check_verify_seed_and_backup_take_the_query_parameters_users_pass(empty_db, tmp_path):
    url = f"{empty_db}?connect_timeout=3&minsize=1&maxsize=3&application_name=deploy-step&sslmode=prefer"
    upgraded = run_cli(LANGLEARN, "upgrade", database=url)
    assert upgraded.returncode == 0 and upgraded.stdout.startswith(f"applied {len(HEAD)} migration(s); "), upgraded.stderr
    for command in (["check"], ["status"], ["verify", "--skip-invariants"], ["backup", "--output", str(tmp_path / "b.dump")],
                    ["server", "psql", "-X", "-tAc", "SELECT 1"], ["seed", "--no-progress"]):
        result = run_cli(LANGLEARN, *command, database=url)
        assert result.returncode == 0, (command, result.stderr)
