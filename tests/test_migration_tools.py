"""The tooling around the history, on real databases: plan, sql, upgrade/downgrade targets, checksums and repair.

`migrations check`, `state-diff` and `lint` work offline and have files of their own
(test_review.py, test_lint.py); the backfill recipe is in test_data_migration.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import asyncpg
import pytest
import sqlparse

from langlearn import history
from langlearn.compat import pgserver_bin_dir
from langlearn.history.files import split_statements
from langlearn.history.lock import MIGRATION_LOCK_KEY
from langlearn.history.partitionwise import expansion
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION
from langlearn.urls import asyncpg_url, libpq_url
from tests.catalog import describe_difference, snapshot
from tests.conftest import LANGLEARN, run_cli

FILES = history.load_history()
VERSIONS = list(FILES.versions)
HEAD = VERSIONS[-1]
SEED_RUNS = "5_20261124041220_seed_runs.py"  # a transactional migration whose downgrade drops a table
UNREACHABLE = "postgres://nobody@127.0.0.1:9/nowhere?connect_timeout=1"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one `error:` line of a refused command."""
    assert result.returncode == code, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def psql(script: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(pgserver_bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", libpq_url(url)],
        input=script, capture_output=True, text=True, timeout=120,
    )


async def bookkeeping(connection: asyncpg.Connection) -> dict[str, object]:
    """What the history records: Aerich's rows (in order, with their models state) and the digests."""
    return {
        "aerich": [tuple(row) for row in await connection.fetch("SELECT version, app, content::jsonb FROM aerich ORDER BY id")],
        "digests": [tuple(row) for row in await connection.fetch(
            "SELECT app, version, upgrade_sha256, downgrade_sha256, recorded_by FROM aerich_checksums ORDER BY version"
        )],
    }


def normalised(statement: str) -> str:
    """A statement without its comments and with its whitespace collapsed, to compare the printed and the sent."""
    return " ".join(sqlparse.format(statement, strip_comments=True).split()).rstrip(";").strip()


def script_statements(script: str) -> list[str]:
    """The statements psql sends for `script`: a query ending in `\\gexec` is sent, then its rows; on plain tables (the
    whole shipped history's concurrent index builds) its one row is the migration's statement as written."""
    rows_of = {
        normalised(query): normalised(statement)
        for migration in history.load_history() for direction in ("up", "down") for statement in migration.statements(direction)
        if (query := expansion(statement, in_transaction=False)) is not None
    }
    printed = [normalised(statement) for statement in split_statements(script.replace("\n\\gexec\n", ";\n"))]
    return [sent for statement in printed for sent in (statement, *((rows_of[statement],) if statement in rows_of else ()))]


def copy_history(tmp_path: Path) -> tuple[str, Path]:
    """A copy of the shipped history (its location, and its app folder) to edit without touching the repo."""
    location = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_LOCATION, location, ignore=shutil.ignore_patterns("__pycache__"))
    return str(location), location / APP_LABEL


# --- plan and sql agree with what the runner does ----------------------------------------------


async def test_the_sql_script_is_what_upgrade_sends_statement_for_statement_and_psql_lands_in_the_same_place(server, empty_db, connect):
    await history.upgrade(empty_db, to=2)
    twin = await server.create()
    try:
        await history.upgrade(twin, to=2)
        script = ok(run_cli(LANGLEARN, "migrations", "sql", database=empty_db))

        sent: list[str] = []
        migrator = await asyncpg.connect(asyncpg_url(empty_db))
        migrator.add_query_logger(lambda logged: sent.append(normalised(logged.query)))
        try:
            outcome = await history.migrate(migrator, lock_timeout=5, statement_timeout=120)
        finally:
            await migrator.close()
        assert outcome.done == tuple(VERSIONS[3:])

        printed = script_statements(script)
        # the script also takes and drops the lock, which the runner does with parameters; the rest is the run
        run = printed[printed.index("SET client_connection_check_interval = '1s'"):-1]
        start = sent.index(run[0])
        assert sent[start:start + len(run)] == run
        assert sum(statement == "BEGIN" for statement in run) == 1 + len(VERSIONS[3:])  # the checksum table, then one per migration

        assert psql(script, twin).returncode == 0
        upgraded, scripted = await connect(empty_db), await connect(twin)
        assert not describe_difference(await snapshot(upgraded), await snapshot(scripted))
        assert await bookkeeping(upgraded) == await bookkeeping(scripted)
        assert ok(run_cli(LANGLEARN, "status", database=twin)) == ok(run_cli(LANGLEARN, "status", database=empty_db))
        assert ok(run_cli(LANGLEARN, "verify", "--skip-invariants", database=twin)).endswith(": clean (schema, migrations)\n")
    finally:
        await server.drop(twin)


def statements(count: int) -> str:
    return f"{count} statement{'' if count == 1 else 's'}"


async def test_plan_lists_each_pending_migration_with_its_mode_and_statement_count_and_changes_nothing(empty_db, connect):
    await history.upgrade(empty_db, to=2)
    connection = await connect(empty_db)
    before = await snapshot(connection)
    lines = ok(run_cli(LANGLEARN, "migrations", "plan", database=empty_db)).splitlines()
    assert lines[1] == f"apply {len(VERSIONS[3:])} migration(s): from {VERSIONS[2]} to {HEAD}"
    for number, version in enumerate(VERSIONS[3:], 1):
        migration = FILES.get(version)
        assert lines[1 + number] == f"  {number}. apply  {version}  {migration.mode}, {statements(len(migration.statements('up')))}"
    assert not describe_difference(before, await snapshot(connection))
    assert (await history.read_state(connection)).pending == VERSIONS[3:]

    assert ok(run_cli(LANGLEARN, "upgrade", database=empty_db)).startswith(f"applied {len(VERSIONS[3:])} migration(s); ")
    assert ok(run_cli(LANGLEARN, "migrations", "plan", database=empty_db)).splitlines()[1] == f"nothing to apply: the database stays at {HEAD}"
    down = ok(run_cli(LANGLEARN, "migrations", "plan", "--down", "--steps", "2", database=empty_db)).splitlines()
    assert down[1:4] == [
        f"revert 2 migration(s): from {HEAD} to {VERSIONS[-3]}",
        f"  1. revert {HEAD}  {FILES.get(HEAD).mode}, {statements(len(FILES.get(HEAD).statements('down')))}",
        f"  2. revert {VERSIONS[-2]}  {FILES.get(VERSIONS[-2]).mode}, {statements(len(FILES.get(VERSIONS[-2]).statements('down')))}",
    ]


async def test_offline_sql_needs_no_database_and_builds_the_whole_history_in_psql(empty_db, connect):
    script = ok(run_cli(LANGLEARN, "migrations", "sql", "--from", "base", database=UNREACHABLE))
    for version in VERSIONS:
        assert f"-- apply  {version}  {FILES.get(version).mode}" in script
    assert psql(script, empty_db).returncode == 0
    assert ok(run_cli(LANGLEARN, "check", database=empty_db)).startswith(f"database at {HEAD} (head); schema matches the models")
    assert ok(run_cli(LANGLEARN, "verify", database=empty_db)).endswith(": clean (schema, migrations, invariants)\n")

    # a range down, offline, is the downgrade the database would get
    offline = ok(run_cli(LANGLEARN, "migrations", "sql", "--from", HEAD, "--down", "--to", "3", database=UNREACHABLE))
    online = ok(run_cli(LANGLEARN, "migrations", "sql", "--down", "--to", "3", database=empty_db))
    assert script_statements(offline)[1:] == script_statements(online)[1:]  # all but the title
    assert psql(offline, empty_db).returncode == 0
    assert (await history.read_state(await connect(empty_db))).current == VERSIONS[3]


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["--from", "99"], "no migration '99' in"),
        (["--from", "2", "--to", "base"], "`base` is where a downgrade ends"),
        (["--from", "2", "--down"], "--down needs --to VERSION"),
    ],
)
def test_sql_with_a_bad_range_is_a_one_line_usage_error(arguments, complaint):
    assert complaint in refused(run_cli(LANGLEARN, "migrations", "sql", *arguments, database=UNREACHABLE), code=2)


# --- targets ------------------------------------------------------------------------------------


async def test_upgrade_and_downgrade_targets_land_exactly_where_asked(empty_db, connect):
    connection = await connect(empty_db)
    at = {-1: await snapshot(connection)}
    for number, version in enumerate(VERSIONS):
        out = ok(run_cli(LANGLEARN, "upgrade", "--to", str(number), database=empty_db))
        assert out.startswith(f"applied 1 migration(s); database at {version}")
        at[number] = await snapshot(connection)

    out = ok(run_cli(LANGLEARN, "downgrade", "--to", "2", "--yes", database=empty_db))
    above = len(VERSIONS[3:])
    assert out == f"reverted {above} migration(s); database at {VERSIONS[2]}, {above} pending (not head: the schema is compared with the models only at head)\n"
    assert not describe_difference(at[2], await snapshot(connection))
    ok(run_cli(LANGLEARN, "downgrade", "--steps", "2", "--yes", database=empty_db))
    assert not describe_difference(at[0], await snapshot(connection))
    assert (await history.read_state(connection)).applied == (VERSIONS[0],)
    ok(run_cli(LANGLEARN, "upgrade", "--to", VERSIONS[3], database=empty_db))  # a file name works as well as a number
    assert not describe_difference(at[3], await snapshot(connection))
    ok(run_cli(LANGLEARN, "downgrade", "--to", "base", "--yes", database=empty_db))
    assert not describe_difference(at[-1], await snapshot(connection))
    assert await connection.fetchval("SELECT count(*) FROM aerich") == 0
    assert await connection.fetchval("SELECT count(*) FROM aerich_checksums") == 0
    assert ok(run_cli(LANGLEARN, "upgrade", "--to", "2", database=empty_db)).startswith("applied 3 migration(s); ")
    assert ok(run_cli(LANGLEARN, "upgrade", "--to", "1", database=empty_db)).startswith("nothing to apply; database at " + VERSIONS[2])
    assert ok(run_cli(LANGLEARN, "downgrade", "--to", "4", "--yes", database=empty_db)) == f"nothing to revert: the database stays at {VERSIONS[2]}\n"


async def test_a_downgrade_without_confirmation_changes_nothing_and_says_how_to_confirm(head_db, connect):
    connection = await connect(head_db)
    before = await snapshot(connection)
    line = refused(run_cli(LANGLEARN, "downgrade", "--steps", "1", database=head_db), code=1)
    assert line == (
        f"error: the downgrade would revert 1 migration(s): from {HEAD} to {VERSIONS[-2]} and drop what they created; "
        "nothing was done; confirm with --yes"
    )
    assert not describe_difference(before, await snapshot(connection))
    too_many = len(VERSIONS) + 1
    assert f"cannot revert {too_many} migration(s)" in refused(run_cli(LANGLEARN, "downgrade", "--steps", str(too_many), "--yes", database=head_db), code=2)
    assert "one of the arguments --to --steps is required" in refused(run_cli(LANGLEARN, "downgrade", "--yes", database=head_db), code=2)


async def test_a_downgrade_waits_for_the_migration_lock_and_names_its_holder(head_db, connect):
    holder = await connect(head_db)
    await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    line = refused(run_cli(LANGLEARN, "downgrade", "--steps", "1", "--yes", "--lock-wait", "1", database=head_db))
    assert line.startswith(f"error: timed out after 1 s waiting for the migration lock, held by pid {holder.get_server_pid()} ")
    assert (await history.read_state(holder)).current == HEAD


async def test_a_downgrade_statement_waits_at_most_lock_timeout_for_a_busy_table(head_db, connect):
    ok(run_cli(LANGLEARN, "downgrade", "--to", SEED_RUNS, "--yes", database=head_db))  # its downgrade drops seed_runs
    busy = await connect(head_db)
    transaction = busy.transaction()
    await transaction.start()
    await busy.execute("LOCK TABLE seed_runs IN ACCESS SHARE MODE")  # a long read of the table the downgrade drops
    try:
        line = refused(run_cli(LANGLEARN, "downgrade", "--steps", "1", "--yes", "--lock-timeout", "0.5", database=head_db))
    finally:
        await transaction.rollback()
    assert line.startswith(f"error: the downgrade of {SEED_RUNS} failed at statement 1 of 3 and was rolled back: canceling statement due to lock timeout")
    assert (await history.read_state(busy)).current == SEED_RUNS


# --- checksums ---------------------------------------------------------------------------------


def edit_sql(version_file: Path, old: str, new: str) -> None:
    text = version_file.read_text()
    assert old in text
    version_file.write_text(text.replace(old, new, 1))


async def test_an_applied_migration_edited_in_its_sql_only_is_refused_until_repaired(head_db, connect, tmp_path):
    location, folder = copy_history(tmp_path)
    edited = VERSIONS[3]
    # the SQL changes, its models state does not: Aerich's own record cannot see it
    edit_sql(folder / edited, 'CREATE TYPE "mastery_level"', 'CREATE TYPE "mastery_level_v2"')
    expected = (
        f"error: migration {edited} was edited after it was applied (its upgrade SQL changed): restore it, put the change in a new migration; "
        "if the edit was deliberate, run `langlearn migrations repair`"
    )
    for command in (["upgrade"], ["check"], ["migrations", "plan"], ["migrations", "sql"], ["downgrade", "--steps", "1", "--yes"]):
        assert refused(run_cli(LANGLEARN, *command, "--migrations", location, database=head_db)).startswith(expected), command
    report = run_cli(LANGLEARN, "verify", "--skip-invariants", "--migrations", location, database=head_db)
    assert report.returncode == 1 and f"[migrations] edited_migration: {edited}" in report.stdout
    assert f"applied   {edited} (edited since it was applied: its upgrade SQL)" in ok(
        run_cli(LANGLEARN, "status", "--migrations", location, database=head_db)
    )

    assert ok(run_cli(LANGLEARN, "migrations", "repair", "--migrations", location, database=head_db)) == (
        f"re-recorded {edited}: its upgrade SQL as the file now has it\nrepaired 1 migration(s)\n"
    )
    assert ok(run_cli(LANGLEARN, "upgrade", "--migrations", location, database=head_db)).startswith("nothing to apply; database at")
    assert ok(run_cli(LANGLEARN, "verify", "--skip-invariants", "--migrations", location, database=head_db)).endswith(": clean (schema, migrations)\n")
    connection = await connect(head_db)
    assert await connection.fetchval("SELECT recorded_by FROM aerich_checksums WHERE version = $1", edited) == "repair"
    # the shipped files are now the edited ones' "before": this database, to them, was edited
    assert refused(run_cli(LANGLEARN, "check", database=head_db)).startswith(f"error: migration {edited} was edited after it was applied")
    assert ok(run_cli(LANGLEARN, "migrations", "repair", "--migrations", location, database=head_db)).endswith("nothing to repair: every applied migration matches its file\n")


async def test_an_edit_of_the_downgrade_or_the_models_state_is_named_and_repair_re_records_both(head_db, connect, tmp_path):
    location, folder = copy_history(tmp_path)
    edit_sql(folder / SEED_RUNS, 'DROP TABLE IF EXISTS "seed_runs";', 'DROP TABLE IF EXISTS "seed_runs" CASCADE;')
    before = FILES.versions[FILES.versions.index(SEED_RUNS) - 1]
    state = re.search(r"^MODELS_STATE = \(.*?^\)$", (folder / before).read_text(), re.S | re.M)
    assert state is not None
    text = (folder / SEED_RUNS).read_text()
    (folder / SEED_RUNS).write_text(re.sub(r"^MODELS_STATE = \(.*?^\)$", lambda _: state.group(0), text, flags=re.S | re.M))
    line = refused(run_cli(LANGLEARN, "check", "--migrations", location, database=head_db))
    assert line.startswith(f"error: migration {SEED_RUNS} was edited after it was applied (its downgrade SQL and models state changed)")
    ok(run_cli(LANGLEARN, "migrations", "repair", "--migrations", location, database=head_db))
    connection = await connect(head_db)
    content = await connection.fetchval("SELECT content FROM aerich WHERE version = $1", SEED_RUNS)
    assert "models.SeedRun" not in content  # the previous migration's state, now recorded for seed_runs
    assert "edited" not in ok(run_cli(LANGLEARN, "status", "--migrations", location, database=head_db))


async def test_a_database_migrated_without_checksums_gets_them_recorded_on_the_first_upgrade(empty_db, connect):
    ok(run_cli(LANGLEARN, "upgrade", database=empty_db))
    connection = await connect(empty_db)
    await connection.execute("DROP TABLE aerich_checksums")  # as a database migrated before checksums were kept is
    check = run_cli(LANGLEARN, "check", database=empty_db)
    assert check.returncode == 0 and check.stderr == ""  # the warning is on stdout, above the result line it counts in
    *warned, result = check.stdout.splitlines()
    assert warned == [f"warning: migrations: {len(VERSIONS)} applied migration(s) have no recorded digest; `langlearn upgrade` records them"]
    assert result.endswith("schema matches the models, 1 warning(s) above")
    verify = run_cli(LANGLEARN, "verify", "--skip-invariants", database=empty_db)
    assert verify.returncode == 1 and "[migrations] unrecorded_checksums: aerich_checksums" in verify.stdout

    upgrade = run_cli(LANGLEARN, "upgrade", database=empty_db)
    assert ok(upgrade).startswith("nothing to apply; ")
    assert f"recorded the checksums of {len(VERSIONS)} migration(s) applied before langlearn kept them" in upgrade.stderr
    rows = await connection.fetch("SELECT version, recorded_by FROM aerich_checksums ORDER BY version")
    assert [(row["version"], row["recorded_by"]) for row in rows] == sorted((version, "adopt") for version in VERSIONS)
    assert ok(run_cli(LANGLEARN, "verify", "--skip-invariants", database=empty_db)).endswith(": clean (schema, migrations)\n")


# --- migrations outside a transaction ---------------------------------------------------------


async def test_a_migration_outside_a_transaction_sends_its_statements_one_by_one(head_db, connect, tmp_path):
    location, folder = copy_history(tmp_path)
    state = re.search(r"^MODELS_STATE = \(.*?^\)$", (folder / HEAD).read_text(), re.S | re.M)
    assert state is not None
    (folder / f"{len(VERSIONS)}_20990101000000_concurrently.py").write_text(
        '"""Two indexes built without blocking writes: CONCURRENTLY cannot run in a transaction, nor two in one statement."""\n\n'
        "RUN_IN_TRANSACTION = False\n\n\n"
        'async def upgrade(db) -> str:\n    return """\n'
        '        CREATE INDEX CONCURRENTLY IF NOT EXISTS "idx_test_users_last_login_ip" ON "users" ("last_login_ip");\n'
        '        CREATE INDEX CONCURRENTLY IF NOT EXISTS "idx_test_users_provider" ON "users" ("provider");"""\n\n\n'
        'async def downgrade(db) -> str:\n    return """\n'
        '        DROP INDEX CONCURRENTLY IF EXISTS "idx_test_users_provider";\n'
        '        DROP INDEX CONCURRENTLY IF EXISTS "idx_test_users_last_login_ip";"""\n\n\n'
        f"{state.group(0)}\n"
    )
    plan = ok(run_cli(LANGLEARN, "migrations", "plan", "--migrations", location, database=head_db))
    assert "outside a transaction, statement by statement, 2 statements" in plan
    script = ok(run_cli(LANGLEARN, "migrations", "sql", "--migrations", location, database=head_db))
    body = script_statements(script)
    first = next(n for n, statement in enumerate(body) if "idx_test_users_last_login_ip" in statement)
    assert body[first - 1] != "BEGIN" and body[first + 2] == "BEGIN"  # the bookkeeping alone is in a transaction
    assert ok(run_cli(LANGLEARN, "upgrade", "--migrations", location, database=head_db)).startswith("applied 1 migration(s); ")
    connection = await connect(head_db)
    valid = await connection.fetch("SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'idx_test_users_%'")
    assert sorted(tuple(row) for row in valid) == [("idx_test_users_last_login_ip", True), ("idx_test_users_provider", True)]
    ok(run_cli(LANGLEARN, "downgrade", "--steps", "1", "--yes", "--migrations", location, database=head_db))
    assert not await connection.fetchval("SELECT count(*) FROM pg_class WHERE relname LIKE 'idx_test_users_%'")


async def test_an_argument_is_named_as_its_caller_names_it(head_db):
    """The Python API's refusals name its arguments; the `langlearn` command's name its options."""
    files = history.load_history()
    with pytest.raises(history.runner.UsageError) as raised:
        history.plan.steps_back(files, files.versions, 0)
    assert str(raised.value) == "steps must be at least 1, not 0"
    with pytest.raises(history.runner.UsageError, match="^a downgrade needs a target: a version"):
        history.Target("down").plan(files, list(files.versions))
    stepped = run_cli(LANGLEARN, "downgrade", "--steps", "0", "--yes", database=head_db)
    assert stepped.returncode == 2 and stepped.stderr == "error: --steps must be at least 1, not 0\n"
    planned = run_cli(LANGLEARN, "migrations", "plan", "--down", "--steps", "0", database=head_db)
    assert planned.returncode == 2 and planned.stderr == "error: --steps must be at least 1, not 0\n"
