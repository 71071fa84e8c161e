"""The migration history itself: it builds SCHEMA.md from nothing, every step reverts exactly,
data survives, and models and migrations cannot drift apart unnoticed."""

from __future__ import annotations

import re
import shutil
from datetime import date, datetime, timezone
from pathlib import Path
from uuid import uuid4

import pytest

import langlearn.models as models
from langlearn import history
from langlearn.models.enums import ENUM_TYPES
from langlearn.verify import check_schema
from tests.catalog import describe_difference, snapshot
from tests.conftest import REPO_ROOT, run_cli
from tests.schema_spec import ENUMS, SPEC, Column, Table, normalise_check, normalise_default

VERSIONS = history.version_files()
PHASE_TABLES = {
    0: {"users", "courses", "lessons", "vocabulary_items", "user_progress", "streaks"},
    1: {"user_devices", "refresh_tokens"},
    2: {"units", "media_resources"},
    3: {"lesson_attempts", "question_attempts", "user_vocab_knowledge", "daily_review_sessions"},
    4: {
        "achievements", "user_achievements", "user_wallets", "wallet_transactions", "leaderboard_entries",
        "user_following", "activity_feeds", "shop_items", "user_inventory",
    },
}


def test_history_is_the_five_phases_of_schema_md_in_order():
    names = [re.sub(r"^\d+_\d+_", "", v).removesuffix(".py") for v in VERSIONS[:5]]
    assert names == ["baseline", "phase1_users", "phase2_content", "phase3_learning", "phase4_gamification"]
    assert [history.version_number(v) for v in VERSIONS] == list(range(len(VERSIONS)))


def test_every_hand_edited_migration_says_why_in_a_comment():
    for version in VERSIONS:
        text = (history.MIGRATIONS_DIR / version).read_text()
        assert text.startswith('"""'), f"{version} opens with no docstring"
        assert "hand edit:" in text, f"{version} has no hand-edit comments"


# --- the catalog at head, read from PostgreSQL and compared with SCHEMA.md --------------------

CATALOG_QUERIES = {
    "columns": """
        SELECT c.relname AS table, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type,
               a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS default
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "constraints": """
        SELECT c.relname AS table, k.contype::text AS kind, pg_get_constraintdef(k.oid) AS definition,
               f.relname AS target,
               ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                     JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i) AS columns
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_class f ON f.oid = k.confrelid
        WHERE n.nspname = 'public'
    """,
    "indexes": """
        SELECT t.relname AS table, i.relname AS name, x.indisunique AS is_unique, x.indisprimary AS is_primary,
               ARRAY(SELECT a.attname FROM unnest(x.indkey::int2[]) WITH ORDINALITY u(n, o)
                     JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = u.n ORDER BY u.o) AS columns
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'public'
    """,
    "enums": """
        SELECT t.typname AS name, array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
        FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' GROUP BY t.typname
    """,
}

FK_ACTION = re.compile(r"ON DELETE (CASCADE|SET NULL|RESTRICT|SET DEFAULT)")


async def read_catalog(connection) -> tuple[dict[str, Table], dict[str, list[str]]]:
    rows = {kind: await connection.fetch(query) for kind, query in CATALOG_QUERIES.items()}
    tables: dict[str, Table] = {}
    foreign_keys = {}
    for row in rows["constraints"]:
        if row["kind"] == "f":
            action = FK_ACTION.search(row["definition"])
            foreign_keys[(row["table"], row["columns"][0])] = (row["target"], action.group(1) if action else "NO ACTION")
    for row in rows["columns"]:
        table = tables.setdefault(row["table"], Table())
        table.columns[row["column"]] = Column(
            row["type"], row["not_null"], normalise_default(row["default"]), foreign_keys.get((row["table"], row["column"]))
        )
    for row in rows["constraints"]:
        if row["kind"] == "c":
            tables[row["table"]].checks.add(normalise_check(row["definition"]))
    for row in rows["indexes"]:
        table = tables[row["table"]]
        columns = tuple(row["columns"])
        if row["is_primary"]:
            continue
        if row["is_unique"]:
            table.uniques.add(columns)
        table.indexes[row["name"]] = (row["is_unique"], columns)
    return tables, {row["name"]: list(row["labels"]) for row in rows["enums"]}


@pytest.fixture
async def catalog(head_db, connect):
    return await read_catalog(await connect(head_db))


async def test_head_has_every_table_of_schema_md_and_nothing_unexplained(catalog):
    tables, _ = catalog
    assert set(SPEC) <= set(tables), f"missing: {set(SPEC) - set(tables)}"
    # later migrations may add tables of their own, as long as the models declare them
    model_tables = {getattr(models, name)._meta.db_table for name in models.__all__}
    assert set(tables) - set(SPEC) <= {"aerich"} | model_tables


@pytest.mark.parametrize("table_name", sorted(SPEC))
async def test_columns_match_schema_md(catalog, table_name):
    tables, _ = catalog
    expected, actual = SPEC[table_name].columns, tables[table_name].columns
    assert sorted(actual) == sorted(expected)
    for name, column in expected.items():
        assert actual[name] == column, f"{table_name}.{name}"


@pytest.mark.parametrize("table_name", sorted(SPEC))
async def test_constraints_and_indexes_match_schema_md(catalog, table_name):
    tables, _ = catalog
    expected, actual = SPEC[table_name], tables[table_name]
    assert actual.checks == expected.checks
    assert actual.uniques == expected.uniques
    for name, definition in expected.indexes.items():
        assert actual.indexes.get(name) == definition, f"index {name}"
    for columns in expected.unnamed_indexes:
        assert any(cols == columns for _, cols in actual.indexes.values()), f"no index on {columns}"


async def test_enum_types_have_schema_md_labels_in_order(catalog):
    _, enums = catalog
    assert {name: labels for name, labels in enums.items() if name in ENUMS} == ENUMS
    assert set(enums) - set(ENUMS) <= set(ENUM_TYPES), "an enum type the models do not declare"


# --- each step reverts exactly; the whole history round-trips --------------------------------


async def test_each_step_upgrades_and_downgrades_back_to_the_same_catalog(empty_db, connect):
    connection = await connect(empty_db)
    before = await snapshot(connection)
    for number, version in enumerate(VERSIONS):
        assert await history.upgrade(empty_db, to=number) == [version]
        after = await snapshot(connection)
        assert after != before, f"{version} changed nothing"
        assert await history.downgrade(empty_db, to=number - 1) == [version]
        difference = describe_difference(before, await snapshot(connection))
        assert not difference, f"downgrading {version} did not restore the schema:\n{difference}"
        assert await history.upgrade(empty_db, to=number) == [version]
        difference = describe_difference(after, await snapshot(connection))
        assert not difference, f"re-applying {version} gave another schema:\n{difference}"
        before = after


async def test_all_the_way_down_leaves_no_project_object_and_up_again_ends_where_it_started(head_db, connect):
    connection = await connect(head_db)
    at_head = await snapshot(connection)
    reverted = await history.downgrade(head_db, to=-1)
    assert reverted == list(reversed(VERSIONS))
    leftover = await snapshot(connection)
    assert all(not objects for objects in leftover.values()), describe_difference({}, leftover)
    assert await connection.fetchval("SELECT count(*) FROM aerich") == 0
    assert await history.upgrade(head_db) == VERSIONS
    assert not describe_difference(at_head, await snapshot(connection))


async def test_phase_tables_appear_with_their_migration(empty_db, connect):
    connection = await connect(empty_db)
    expected: set[str] = set()
    for number, tables in PHASE_TABLES.items():
        await history.upgrade(empty_db, to=number)
        expected |= tables
        present = {r["tablename"] for r in await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert present - {"aerich"} == expected, f"after migration {number}"


# --- data written at the baseline survives the whole history, both ways -----------------------

BASELINE_ROWS = {
    "users": ["id", "email", "username", "hashed_password", "total_xp", "level"],
    "courses": ["id", "title", "language", "level", "total_lessons", "is_published"],
    "lessons": ["id", "course_id", "title", "order_index", "content", "xp_reward"],
    "vocabulary_items": ["id", "language", "word", "definition", "part_of_speech", "difficulty_level", "lesson_id"],
    "user_progress": ["id", "user_id", "lesson_id", "course_id", "status", "score"],
    "streaks": ["id", "user_id", "current_streak", "longest_streak", "last_activity_date"],
}


async def _write_baseline_rows(connection) -> None:
    user, course, lesson = uuid4(), uuid4(), uuid4()
    await connection.execute(
        "INSERT INTO users (id, email, username, hashed_password, total_xp, level) VALUES ($1, 'an@example.org', 'an', '$argon2id$v=19$m=65536,t=3,p=4$x$y', 120, 'B1')",
        user,
    )
    await connection.execute(
        "INSERT INTO courses (id, title, language, level, total_lessons, is_published) VALUES ($1, 'English A1', 'en', 'A1', 1, true)",
        course,
    )
    await connection.execute(
        """INSERT INTO lessons (id, course_id, title, order_index, content, xp_reward)
           VALUES ($1, $2, 'Greetings', 0, '{"exercises": [{"type": "translation", "answer": "hello"}]}', 15)""",
        lesson, course,
    )
    await connection.execute(
        "INSERT INTO vocabulary_items (id, language, word, definition, part_of_speech, difficulty_level, lesson_id) "
        "VALUES ($1, 'en', 'hello', 'a greeting', 'interjection', 'A1', $2)",
        uuid4(), lesson,
    )
    await connection.execute(
        "INSERT INTO user_progress (id, user_id, lesson_id, course_id, status, score) VALUES ($1, $2, $3, $4, 'completed', 90)",
        uuid4(), user, lesson, course,
    )
    await connection.execute(
        "INSERT INTO streaks (id, user_id, current_streak, longest_streak, last_activity_date) VALUES ($1, $2, 3, 7, $3)",
        uuid4(), user, date(2026, 11, 20),
    )


async def _read_rows(connection) -> dict[str, list[dict]]:
    return {
        table: [dict(r) for r in await connection.fetch(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id")]
        for table, columns in BASELINE_ROWS.items()
    }


async def test_baseline_rows_survive_upgrade_to_head_with_new_columns_defaulted_and_the_way_back(empty_db, connect):
    connection = await connect(empty_db)
    await history.upgrade(empty_db, to=0)
    await _write_baseline_rows(connection)
    written = await _read_rows(connection)
    assert all(written.values())

    await history.upgrade(empty_db)
    assert await _read_rows(connection) == written
    user = await connection.fetchrow("SELECT provider::text, last_login_ip FROM users")
    assert dict(user) == {"provider": "local", "last_login_ip": None}
    course = await connection.fetchrow("SELECT tags::text, total_xp, estimated_duration, content_version FROM courses")
    assert dict(course) == {"tags": "[]", "total_xp": 0, "estimated_duration": 0, "content_version": 1}
    lesson = await connection.fetchrow(
        "SELECT unit_id, prerequisite_lesson_id, pass_score, content_version, lesson_type::text, estimated_minutes FROM lessons"
    )
    assert dict(lesson) == {
        "unit_id": None, "prerequisite_lesson_id": None, "pass_score": 80, "content_version": 1,
        "lesson_type": "lesson", "estimated_minutes": 10,
    }
    assert await connection.fetchval("SELECT freeze_count FROM streaks") == 0

    await history.downgrade(empty_db, to=0)
    assert await _read_rows(connection) == written


async def test_raw_sql_inserts_get_every_default_from_the_database(head_db, connect):
    """Other services insert without the ORM: ids, timestamps, JSON and enum defaults come from PostgreSQL."""
    connection = await connect(head_db)
    row = await connection.fetchrow(
        "INSERT INTO users (email, username, hashed_password) VALUES ('raw@example.org', 'raw', 'x') RETURNING *"
    )
    assert row["id"] is not None and row["level"] == "A1" and row["provider"] == "local"
    assert row["created_at"].tzinfo is not None and row["created_at"] <= datetime.now(timezone.utc)
    item = await connection.fetchrow(
        "INSERT INTO achievements (slug, name, description, condition_type) VALUES ('first', 'First', 'd', 'lesson_complete') RETURNING condition_data::text, rarity::text"
    )
    assert dict(item) == {"condition_data": "{}", "rarity": "common"}


# --- no drift between models and migrations --------------------------------------------------


def _aerich_config_with_location(tmp_path: Path) -> Path:
    """A copy of the history and a pyproject pointing Aerich at it, so `aerich migrate` writes nothing into the repo."""
    shutil.copytree(REPO_ROOT / "migrations", tmp_path / "migrations")
    config = tmp_path / "pyproject.toml"
    config.write_text(
        '[tool.aerich]\ntortoise_orm = "langlearn.settings.TORTOISE_ORM"\n'
        f'location = "{tmp_path / "migrations"}"\nsrc_folder = "{REPO_ROOT}"\n'
    )
    return config


def test_aerich_migrate_finds_no_change_at_head(head_db, tmp_path):
    config = _aerich_config_with_location(tmp_path)
    result = run_cli("aerich", "-c", str(config), "migrate", "--offline", "--name", "drift", database=head_db)
    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout
    assert sorted(p.name for p in (tmp_path / "migrations" / "models").glob("*.py")) == VERSIONS


async def test_schema_built_by_the_migrations_matches_the_models(head_db, connect):
    findings = await check_schema(await connect(head_db))
    assert findings == []


# --- the guide's own workflow, through the real CLIs ------------------------------------------


def test_aerich_cli_upgrade_downgrade_one_step_and_all_from_an_empty_database(empty_db):
    upgrade = run_cli("aerich", "upgrade", database=empty_db)
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.splitlines() == [f"Success upgrading to {v}" for v in VERSIONS]
    assert "No available heads." in run_cli("aerich", "heads", database=empty_db).stdout

    one = run_cli("aerich", "downgrade", "--yes", database=empty_db)
    assert one.stdout.strip() == f"Success downgrading to {VERSIONS[-1]}"
    assert run_cli("aerich", "heads", database=empty_db).stdout.split() == [VERSIONS[-1]]

    everything = run_cli("aerich", "downgrade", "-v", "0", "--yes", database=empty_db)
    assert everything.returncode == 0, everything.stderr
    assert everything.stdout.splitlines() == [f"Success downgrading to {v}" for v in reversed(VERSIONS[:-1])]
    assert run_cli("aerich", "upgrade", database=empty_db).returncode == 0


async def test_upgrade_fake_stamps_a_database_whose_tables_already_exist(head_db, connect):
    """The guide's "table already exists": stamp the versions without running them."""
    await (await connect(head_db)).execute("DELETE FROM aerich")
    failing = run_cli("aerich", "upgrade", database=head_db)
    assert failing.returncode != 0 and "already exists" in failing.stderr
    faked = run_cli("aerich", "upgrade", "--fake", database=head_db)
    assert faked.returncode == 0
    assert faked.stdout.splitlines() == [f"Upgrading to {v}... FAKED" for v in VERSIONS]
    assert "No available heads." in run_cli("aerich", "heads", database=head_db).stdout


def _psql(database: str, command: str) -> str:
    from langlearn.local_server import psql_path

    result = run_cli(str(psql_path()), database, "-X", "-c", command, database=database)
    assert result.returncode == 0, result.stderr
    return result.stdout


GUIDE_FK_QUERY = """SELECT tc.table_name, kcu.column_name, ccu.table_name AS foreign_table_name
FROM information_schema.table_constraints AS tc
JOIN information_schema.key_column_usage AS kcu ON tc.constraint_name = kcu.constraint_name
JOIN information_schema.constraint_column_usage AS ccu ON ccu.constraint_name = tc.constraint_name
WHERE tc.constraint_type = 'FOREIGN KEY' ORDER BY tc.table_name;"""


def test_the_guides_psql_checks_show_what_schema_md_says(head_db):
    listing = _psql(head_db, r"\dt")
    assert set(SPEC) | {"aerich"} <= set(re.findall(r"^ public \| (\w+)", listing, re.M))

    users = _psql(head_db, r"\d users")
    for column in ("email", "hashed_password", "level", "provider", "last_login_ip"):
        assert re.search(rf"^ {column}\s+\|", users, re.M), column
    assert '"users_email_key" UNIQUE CONSTRAINT' in users and "cefr_level" in users

    indexes = _psql(head_db, "SELECT schemaname, tablename, indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY tablename, indexname;")
    for table in SPEC.values():
        for name in table.indexes:
            assert f"| {name}" in indexes, name

    foreign_keys = {tuple(part.strip() for part in line.split("|")) for line in _psql(head_db, GUIDE_FK_QUERY).splitlines() if line.count("|") == 2}
    expected = {(t, c, col.references[0]) for t, table in SPEC.items() for c, col in table.columns.items() if col.references}
    assert expected <= foreign_keys


async def test_production_deployment_backup_upgrade_rollback_and_restore(server, empty_db, connect, tmp_path):
    """The guide's production section, step by step: back up, upgrade, check, roll back, restore."""
    connection = await connect(empty_db)
    await history.upgrade(empty_db, to=len(VERSIONS) - 2)
    await _write_baseline_rows(connection)
    before = await snapshot(connection, include_aerich=True)
    rows_before = await _read_rows(connection)

    backup = tmp_path / "backup.sql"
    dump = run_cli("langlearn", "server", "pg_dump", "-f", str(backup), database=empty_db)
    assert dump.returncode == 0, dump.stderr
    assert run_cli("aerich", "upgrade", database=empty_db).stdout.strip() == f"Success upgrading to {VERSIONS[-1]}"
    counts = _psql(empty_db, "SELECT (SELECT COUNT(*) FROM users) AS users, (SELECT COUNT(*) FROM courses) AS courses;")
    assert re.search(r"^\s*1 \|\s+1$", counts, re.M), counts
    assert run_cli("aerich", "downgrade", "--yes", database=empty_db).returncode == 0
    assert not describe_difference(before, await snapshot(connection, include_aerich=True))

    restored = await server.create()
    try:
        load = run_cli("langlearn", "server", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(backup), database=restored)
        assert load.returncode == 0, load.stderr
        restored_connection = await connect(restored)
        assert not describe_difference(before, await snapshot(restored_connection, include_aerich=True))
        assert await _read_rows(restored_connection) == rows_before
    finally:
        await server.drop(restored)
