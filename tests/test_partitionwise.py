"""A user's `CREATE INDEX CONCURRENTLY` on a partitioned history table (langlearn/history/partitionwise.py).

PostgreSQL refuses it on a partitioned table; the runners send it partition by partition instead, the same
through `aerich upgrade`, `langlearn upgrade` and the psql script, and the drop back through `DROP INDEX`.
The user's migration is written as for a plain table (docs/migrations.md), after the real head."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import asyncpg

from langlearn import history
from langlearn.history.partitionwise import expansion
from tests.conftest import LANGLEARN, REPO_ROOT, run_cli
from tests.test_aerich import VERSIONS, UserMigration, aerich, aerich_config, history_with, successes

INDEX = "idx_test_question_attempt_lesson_correct"  # long enough that some partitions' names are cut and digested
BUILD = f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{INDEX}" ON "question_attempts" ("lesson_attempt_id", "is_correct");'
QUESTION_INDEX = UserMigration("question_index", False, BUILD, f'DROP INDEX CONCURRENTLY IF EXISTS "{INDEX}";')
SAME_INDEX_ELSEWHERE = "(lesson_attempt_id, is_correct)"

WRITE = """
INSERT INTO question_attempts (id, lesson_attempt_id, question_id, question_type, created_at)
SELECT gen_random_uuid(), id, 'q-partitionwise', 'translate', now() FROM lesson_attempts LIMIT 1
"""


async def index_state(connection: asyncpg.Connection) -> dict[str, object]:
    """The parent's index (None: absent), and per leaf partition the definition of its index attached to it."""
    valid = await connection.fetchval("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", INDEX)
    rows = await connection.fetch(
        """
        SELECT leaf.relid::regclass::text AS partition,
               (SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indexrelid
                WHERE i.indrelid = leaf.relid AND h.inhparent = to_regclass($1) AND i.indisvalid) AS attached
        FROM pg_partition_tree('question_attempts') AS leaf WHERE leaf.isleaf ORDER BY 1
        """,
        INDEX,
    )
    return {"parent valid": valid, "leaves": {row["partition"]: row["attached"] for row in rows}}


def assert_built(state: dict[str, object]) -> None:
    assert state["parent valid"] is True
    leaves = state["leaves"]
    assert isinstance(leaves, dict) and len(leaves) > 2
    for partition, definition in leaves.items():
        assert definition is not None and SAME_INDEX_ELSEWHERE in definition, (partition, definition)


def assert_gone(state: dict[str, object]) -> None:
    assert state["parent valid"] is None
    assert set(state["leaves"].values()) == {None}  # type: ignore[union-attr]


async def leftover_indexes(connection: asyncpg.Connection) -> list[str]:
    return [row[0] for row in await connection.fetch("SELECT indexrelid::regclass::text FROM pg_index WHERE indexrelid::regclass::text LIKE $1", f"%{INDEX[:20]}%")]


async def test_aerich_langlearn_and_the_psql_script_build_it_partition_by_partition_and_drop_it_back(seeded_db, connect, tmp_path):
    location = tmp_path / "migrations"
    [added] = history_with(location, QUESTION_INDEX)
    config = aerich_config(tmp_path, location)
    observer = await connect(seeded_db)
    assert_gone(await index_state(observer))

    upgrade = aerich("upgrade", database=seeded_db, config=config)
    assert upgrade.returncode == 0, upgrade.stderr
    assert successes(upgrade.stdout, "upgrading") == [added]
    built_by_aerich = await index_state(observer)
    assert_built(built_by_aerich)
    assert any(len(name) == 63 for name in await leftover_indexes(observer))  # a cut, digested name among them
    await observer.execute(WRITE)  # a month's partition takes writes with its new index

    back = aerich("downgrade", "-v", str(history.version_number(added)), "--yes", database=seeded_db, config=config)
    assert back.returncode == 0, back.stderr
    assert_gone(await index_state(observer))
    assert await leftover_indexes(observer) == []

    by_langlearn = run_cli(LANGLEARN, "upgrade", "--migrations", str(location), database=seeded_db)
    assert by_langlearn.returncode == 0, by_langlearn.stderr
    assert await index_state(observer) == built_by_aerich
    down = run_cli(LANGLEARN, "downgrade", "--steps", "1", "--yes", "--migrations", str(location), database=seeded_db)
    assert down.returncode == 0, down.stderr
    assert_gone(await index_state(observer))

    printed = run_cli(LANGLEARN, "migrations", "sql", "--from", VERSIONS[-1], "--migrations", str(location), database=seeded_db)
    assert printed.returncode == 0, printed.stderr
    assert "\\gexec" in printed.stdout
    (tmp_path / "index.sql").write_text(printed.stdout)
    ran = run_cli(LANGLEARN, "server", "psql", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(tmp_path / "index.sql"), database=seeded_db)
    assert ran.returncode == 0, ran.stderr
    assert await index_state(observer) == built_by_aerich
    assert run_cli(LANGLEARN, "check", "--migrations", str(location), database=seeded_db).returncode == 0


async def test_writers_go_on_while_a_partitions_build_waits_for_an_old_transaction(seeded_db, connect, tmp_path):
    location = tmp_path / "migrations"
    history_with(location, QUESTION_INDEX)
    old, writer, observer = await connect(seeded_db), await connect(seeded_db), await connect(seeded_db)
    newest = await old.fetchval("SELECT tableoid::regclass::text FROM question_attempts ORDER BY created_at DESC LIMIT 1")
    # an open transaction that wrote to a partition directly (so it holds no lock on the parent): every build waits
    # for it (CREATE INDEX CONCURRENTLY waits out older snapshots), as for a long transaction of the service
    old_transaction = old.transaction()
    await old_transaction.start()
    await old.execute(WRITE.replace("INTO question_attempts", f"INTO {newest}").replace("now()", f"(SELECT max(created_at) FROM {newest})"))

    upgrade = await asyncio.create_subprocess_exec(
        LANGLEARN, "upgrade", "--migrations", str(location), "--lock-timeout", "20", cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": seeded_db}, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        waiting = None
        for _ in range(200):  # the migrator's build of a partition, waiting on the old transaction
            waiting = await observer.fetchval(
                "SELECT query FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'"
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting, "the build never waited for the open transaction"
        latencies = []
        for _ in range(5):  # writes through the parent, to every month, meanwhile
            started = time.perf_counter()
            await writer.execute(WRITE)
            latencies.append(time.perf_counter() - started)
        assert max(latencies) < 0.5, latencies
        assert upgrade.returncode is None  # still waiting: the writes did not go around a finished build
    finally:
        await old_transaction.commit()
        _, stderr = await asyncio.wait_for(upgrade.communicate(), timeout=120)
    assert upgrade.returncode == 0, stderr.decode()
    assert_built(await index_state(observer))


async def test_a_build_stopped_midway_is_finished_by_the_rerun_and_its_invalid_leftover_rebuilt(seeded_db, connect, tmp_path):
    location = tmp_path / "migrations"
    history_with(location, QUESTION_INDEX)
    connection = await connect(seeded_db)
    planned = [row[0] for row in await connection.fetch(expansion(BUILD, in_transaction=False))]  # type: ignore[arg-type]
    on_only, first_build, first_attach, second_build = planned[:4]
    assert "ON ONLY" in on_only and "CONCURRENTLY" in first_build and "ATTACH PARTITION" in first_attach
    for statement in (on_only, first_build, first_attach):  # a migrator that stopped after the first partition
        await connection.execute(statement)
    # the second partition's build failed part-way: an INVALID index under the name the rerun uses (a unique index on
    # a column with duplicates fails after creating it)
    broken = second_build.replace("CREATE INDEX", "CREATE UNIQUE INDEX").replace('("lesson_attempt_id", "is_correct")', '("question_type")')
    try:
        await connection.execute(broken)
        raise AssertionError("the broken build succeeded")
    except asyncpg.UniqueViolationError:
        pass
    assert (await index_state(connection))["parent valid"] is False

    rerun = run_cli(LANGLEARN, "upgrade", "--migrations", str(location), database=seeded_db)

    assert rerun.returncode == 0, rerun.stderr
    assert_built(await index_state(connection))
    assert await connection.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0


# --- a foreign key: PostgreSQL (before 18) adds none NOT VALID to a partitioned table -----------------------------

EACH_PARTITION = "SELECT relid::regclass AS p, c.relname FROM pg_partition_tree('question_attempts') t JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf"
REVIEWER_FKEY = "FOREIGN KEY (test_reviewer_id) REFERENCES users (id) ON DELETE SET NULL"
# docs/migrations.md's two steps for a partitioned table, as a user writes them: DO blocks read the partitions when they run
REVIEWER_NOT_VALID = UserMigration(
    "reviewer_not_valid", True,
    f"""ALTER TABLE "question_attempts" ADD COLUMN "test_reviewer_id" UUID;
        DO $$ DECLARE part record; BEGIN
            FOR part IN {EACH_PARTITION} LOOP
                EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I {REVIEWER_FKEY} NOT VALID', part.p, part.relname || '_test_reviewer_id_fkey');
            END LOOP;
        END $$;""",
    f"""DO $$ DECLARE part record; BEGIN
            FOR part IN {EACH_PARTITION} LOOP
                EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', part.p, part.relname || '_test_reviewer_id_fkey');
            END LOOP;
        END $$;
        ALTER TABLE "question_attempts" DROP COLUMN "test_reviewer_id";""",
)
REVIEWER_VALIDATE = UserMigration(
    "reviewer_validate", True,
    f"""DO $$ DECLARE part record; BEGIN
            FOR part IN {EACH_PARTITION} LOOP
                IF EXISTS (SELECT FROM pg_constraint WHERE conrelid = part.p AND conname = part.relname || '_test_reviewer_id_fkey') THEN
                    EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', part.p, part.relname || '_test_reviewer_id_fkey');
                END IF;
            END LOOP;
        END $$;
        ALTER TABLE "question_attempts" ADD CONSTRAINT "question_attempts_test_reviewer_id_fkey" {REVIEWER_FKEY};""",
    f"""ALTER TABLE "question_attempts" DROP CONSTRAINT "question_attempts_test_reviewer_id_fkey";
        DO $$ DECLARE part record; BEGIN
            FOR part IN {EACH_PARTITION} LOOP
                EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I {REVIEWER_FKEY} NOT VALID', part.p, part.relname || '_test_reviewer_id_fkey');
            END LOOP;
        END $$;""",
)


async def reviewer_keys(connection: asyncpg.Connection) -> list[tuple[str, bool, bool]]:
    """Each foreign key on test_reviewer_id: its table, validated, and whether it belongs to the parent's."""
    rows = await connection.fetch(
        "SELECT conrelid::regclass::text AS on_table, convalidated, conparentid <> 0 AS inherited FROM pg_constraint "
        "WHERE contype = 'f' AND pg_get_constraintdef(oid) LIKE '%test_reviewer_id%' ORDER BY 1"
    )
    return [(row["on_table"], row["convalidated"], row["inherited"]) for row in rows]


async def test_a_foreign_key_goes_not_valid_on_each_partition_then_the_table_adopts_them_validated(seeded_db, connect, tmp_path):
    location = tmp_path / "migrations"
    [not_valid, validate] = history_with(location, REVIEWER_NOT_VALID, REVIEWER_VALIDATE)
    config = aerich_config(tmp_path, location)
    connection = await connect(seeded_db)
    leaves = await connection.fetchval("SELECT count(*) FROM pg_partition_tree('question_attempts') WHERE isleaf")

    first = aerich("upgrade", database=seeded_db, config=config)  # both steps, through plain Aerich
    assert first.returncode == 0, first.stderr
    keys = await reviewer_keys(connection)
    assert keys[0] == ("question_attempts", True, False)
    assert len(keys) == leaves + 1 and all(validated and inherited for _, validated, inherited in keys[1:])
    with_ref = await connection.fetchval("SELECT id FROM users LIMIT 1")
    await connection.execute(f"UPDATE question_attempts SET test_reviewer_id = '{with_ref}' WHERE ctid IN (SELECT ctid FROM question_attempts LIMIT 1)")
    try:
        await connection.execute(f"UPDATE question_attempts SET test_reviewer_id = '{uuid.uuid4()}' WHERE ctid IN (SELECT ctid FROM question_attempts LIMIT 1)")
        raise AssertionError("the foreign key let a reviewer who does not exist in")
    except asyncpg.ForeignKeyViolationError:
        pass

    back = aerich("downgrade", "-v", str(history.version_number(validate)), "--yes", database=seeded_db, config=config)
    assert back.returncode == 0, back.stderr
    assert await reviewer_keys(connection) == sorted((name, False, False) for name in await partition_names(connection))
    down = run_cli(LANGLEARN, "downgrade", "--steps", "1", "--yes", "--migrations", str(location), database=seeded_db)
    assert down.returncode == 0, down.stderr
    assert await reviewer_keys(connection) == []
    again = run_cli(LANGLEARN, "upgrade", "--migrations", str(location), database=seeded_db)
    assert again.returncode == 0, again.stderr
    assert await reviewer_keys(connection) == keys
    assert not_valid in again.stderr + again.stdout


async def partition_names(connection: asyncpg.Connection) -> list[str]:
    return [row[0] for row in await connection.fetch("SELECT relid::regclass::text FROM pg_partition_tree('question_attempts') WHERE isleaf")]
