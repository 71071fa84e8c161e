"""`langlearn migrations stamp`: tables created outside the history, recorded without running the migrations.

The tables come from a `pg_dump --schema-only` of a database the history built, restored without its
bookkeeping tables: the situation the stamp is for (a schema restored from a dump, or created by
hand from the same SQL) with exactly the objects the migrations create. Tortoise's `generate_schemas`
cannot stand in for it: it stops at the native enum types (`type "achievement_rarity" does not
exist`) and at the sequence `wallet_transactions.ledger_seq` draws from, which only the migrations
create, so the test would have to copy their SQL, a second history.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from langlearn import history
from langlearn.databases import database_name
from langlearn.history.checksums import CREATE_AERICH_TABLE
from langlearn.history.lock import MIGRATION_LOCK_KEY
from langlearn.local_server import client_tool
from langlearn.settings import tortoise_config
from langlearn.urls import libpq_url
from tests.catalog import describe_difference, snapshot
from tests.conftest import LANGLEARN, run_cli
from tests.test_migration_tools import UNREACHABLE, bookkeeping, copy_history, ok, refused

VERSIONS = list(history.load_history().versions)
HEAD = VERSIONS[-1]
SEED_RUNS = "5_20261124041220_seed_runs.py"
AERICH = str(Path(LANGLEARN).with_name("aerich"))


def schema_without_history(source: str, target: str) -> None:
    """Build `target`'s schema from a schema-only dump of `source` that leaves out the bookkeeping tables."""
    dump = subprocess.run(
        [str(client_tool("pg_dump")), "--schema-only", "--no-owner", "--no-privileges", "--exclude-table=aerich*", "--dbname", libpq_url(source)],
        capture_output=True, text=True, timeout=120,
    )
    assert dump.returncode == 0 and "aerich" not in dump.stdout, dump.stderr
    restore = subprocess.run(
        [str(client_tool("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname", libpq_url(target)],
        input=dump.stdout, capture_output=True, text=True, timeout=120,
    )
    assert restore.returncode == 0, restore.stderr


async def built_outside_the_history(server, version: str | None = None) -> str:
    """A new database with the tables the history builds up to `version` (default head), and no history."""
    source = await server.create()
    try:
        await history.upgrade(source, to=version)
        target = await server.create()
        schema_without_history(source, target)
    finally:
        await server.drop(source)
    return target


@pytest.fixture(scope="module")
async def outside_template(server):
    url = await built_outside_the_history(server)
    yield database_name(url)
    await server.drop(url)


@pytest.fixture
async def outside_db(server, outside_template):
    """A new database holding the head schema, built outside the history: no `aerich` table, no digests."""
    url = await server.create(template=outside_template)
    yield url
    await server.drop(url)


def stamp(version: str, database: str, *options: str) -> subprocess.CompletedProcess[str]:
    return run_cli(LANGLEARN, "migrations", "stamp", version, *options, database=database)


async def has_table(connection, name: str) -> bool:
    return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


async def test_the_aerich_table_is_created_as_aerich_init_db_and_migration_0_create_it():
    from tortoise.context import TortoiseContext
    from tortoise.utils import get_schema_sql

    # Aerich's own model, as `aerich init-db` generates its table, in the app the Aerich config puts it (as every test does:
    # a model class is bound to one app at a time)
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(UNREACHABLE), init_connections=False)
        generated = get_schema_sql(context.connections.get("default"), safe=True)

    aerich_table = next(statement for statement in generated.split(";") if 'TABLE IF NOT EXISTS "aerich"' in statement)
    assert aerich_table.strip() == CREATE_AERICH_TABLE
    assert " ".join(CREATE_AERICH_TABLE.split()) in " ".join(history.load_history().migrations[0].upgrade_sql.split())


# --- stamped, then the history takes over ---------------------------------------------------------


async def test_stamp_head_records_every_version_as_the_runner_would_and_upgrade_finds_nothing_to_do(outside_db, head_db, connect):
    stamped, migrated = await connect(outside_db), await connect(head_db)
    assert not await has_table(stamped, "aerich")

    output = ok(stamp("head", outside_db)).splitlines()

    assert output == [
        "created the bookkeeping table aerich",
        "created the bookkeeping table aerich_checksums",
        *(f"recorded {version} as applied (its models state and digests); none of its SQL ran" for version in VERSIONS),
        f"stamped {len(VERSIONS)} migration(s) without running them; the database is at {HEAD} (head)",
        "schema matches the models",
    ]
    # the bookkeeping tables and rows are those the history writes (Aerich's table as migration 0 creates it)
    assert await bookkeeping(stamped) == await bookkeeping(migrated)
    assert not describe_difference(await snapshot(migrated, include_aerich=True), await snapshot(stamped, include_aerich=True))
    assert ok(run_cli(LANGLEARN, "upgrade", database=outside_db)).startswith(f"nothing to apply; database at {HEAD} (head); schema matches the models")
    assert ok(run_cli(LANGLEARN, "check", database=outside_db)).startswith(f"database at {HEAD} (head); schema matches the models")
    status = ok(run_cli(LANGLEARN, "status", database=outside_db))
    assert status.splitlines()[-1] == f"at head: {HEAD}" and "no digest" not in status
    assert "No available heads." in ok(run_cli(AERICH, "heads", database=outside_db))  # Aerich reads the stamp as its own


async def test_a_second_stamp_records_nothing_and_still_checks_the_schema(outside_db):
    ok(stamp("head", outside_db))
    assert ok(stamp(str(len(VERSIONS) - 1), outside_db)).splitlines() == [
        f"nothing to stamp: the database already records every migration up to {HEAD} (head)",
        "schema matches the models",
    ]


async def test_stamp_to_an_older_version_then_upgrade_applies_the_rest(server, head_db, connect):
    at_seed_runs = await built_outside_the_history(server, SEED_RUNS)
    stamped, migrated = await connect(at_seed_runs), await connect(head_db)
    try:
        output = ok(stamp(SEED_RUNS, at_seed_runs)).splitlines()
        pending = VERSIONS[VERSIONS.index(SEED_RUNS) + 1:]
        assert output[-2:] == [
            f"stamped {VERSIONS.index(SEED_RUNS) + 1} migration(s) without running them; the database is at {SEED_RUNS}, {len(pending)} pending",
            f"schema not compared: the models describe head and {len(pending)} migration(s) are pending; `langlearn upgrade` applies them, then compares",
        ]
        status = ok(run_cli(LANGLEARN, "status", database=at_seed_runs))
        assert [line.split()[1] for line in status.splitlines() if line.startswith("pending")] == pending

        upgraded = ok(run_cli(LANGLEARN, "upgrade", database=at_seed_runs))

        assert upgraded.startswith(f"applied {len(pending)} migration(s); database at {HEAD} (head); schema matches the models")
        assert await bookkeeping(stamped) == await bookkeeping(migrated)
        assert not describe_difference(await snapshot(migrated, include_aerich=True), await snapshot(stamped, include_aerich=True))
    finally:
        await stamped.close()
        await server.drop(at_seed_runs)


async def test_stamp_records_only_the_missing_versions_and_the_digests_aerich_left_out(head_db, connect):
    """0-5 applied by `aerich upgrade` (no digests), 6 on built by hand: the stamp completes the record."""
    connection = await connect(head_db)
    expected = await bookkeeping(connection)
    by_hand = VERSIONS[VERSIONS.index(SEED_RUNS) + 1:]
    ids = await connection.fetch("SELECT id, version FROM aerich WHERE version <> ALL($1::text[]) ORDER BY id", by_hand)
    await connection.execute("DELETE FROM aerich WHERE version = ANY($1::text[])", by_hand)
    await connection.execute("DROP TABLE aerich_checksums")

    output = ok(stamp("head", head_db)).splitlines()

    aerich_applied = VERSIONS[: VERSIONS.index(SEED_RUNS) + 1]
    assert output[:-2] == [
        "created the bookkeeping table aerich_checksums",
        *(f"recorded {version} as applied (its models state and digests); none of its SQL ran" for version in by_hand),
        f"recorded the digests of {len(aerich_applied)} migration(s) applied before langlearn kept them ({', '.join(aerich_applied)})",
    ]
    assert output[-1] == "schema matches the models"
    now = await bookkeeping(connection)
    assert now["aerich"] == expected["aerich"]
    assert now["digests"] == [(*digest[:4], "adopt" if digest[1] in aerich_applied else "apply") for digest in expected["digests"]]
    assert await connection.fetch("SELECT id, version FROM aerich WHERE version <> ALL($1::text[]) ORDER BY id", by_hand) == ids


# --- the schema check after the stamp ------------------------------------------------------------


async def test_stamp_lists_what_differs_from_the_models_and_exits_1_as_check_does(outside_db, connect):
    connection = await connect(outside_db)
    await connection.execute("ALTER TABLE users ADD COLUMN stamp_test_extra VARCHAR(40)")  # something the models do not know: a warning

    output = ok(stamp("head", outside_db))

    assert "[schema] extra_column: users.stamp_test_extra" in output
    assert output.splitlines()[-1] == "schema matches the models (1 warning(s) above)"
    ok(run_cli(LANGLEARN, "check", database=outside_db))

    await connection.execute("DROP INDEX idx_lesson_unit_order")  # something the models need: an error
    await connection.execute("ALTER TABLE lessons DROP CONSTRAINT lessons_xp_reward_check")
    differs = stamp("head", outside_db)

    assert differs.returncode == 1 and differs.stderr == "", differs.stderr
    lines = differs.stdout.splitlines()
    assert lines[0] == f"nothing to stamp: the database already records every migration up to {HEAD} (head)"
    assert "[schema] missing_index: lessons.idx_lesson_unit_order" in differs.stdout
    assert "[schema] missing_check: lessons.lessons_xp_reward_check" in differs.stdout
    assert "[schema] extra_column: users.stamp_test_extra" in differs.stdout
    assert lines[-1].startswith("the schema differs from the models (2 error(s) above); the stamp stays recorded")
    assert refused(run_cli(LANGLEARN, "check", database=outside_db)).startswith("error: database schema drifted from the models (2 error(s))")


# --- refusals: one line, nothing changed ----------------------------------------------------------


async def test_stamp_refuses_a_database_that_records_versions_beyond_the_target(head_db, connect):
    connection = await connect(head_db)
    before = await bookkeeping(connection)
    beyond = VERSIONS[VERSIONS.index(SEED_RUNS) + 1:]

    line = refused(stamp("5", head_db))

    assert line == (
        f"error: the database already records {', '.join(beyond)}, beyond {SEED_RUNS}; a stamp only adds versions, "
        "so nothing was recorded (`langlearn status` lists what it records)"
    )
    assert await bookkeeping(connection) == before


async def test_stamp_refuses_a_database_that_records_a_version_the_code_does_not_have(outside_db, connect):
    connection = await connect(outside_db)
    await connection.execute(CREATE_AERICH_TABLE)
    await connection.execute("INSERT INTO aerich (version, app, content) VALUES ('99_20270101000000_from_newer_code.py', 'models', '{}')")

    line = refused(stamp("head", outside_db))

    assert line.startswith("error: database is ahead of the code: it recorded 99_20270101000000_from_newer_code.py")
    assert await connection.fetchval("SELECT count(*) FROM aerich") == 1
    assert not await has_table(connection, "aerich_checksums")


async def test_stamp_refuses_an_applied_migration_edited_since(head_db, connect, tmp_path):
    location, folder = copy_history(tmp_path)
    edited = folder / VERSIONS[3]
    edited.write_text(edited.read_text().replace('return """', 'return """\n-- an edit', 1))
    connection = await connect(head_db)
    await connection.execute("DELETE FROM aerich WHERE version = $1", HEAD)
    before = await bookkeeping(connection)

    line = refused(stamp("head", head_db, "--migrations", location))

    assert line.startswith(f"error: migration {VERSIONS[3]} was edited after it was applied (its upgrade SQL changed)")
    assert await bookkeeping(connection) == before


async def test_stamp_usage_errors_and_an_unreachable_server_exit_2(outside_db, connect):
    assert refused(stamp("nope", outside_db), 2).startswith("error: no migration 'nope' in ")
    assert refused(stamp("nope", outside_db), 2).endswith(", by file name, or `head`")
    assert refused(stamp("base", outside_db), 2).endswith("`base` would record none")
    assert "VERSION" in refused(run_cli(LANGLEARN, "migrations", "stamp", database=outside_db), 2)
    assert refused(stamp("head", UNREACHABLE, "--connect-timeout", "1"), 2).startswith("error: ")
    assert not await has_table(await connect(outside_db), "aerich")
    assert "alembic stamp" in ok(run_cli(LANGLEARN, "migrations", "stamp", "--help"))


async def test_a_role_that_may_not_create_the_bookkeeping_tables_is_told_in_one_line(outside_db, connect):
    role = f"{database_name(outside_db)}_reader"
    admin = await connect(outside_db)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        line = refused(stamp("head", outside_db.replace("postgres@", f"{role}@")))
        assert line == "error: the stamp recorded nothing: permission denied for schema public"
        assert not await has_table(admin, "aerich")
    finally:
        await admin.execute(f'DROP ROLE "{role}"')


# --- the migration lock -----------------------------------------------------------------------------


async def test_stamps_at_once_wait_for_the_lock_and_record_each_version_once(outside_db, connect):
    holder = await connect(outside_db)
    await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    stamps = [
        subprocess.Popen([LANGLEARN, "migrations", "stamp", "head"], env=_env(outside_db), cwd=Path(__file__).parent.parent,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for _ in range(200):  # both connected, and polling for the lock
            if await holder.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'langlearn-stamp'") == 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)
        assert all(process.poll() is None for process in stamps)
        assert not await has_table(holder, "aerich")
    finally:
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    results = [process.communicate(timeout=120) for process in stamps]

    assert [process.returncode for process in stamps] == [0, 0], results
    assert all("waiting up to 300 s for the migration lock held by pid" in err for _, err in results)
    summaries = sorted(out.splitlines()[-2] for out, _ in results)
    assert summaries == [
        f"nothing to stamp: the database already records every migration up to {HEAD} (head)",
        f"stamped {len(VERSIONS)} migration(s) without running them; the database is at {HEAD} (head)",
    ]
    assert await holder.fetchval("SELECT count(*) FROM aerich") == len(VERSIONS)


async def test_stamp_gives_up_after_lock_wait_and_changes_nothing(outside_db, connect):
    holder = await connect(outside_db)
    await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)

    line = refused(stamp("head", outside_db, "--lock-wait", "1"))

    assert line.startswith("error: timed out after 1 s waiting for the migration lock, held by pid ")
    assert not await has_table(holder, "aerich")


def _env(database: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "DATABASE_URL": database}
