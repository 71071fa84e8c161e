"""The users' own commands: plain `aerich upgrade` and `aerich downgrade`, run as the real console script from the
repo root, take the whole history up and down, build at every step the catalog `langlearn upgrade`/`downgrade`
builds, serialise with each other, and end a failure in one line that a rerun recovers from."""

from __future__ import annotations

import asyncio
import difflib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from langlearn import history
from langlearn.backups import client_program, libpq_target
from langlearn.history.files import MIGRATIONS_DIR
from langlearn.settings import APP_LABEL
from tests.conftest import LANGLEARN, REPO_ROOT, run_cli

VERSIONS = history.version_files()
HISTORY = history.load_history()
FIRST_OUTSIDE_A_TRANSACTION = next(migration for migration in HISTORY if not migration.transactional)


def aerich(*arguments: str, database: str, config: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real `aerich` console script, from the repo root (its pyproject.toml), or with `config`."""
    return run_cli("aerich", *(("-c", str(config)) if config else ()), *arguments, database=database, env=env)


def schema_dump(url: str) -> str:
    """`pg_dump --schema-only` of the database, without the bookkeeping tables (Aerich's and the checksums)."""
    target = libpq_target(url)
    dumped = subprocess.run(
        [str(client_program("pg_dump")), "--schema-only", "--no-owner", "--exclude-table=aerich*", "--dbname", target.dsn],
        env=target.environment, capture_output=True, text=True, check=True,
    )
    return "\n".join(line for line in dumped.stdout.splitlines() if line and not line.startswith(("--", "\\restrict", "\\unrestrict")))


def assert_same_catalog(built_by_aerich: str, built_by_langlearn: str, where: str) -> None:
    aerich_dump, langlearn_dump = schema_dump(built_by_aerich), schema_dump(built_by_langlearn)
    difference = "\n".join(difflib.unified_diff(langlearn_dump.splitlines(), aerich_dump.splitlines(), "langlearn", "aerich", lineterm="", n=1))
    assert not difference, f"{where}: aerich's catalog differs from langlearn's:\n{difference}"


def successes(output: str, verb: str) -> list[str]:
    return re.findall(rf"^Success {verb} to (\S+)$", output, re.M)


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


async def project_objects(connection) -> dict[str, list[str]]:
    """What is left in the schema besides Aerich's own table."""
    relations = await connection.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname NOT LIKE 'aerich%' ORDER BY 1"
    )
    types = await connection.fetch("SELECT typname FROM pg_type WHERE typnamespace = 'public'::regnamespace AND typtype = 'e' ORDER BY 1")
    return {"relations": [row[0] for row in relations], "enum types": [row[0] for row in types]}


# --- the whole history, up and down, against langlearn's runner ------------------------------------


async def test_aerich_upgrade_takes_an_empty_database_to_head_and_downgrade_back_one_version_at_a_time(server, empty_db, connect):
    """At every step down, the catalog is the one `langlearn downgrade --to` builds; at the bottom nothing is left."""
    reference = await server.create()
    try:
        heads = aerich("heads", database=empty_db)  # on an empty database: no `aerich` table yet
        assert heads.returncode == 0 and heads.stdout.split() == VERSIONS, heads.stderr
        upgrade = aerich("upgrade", database=empty_db)
        assert upgrade.returncode == 0, upgrade.stderr
        assert successes(upgrade.stdout, "upgrading") == VERSIONS
        await history.upgrade(reference)
        assert_same_catalog(empty_db, reference, "at head")

        for number in reversed(range(len(VERSIONS))):
            downgrade = aerich("downgrade", "--yes", database=empty_db)
            assert downgrade.returncode == 0, downgrade.stderr
            assert successes(downgrade.stdout, "downgrading") == [VERSIONS[number]]
            assert await history.downgrade(reference, to=number - 1) == [VERSIONS[number]]
            assert_same_catalog(empty_db, reference, f"after reverting {VERSIONS[number]}")

        assert await project_objects(await connect(empty_db)) == {"relations": [], "enum types": []}
        assert "No specified version found" in aerich("downgrade", "--yes", database=empty_db).stdout
    finally:
        await server.drop(reference)


async def test_aerich_upgrade_one_version_at_a_time_builds_langlearns_catalog_at_every_step(server, empty_db, tmp_path):
    """Aerich has no `--to`: a folder holding the history up to each version in turn makes it apply one at a time."""
    reference = await server.create()
    folder = tmp_path / "migrations" / APP_LABEL
    folder.mkdir(parents=True)
    config = aerich_config(tmp_path, folder.parent)
    try:
        for number, version in enumerate(VERSIONS):
            shutil.copy(MIGRATIONS_DIR / version, folder / version)
            upgrade = aerich("upgrade", database=empty_db, config=config)
            assert upgrade.returncode == 0, upgrade.stderr
            assert successes(upgrade.stdout, "upgrading") == [version]
            await history.upgrade(reference, to=number)
            assert_same_catalog(empty_db, reference, f"after applying {version}")
    finally:
        await server.drop(reference)


async def test_aerich_downgrade_to_a_version_reverts_it_and_everything_after_it_as_langlearn_does(server, head_db):
    """`aerich downgrade -v N` reverts N too; `langlearn downgrade --to N-1` lands in the same place, and both go back up."""
    reference = await server.create()
    try:
        await history.upgrade(reference)
        target = FIRST_OUTSIDE_A_TRANSACTION.number
        downgrade = aerich("downgrade", "-v", str(target), "--yes", database=head_db)
        assert downgrade.returncode == 0, downgrade.stderr
        assert successes(downgrade.stdout, "downgrading") == list(reversed(VERSIONS[target:]))
        by_langlearn = run_cli(LANGLEARN, "downgrade", "--to", str(target - 1), "--yes", database=reference)
        assert by_langlearn.returncode == 0, by_langlearn.stderr
        assert_same_catalog(head_db, reference, f"down to {VERSIONS[target - 1]}")

        assert successes(aerich("upgrade", database=head_db).stdout, "upgrading") == VERSIONS[target:]
        assert run_cli(LANGLEARN, "upgrade", database=reference).returncode == 0
        assert_same_catalog(head_db, reference, "back at head")
        # a database Aerich migrated passes langlearn's gate (its digests are recorded on the first langlearn upgrade)
        assert run_cli(LANGLEARN, "check", database=head_db).returncode == 0
    finally:
        await server.drop(reference)


# --- two migrators at once -------------------------------------------------------------------------


async def test_concurrent_aerich_and_langlearn_upgrades_apply_each_migration_exactly_once(empty_db, connect):
    """They serialise on the migration lock: the first applies everything, the others wait and find nothing to do."""
    environment = {**os.environ, "DATABASE_URL": empty_db}
    commands = [["aerich", "upgrade"]] * 3 + [[LANGLEARN, "upgrade"]]
    processes = [
        subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        for command in commands
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0] * len(processes), outputs
    applied_by_aerich = [version for stdout, _ in outputs[:3] for version in successes(stdout, "upgrading")]
    langlearn_stdout = outputs[3][0]
    if langlearn_stdout.startswith("nothing to apply"):
        assert sorted(applied_by_aerich, key=history.version_number) == VERSIONS  # each once, all by one Aerich
    else:
        assert applied_by_aerich == [] and langlearn_stdout.startswith(f"applied {len(VERSIONS)} migration(s)")
    connection = await connect(empty_db)
    recorded = await connection.fetch("SELECT version, count(*) AS times FROM aerich GROUP BY version")
    assert {row["version"]: row["times"] for row in recorded} == dict.fromkeys(VERSIONS, 1)
    assert run_cli(LANGLEARN, "check", database=empty_db).returncode == 0


# --- failures end in one line, and a rerun recovers ------------------------------------------------


async def test_a_failing_statement_outside_a_transaction_is_one_line_and_the_rerun_reaches_head(empty_db, connect):
    """Two usernames differing by case make migration 6's unique index on lower(username) fail part-way; once the data
    is fixed, `aerich upgrade` again drops the INVALID leftover, builds everything and reaches head."""
    await history.upgrade(empty_db, to=FIRST_OUTSIDE_A_TRANSACTION.number - 1)
    connection = await connect(empty_db)
    insert = "INSERT INTO users (email, username, hashed_password) VALUES ($1, $2, 'x')"
    await connection.execute(insert, "ana@example.com", "Ana")
    await connection.execute(insert, "ana2@example.com", "ana")

    failed = aerich("upgrade", database=empty_db)
    error = assert_one_line_error(failed)
    assert error.startswith(f"Error: migration {FIRST_OUTSIDE_A_TRANSACTION.version} failed at statement ")
    assert 'could not create unique index "idx_users_username_lower"' in error and "run `aerich upgrade`" in error
    assert aerich("heads", database=empty_db).stdout.split() == VERSIONS[FIRST_OUTSIDE_A_TRANSACTION.number:]

    await connection.execute("DELETE FROM users WHERE username = 'ana'")
    rerun = aerich("upgrade", database=empty_db)
    assert rerun.returncode == 0, rerun.stderr
    assert successes(rerun.stdout, "upgrading") == VERSIONS[FIRST_OUTSIDE_A_TRANSACTION.number:]
    assert await connection.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    assert run_cli(LANGLEARN, "check", database=empty_db).returncode == 0


async def test_a_statement_waits_at_most_the_lock_timeout_under_aerich_too(empty_db, connect):
    """LANGLEARN_LOCK_TIMEOUT is Aerich's `--lock-timeout`: an index build behind a held table lock gives up after it,
    in one line naming the limit; the next run, once the lock is gone, reaches head."""
    await history.upgrade(empty_db, to=FIRST_OUTSIDE_A_TRANSACTION.number - 1)
    holder = await connect(empty_db)
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute("LOCK TABLE users IN SHARE MODE")  # conflicts with CREATE INDEX CONCURRENTLY's lock
    failed = aerich("upgrade", database=empty_db, env={"LANGLEARN_LOCK_TIMEOUT": "1"})
    await transaction.rollback()
    error = assert_one_line_error(failed)
    assert "canceling statement due to lock timeout" in error and "lock_timeout=1 s" in error, error
    rerun = aerich("upgrade", database=empty_db)
    assert rerun.returncode == 0, rerun.stderr
    assert successes(rerun.stdout, "upgrading")[-1] == VERSIONS[-1]


async def test_a_failing_migration_in_a_transaction_is_one_line_too(head_db, connect):
    """Tables that exist without Aerich's rows: the baseline fails on its first CREATE TYPE, said in one line."""
    await (await connect(head_db)).execute("DELETE FROM aerich")
    error = assert_one_line_error(aerich("upgrade", database=head_db))
    assert 'type "cefr_level" already exists' in error


def test_a_malformed_limit_is_refused_in_one_line_before_anything_runs(empty_db):
    result = aerich("upgrade", database=empty_db, env={"LANGLEARN_LOCK_TIMEOUT": "soon"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: LANGLEARN_LOCK_TIMEOUT='soon' is not a number of seconds; set it to a positive number, like 5, or unset it"


# --- Aerich's other commands on an empty database and for a stamp ---------------------------------


async def test_heads_and_history_on_an_empty_database_and_upgrade_fake_where_the_tables_exist_without_aerichs(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("DROP TABLE aerich; DROP TABLE aerich_checksums")
    assert aerich("history", database=head_db).stdout.split() == VERSIONS
    heads = aerich("heads", database=head_db)
    assert heads.returncode == 0 and heads.stdout.split() == VERSIONS, heads.stderr
    faked = aerich("upgrade", "--fake", database=head_db)
    assert faked.returncode == 0, faked.stderr
    assert faked.stdout.splitlines() == [f"Upgrading to {version}... FAKED" for version in VERSIONS]
    assert run_cli(LANGLEARN, "check", database=head_db).returncode == 0


# --- a user's own migrations follow the same pattern -----------------------------------------------

@dataclass(frozen=True)
class UserMigration:
    """A migration a user adds after the head, written the way docs/migrations.md says (its models state: the head's)."""

    name: str
    transactional: bool
    upgrade_sql: str
    downgrade_sql: str

    def function(self, name: str, sql: str) -> str:
        opening, closing = ('return """', '"""') if self.transactional else ('return await statement_by_statement(db, __file__, """', '""")')
        return f"async def {name}(db: BaseDBAsyncClient) -> str:\n    {opening}\n        {sql}{closing}\n"

    def write(self, folder: Path, number: int) -> str:
        version = f"{number}_20990101{number:06d}_{self.name}.py"
        (folder / version).write_text(
            f'"""A user\'s migration."""\n\nfrom tortoise import BaseDBAsyncClient\n\nfrom langlearn.history.aerich import statement_by_statement\n\n'
            f"RUN_IN_TRANSACTION = {self.transactional}\n\n\n{self.function('upgrade', self.upgrade_sql)}\n\n"
            f"{self.function('downgrade', self.downgrade_sql)}\n\nMODELS_STATE = {HISTORY.head.compressed_state if HISTORY.head else None!r}\n"
        )
        return version


USER_MIGRATIONS = (
    UserMigration("add_tagline", True, 'ALTER TABLE "users" ADD "test_tagline" VARCHAR(50);', 'ALTER TABLE "users" DROP COLUMN "test_tagline";'),
    UserMigration(
        "tagline_index", False,
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS "idx_users_test_tagline" ON "users" ("test_tagline");', 'DROP INDEX CONCURRENTLY IF EXISTS "idx_users_test_tagline";',
    ),
)


def history_with(location: Path, *added: UserMigration) -> list[str]:
    """A copy of the history at `location` with `added` after its head; the versions added."""
    shutil.copytree(MIGRATIONS_DIR.parent, location)
    return [migration.write(location / APP_LABEL, len(VERSIONS) + offset) for offset, migration in enumerate(added)]


def aerich_config(folder: Path, location: Path) -> Path:
    config = folder / "pyproject.toml"
    config.write_text(f'[tool.aerich]\ntortoise_orm = "langlearn.history.aerich.TORTOISE_ORM"\nlocation = "{location}"\nsrc_folder = "{REPO_ROOT}"\n')
    return config


async def test_a_history_with_a_users_new_migrations_goes_to_head_and_back_to_empty_through_aerich(server, empty_db, connect, tmp_path):
    location = tmp_path / "migrations"
    added = history_with(location, *USER_MIGRATIONS)
    config = aerich_config(tmp_path, location)
    reference = await server.create()
    try:
        upgrade = aerich("upgrade", database=empty_db, config=config)
        assert upgrade.returncode == 0, upgrade.stderr
        assert successes(upgrade.stdout, "upgrading") == [*VERSIONS, *added]
        await history.upgrade(reference, location=str(location))
        assert_same_catalog(empty_db, reference, "at the user's head")

        everything = aerich("downgrade", "-v", "0", "--yes", database=empty_db, config=config)
        assert everything.returncode == 0, everything.stderr
        assert successes(everything.stdout, "downgrading") == list(reversed([*VERSIONS, *added]))
        assert await project_objects(await connect(empty_db)) == {"relations": [], "enum types": []}
    finally:
        await server.drop(reference)


async def test_a_migration_outside_a_transaction_runs_on_one_connection_whose_session_settings_last_through_it(empty_db, connect, tmp_path):
    """What the migrations' `SET statement_timeout = 0 ... restore` relies on under Aerich: every statement on the same
    connection, which starts with the migration limits (LANGLEARN_LOCK_TIMEOUT here) and keeps a SET for the next one."""
    location = tmp_path / "migrations"
    probe = UserMigration(
        "probe", False,
        "CREATE TABLE probe AS SELECT 1 AS step, pg_backend_pid() AS pid, current_setting('lock_timeout') AS lock_timeout, "
        "current_setting('application_name') AS application_name;\n        SET lock_timeout = '123ms';\n"
        "        INSERT INTO probe SELECT 2, pg_backend_pid(), current_setting('lock_timeout'), current_setting('application_name');",
        "DROP TABLE probe;",
    )
    [version] = history_with(location, probe)
    upgrade = aerich("upgrade", database=empty_db, config=aerich_config(tmp_path, location), env={"LANGLEARN_LOCK_TIMEOUT": "3"})
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"applying {version} statement by statement (3 statements)" in upgrade.stderr
    rows = await (await connect(empty_db)).fetch("SELECT * FROM probe ORDER BY step")
    assert [(row["lock_timeout"], row["application_name"]) for row in rows] == [("3s", "aerich (langlearn)"), ("123ms", "aerich (langlearn)")]
    assert rows[0]["pid"] == rows[1]["pid"]


async def test_a_migrating_session_terminated_mid_statement_ends_aerich_in_one_line_and_the_rerun_applies_it(empty_db, connect, tmp_path):
    location = tmp_path / "migrations"
    slow = UserMigration("slow", False, "CREATE TABLE IF NOT EXISTS slow_marker (id int);\n        SELECT pg_sleep(60);", "DROP TABLE slow_marker;")
    [version] = history_with(location, slow)
    config = aerich_config(tmp_path, location)
    await history.upgrade(empty_db)
    observer = await connect(empty_db)
    environment = {**os.environ, "DATABASE_URL": empty_db}
    process = subprocess.Popen(["aerich", "-c", str(config), "upgrade"], cwd=REPO_ROOT, env=environment, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    sleeping = None
    for _ in range(300):
        sleeping = await observer.fetchval("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' AND datname = current_database()")
        if sleeping or process.poll() is not None:
            break
        await asyncio.sleep(0.1)
    assert sleeping, process.communicate()
    assert await observer.fetchval("SELECT pg_terminate_backend($1)", sleeping)
    stdout, stderr = process.communicate(timeout=60)
    error = assert_one_line_error(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    assert error.startswith(f"Error: migration {version} failed at statement 2 of 2; it runs outside a transaction, so the 1 statement(s) before it")
    assert "terminating connection due to administrator command" in error and f"the database stays at {VERSIONS[-1]}" in error

    rerun = aerich("upgrade", database=empty_db, config=config, env={"LANGLEARN_STATEMENT_TIMEOUT": "0.5"})
    # the sleep again, now under a statement timeout: the limits reach this statement too
    assert "statement timeout" in assert_one_line_error(rerun) and "statement_timeout=0.5 s" in rerun.stderr
    quick = location / APP_LABEL / version
    quick.write_text(quick.read_text().replace("pg_sleep(60)", "pg_sleep(0)"))
    assert successes(aerich("upgrade", database=empty_db, config=config).stdout, "upgrading") == [version]


@pytest.mark.parametrize("forgotten", ["upgrade", "downgrade"])
def test_lint_refuses_a_migration_outside_a_transaction_that_aerich_would_send_as_one_string(tmp_path, forgotten):
    location = tmp_path / "migrations"
    version = history_with(location, *USER_MIGRATIONS)[-1]
    path = location / APP_LABEL / version
    source = path.read_text()
    path.write_text(source.replace(
        f"async def {forgotten}(db: BaseDBAsyncClient) -> str:\n    return await statement_by_statement(db, __file__, ",
        f"async def {forgotten}(db: BaseDBAsyncClient) -> str:\n    return (",
    ))
    result = run_cli(LANGLEARN, "migrations", "lint", "--migrations", str(location))
    assert result.returncode == 1, result.stdout + result.stderr
    finding = next(line for line in result.stdout.splitlines() if line.startswith(f"{version}:"))
    assert f"aerich-sends-one-script: RUN_IN_TRANSACTION = False, but {forgotten}() returns its SQL as one script" in finding
    assert result.stdout.rstrip().endswith(f"fix each NEW finding in its migration, or accept it in {location / 'lint-allowlist.toml'} with the reason it is safe")


def test_lint_refuses_a_migration_in_a_transaction_that_aerich_would_send_statement_by_statement(tmp_path):
    location = tmp_path / "migrations"
    mixed_up = UserMigration("mixed_up", False, 'ALTER TABLE "users" ADD "test_tagline" VARCHAR(50);', 'ALTER TABLE "users" DROP COLUMN "test_tagline";')
    [version] = history_with(location, mixed_up)
    path = location / APP_LABEL / version
    path.write_text(path.read_text().replace("RUN_IN_TRANSACTION = False", "RUN_IN_TRANSACTION = True"))
    result = run_cli(LANGLEARN, "migrations", "lint", "--migrations", str(location))
    assert result.returncode == 1, result.stdout + result.stderr
    findings = [line for line in result.stdout.splitlines() if line.startswith(f"{version}:")]
    assert [finding.split(" ", 2)[1] for finding in findings] == ["aerich-sends-one-script:"] * 2
    assert "RUN_IN_TRANSACTION = True, but upgrade() sends its SQL statement by statement" in findings[0]


def test_lint_passes_a_users_migrations_written_the_same_way(tmp_path):
    location = tmp_path / "migrations"
    history_with(location, *USER_MIGRATIONS)
    result = run_cli(LANGLEARN, "migrations", "lint", "--migrations", str(location))
    assert result.returncode == 0, result.stdout + result.stderr
