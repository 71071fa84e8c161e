"""The verification: a clean database reports nothing, and every kind of drift introduced by hand
(raw SQL, as a user with psql would) is reported as exactly one finding, by the library and the CLI."""

from __future__ import annotations

import json

import asyncpg
import pytest

from langlearn.history import version_files
from langlearn.verify import Severity, VerificationResult, check_invariants, check_migrations, check_schema, expected_schema
from tests.conftest import run_cli

HEAD = version_files()[-1]


def verify_cli(database: str, *args: str):
    return run_cli("langlearn", "verify", *args, database=database)


def found(findings) -> set[tuple[str, str, str]]:
    return {(finding.severity.value, finding.kind, finding.subject) for finding in findings}


async def assert_reported(database: str, connection, check, expected: set[tuple[str, str, str]]) -> list:
    """The library reports exactly `expected`, and so does the CLI, exiting 1."""
    findings = await check(connection)
    assert found(findings) == expected, [finding.message for finding in findings]
    assert all("\n" not in finding.message for finding in findings)
    result = verify_cli(database, "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert {(f["severity"], f["kind"], f["subject"]) for f in report["findings"]} == expected
    return findings


# --- a clean database -------------------------------------------------------------------------


async def test_database_at_head_is_clean(head_db, connect):
    connection = await connect(head_db)
    assert await check_schema(connection) == []
    assert await check_migrations(connection) == []
    assert await check_invariants(connection) == []
    result = verify_cli(head_db)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": clean (schema, migrations, invariants)")


async def test_json_of_a_clean_database_says_ok(head_db):
    result = verify_cli(head_db, "--json", "--skip-invariants")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "ok": True, "exit_code": 0, "checks": ["schema", "migrations"], "errors": 0, "warnings": 0, "findings": [],
    }


@pytest.mark.clock
def test_migrated_and_seeded_database_reports_clean(head_db):
    seeded = run_cli("langlearn", "seed", "--users", "30", database=head_db, timeout=600)
    assert seeded.returncode == 0, seeded.stderr
    result = verify_cli(head_db)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": clean (schema, migrations, invariants)")


# --- schema drift, one test per kind ----------------------------------------------------------


async def test_dropped_index_is_reported_missing(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("DROP INDEX idx_lesson_unit_order")
    [finding] = await assert_reported(head_db, connection, check_schema, {("error", "missing_index", "lessons.idx_lesson_unit_order")})
    assert 'CREATE INDEX "idx_lesson_unit_order" ON "lessons" USING btree ("unit_id", "order_index")' in finding.message


async def test_index_on_other_columns_is_reported_different(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("DROP INDEX idx_unit_course_order; CREATE INDEX idx_unit_course_order ON units (order_index, course_id)")
    [finding] = await assert_reported(head_db, connection, check_schema, {("error", "index_differs", "units.idx_unit_course_order")})
    assert finding.details == {"expected": "an index on (course_id, order_index)", "actual": "an index on (order_index, course_id)"}


async def test_renamed_unique_index_is_reported_missing_with_the_rename_to_apply(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("ALTER INDEX idx_following_unique RENAME TO following_pair")
    [finding] = await assert_reported(head_db, connection, check_schema, {("error", "missing_unique", "user_following.idx_following_unique")})
    assert finding.message.endswith('ALTER INDEX "following_pair" RENAME TO "idx_following_unique"')


async def test_changed_default_is_reported(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("ALTER TABLE users ALTER COLUMN native_language SET DEFAULT 'en'")
    [finding] = await assert_reported(head_db, connection, check_schema, {("error", "default_differs", "users.native_language")})
    assert finding.details == {"expected": "'vi'::character varying", "actual": "'en'::character varying"}


async def test_changed_on_delete_is_reported(head_db, connect):
    connection = await connect(head_db)
    await connection.execute(
        "ALTER TABLE user_inventory DROP CONSTRAINT user_inventory_shop_item_id_fkey, "
        "ADD CONSTRAINT user_inventory_shop_item_id_fkey FOREIGN KEY (shop_item_id) REFERENCES shop_items(id) ON DELETE CASCADE"
    )
    [finding] = await assert_reported(
        head_db, connection, check_schema, {("error", "on_delete_differs", "user_inventory.user_inventory_shop_item_id_fkey")}
    )
    assert finding.details == {"expected": "RESTRICT", "actual": "CASCADE"}


async def test_dropped_check_is_reported_missing(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("ALTER TABLE leaderboard_entries DROP CONSTRAINT leaderboard_entries_week_check")
    [finding] = await assert_reported(
        head_db, connection, check_schema, {("error", "missing_check", "leaderboard_entries.leaderboard_entries_week_check")}
    )
    # the fix is PostgreSQL's own spelling of the model's CHECK, ready to run
    assert finding.message.endswith(
        'ALTER TABLE "leaderboard_entries" ADD CONSTRAINT "leaderboard_entries_week_check" CHECK ((week_end = (week_start + 6)))'
    )


async def test_missing_enum_label_is_reported(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("""
        ALTER TYPE media_type RENAME TO media_type_old;
        CREATE TYPE media_type AS ENUM ('image', 'audio');
        ALTER TABLE media_resources ALTER COLUMN resource_type TYPE media_type USING resource_type::text::media_type;
        DROP TYPE media_type_old;
    """)
    [finding] = await assert_reported(head_db, connection, check_schema, {("error", "missing_enum_label", "media_type.video")})
    assert finding.message.endswith("""ALTER TYPE "media_type" ADD VALUE 'video' AFTER 'audio'""")


async def test_extra_enum_label_is_a_warning(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("ALTER TYPE league_type ADD VALUE 'master'")
    await assert_reported(head_db, connection, check_schema, {("warning", "extra_enum_label", "league_type.master")})


async def test_column_of_another_type_is_reported(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("ALTER TABLE lesson_attempts ALTER COLUMN time_spent_ms TYPE bigint")
    [finding] = await assert_reported(head_db, connection, check_schema, {("error", "type_differs", "lesson_attempts.time_spent_ms")})
    assert finding.details == {"expected": "integer", "actual": "bigint"}


async def test_extra_column_is_a_warning(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("ALTER TABLE users ADD COLUMN added_by_hand text")
    await assert_reported(head_db, connection, check_schema, {("warning", "extra_column", "users.added_by_hand")})


async def test_extra_table_is_a_warning_and_aerich_is_ignored(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("CREATE TABLE legacy_scores (id int PRIMARY KEY)")
    await assert_reported(head_db, connection, check_schema, {("warning", "extra_table", "legacy_scores")})


@pytest.mark.parametrize(
    "drift",
    [
        "DROP INDEX idx_lesson_unit_order",
        "DROP INDEX idx_unit_course_order; CREATE INDEX idx_unit_course_order ON units (order_index, course_id)",
        "ALTER TABLE users ALTER COLUMN native_language SET DEFAULT 'en'",
        "ALTER TABLE users ALTER COLUMN level DROP DEFAULT",
        "ALTER TABLE users ALTER COLUMN avatar_url SET NOT NULL",
        "ALTER TABLE users DROP COLUMN last_login_ip",
        "ALTER TABLE lesson_attempts ALTER COLUMN time_spent_ms TYPE bigint",
        "ALTER TABLE lessons DROP CONSTRAINT lessons_unit_id_fkey",
        "ALTER TABLE user_inventory DROP CONSTRAINT user_inventory_shop_item_id_fkey, ADD CONSTRAINT user_inventory_shop_item_id_fkey "
        "FOREIGN KEY (shop_item_id) REFERENCES shop_items(id) ON DELETE CASCADE",
        "ALTER TABLE leaderboard_entries DROP CONSTRAINT leaderboard_entries_week_check",
        "ALTER TABLE streaks DROP CONSTRAINT streaks_current_streak_check, ADD CONSTRAINT streaks_current_streak_check CHECK (current_streak >= 0)",
        "ALTER TABLE user_progress DROP CONSTRAINT user_progress_user_id_lesson_id_key",
        "DROP INDEX idx_daily_review_user_date",
    ],
)
async def test_the_sql_a_finding_suggests_brings_the_schema_back(head_db, connect, drift):
    connection = await connect(head_db)
    await connection.execute(drift)
    [finding] = await check_schema(connection)
    fix = finding.message.split("fix it in a migration", 1)[1].split(": ", 1)[1]
    await connection.execute(fix)
    assert await check_schema(connection) == []


async def test_model_changed_without_a_migration_is_reported(head_db, connect, monkeypatch):
    """A user edits a model and forgets `aerich migrate`: the database lacks what the model now says."""
    from langlearn.models import User

    expected_schema()  # the models' relations are initialised once, then patched
    monkeypatch.setattr(User._meta.fields_map["target_language"], "db_default", "fr")
    findings = await check_schema(await connect(head_db))
    assert found(findings) == {("error", "default_differs", "users.target_language")}
    assert findings[0].details == {"expected": "'fr'::character varying", "actual": "'en'::character varying"}


async def test_schema_check_leaves_the_callers_transaction_and_session_as_they_were(head_db, connect):
    connection = await connect(head_db)
    async with connection.transaction():
        await connection.execute("CREATE TEMP TABLE mine (x int)")
        assert await check_schema(connection) == []
        assert await connection.fetchval("SELECT count(*) FROM mine") == 0
    temporary = "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()"
    assert await connection.fetchval(temporary) == 1  # the caller's own table, nothing of ours


async def test_schema_check_reuses_its_cached_spelling_yet_still_sees_live_drift(head_db, connect, tmp_path, monkeypatch):
    monkeypatch.setenv("LANGLEARN_CACHE_DIR", str(tmp_path))
    connection = await connect(head_db)
    assert await check_schema(connection) == []
    [cache] = tmp_path.glob("schema-spelling-*.json")
    written = cache.read_text()

    await connection.execute("ALTER TABLE users ALTER COLUMN native_language SET DEFAULT 'en'")
    assert found(await check_schema(connection)) == {("error", "default_differs", "users.native_language")}
    assert cache.read_text() == written  # served from the cache: nothing spelled again


async def test_schema_check_ignores_a_cache_it_did_not_write(head_db, connect, tmp_path, monkeypatch):
    monkeypatch.setenv("LANGLEARN_CACHE_DIR", str(tmp_path))
    connection = await connect(head_db)
    assert await check_schema(connection) == []
    [cache] = tmp_path.glob("schema-spelling-*.json")
    for garbage in ("not json", '{"columns": []}', "[1, 2]"):
        cache.write_text(garbage)
        assert await check_schema(connection) == []
        assert json.loads(cache.read_text())["columns"], "the spelling is written again"


async def test_expected_schema_leaves_an_active_tortoise_context_working(head_db):
    from tortoise.context import TortoiseContext

    from langlearn.models import Course
    from langlearn.settings import tortoise_config

    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(head_db))
        schema = expected_schema()
        assert await Course.all().count() == 0
    assert schema.tables["lessons"].foreign_keys[0].target == "courses"
    assert schema.enums["cefr_level"] == ("A1", "A2", "B1", "B2", "C1", "C2")


# --- migration state --------------------------------------------------------------------------


async def test_pending_migration_is_reported(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("DELETE FROM aerich WHERE id = (SELECT max(id) FROM aerich)")
    [finding] = await assert_reported(head_db, connection, check_migrations, {("error", "pending_migration", HEAD)})
    assert finding.message.endswith("run `langlearn upgrade`")


async def test_version_unknown_to_the_code_is_reported(head_db, connect):
    connection = await connect(head_db)
    future = "99_20990101000000_from_newer_code.py"
    await connection.execute("INSERT INTO aerich (version, app, content) VALUES ($1, 'models', '{}')", future)
    [finding] = await assert_reported(head_db, connection, check_migrations, {("error", "unknown_migration", future)})
    assert "deploy the newer code" in finding.message


async def test_duplicated_version_row_is_reported(head_db, connect):
    connection = await connect(head_db)
    await connection.execute(
        "INSERT INTO aerich (version, app, content) SELECT version, app, content FROM aerich ORDER BY id DESC LIMIT 1"
    )
    [finding] = await assert_reported(head_db, connection, check_migrations, {("error", "duplicate_migration", HEAD)})
    assert finding.details == {"count": 2}


async def test_migration_edited_after_it_was_applied_is_reported(head_db, connect, tmp_path):
    """The file's models state no longer matches what the database recorded when it applied it."""
    connection = await connect(head_db)
    # what a database looks like that applied an earlier edition of the head migration
    await connection.execute(
        "UPDATE aerich SET content = content - (SELECT min(k) FROM jsonb_object_keys(content) k) WHERE version = $1", HEAD
    )
    [finding] = await assert_reported(head_db, connection, check_migrations, {("error", "edited_migration", HEAD)})
    assert "restore it, put the change in a new migration" in finding.message


async def test_database_never_migrated_is_reported_missing_its_history(empty_db, connect):
    findings = await check_migrations(await connect(empty_db))
    assert found(findings) == {("error", "missing_migration_table", "aerich")}


# --- data invariants --------------------------------------------------------------------------

USER_A, USER_B = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
COURSE, UNIT, LESSON_1, LESSON_2 = (f"00000000-0000-0000-0001-00000000000{n}" for n in range(1, 5))
ACHIEVEMENT, WALLET_A, WALLET_B = (f"00000000-0000-0000-0002-00000000000{n}" for n in range(1, 4))
TX_1, TX_2, TX_3 = (f"00000000-0000-0000-0003-00000000000{n}" for n in range(1, 4))
ENTRY_A, ENTRY_B = "00000000-0000-0000-0004-00000000000a", "00000000-0000-0000-0004-00000000000b"
STREAK, SESSION, VOCAB, KNOWLEDGE = (f"00000000-0000-0000-0005-00000000000{n}" for n in range(1, 5))

# Two users in the week of Monday 2025-03-03 (UTC). A: attempts 20 + 15 that week and 5 an earlier
# week, plus an unlocked achievement worth 50 -> total_xp 90; wallet +100 -30 +10 = 80.
# B: 10, and 12 started on Sunday 23:30 at UTC-2, which is Monday in UTC -> 22 that week.
CONSISTENT_DATA = f"""
INSERT INTO users (id, email, username, hashed_password, total_xp) VALUES
    ('{USER_A}', 'a@example.com', 'a', 'x', 90), ('{USER_B}', 'b@example.com', 'b', 'x', 22);
INSERT INTO courses (id, title, language, level, total_lessons) VALUES ('{COURSE}', 'English', 'en', 'A1', 2);
INSERT INTO units (id, course_id, title, order_index, total_lessons) VALUES ('{UNIT}', '{COURSE}', 'Basics', 0, 2);
INSERT INTO lessons (id, course_id, unit_id, title, order_index) VALUES
    ('{LESSON_1}', '{COURSE}', '{UNIT}', 'Hello', 0), ('{LESSON_2}', '{COURSE}', '{UNIT}', 'Numbers', 1);
INSERT INTO lesson_attempts (user_id, lesson_id, started_at, xp_earned) VALUES
    ('{USER_A}', '{LESSON_1}', '2025-03-04 10:00+00', 20), ('{USER_A}', '{LESSON_2}', '2025-03-09 23:59+00', 15),
    ('{USER_A}', '{LESSON_1}', '2025-02-20 10:00+00', 5),
    ('{USER_B}', '{LESSON_1}', '2025-03-05 08:00+00', 10), ('{USER_B}', '{LESSON_2}', '2025-03-02 23:30-02', 12);
INSERT INTO achievements (id, slug, name, description, condition_type, xp_reward) VALUES
    ('{ACHIEVEMENT}', 'first-lesson', 'First lesson', 'Finish a lesson', 'lesson_complete', 50);
INSERT INTO user_achievements (user_id, achievement_id, progress, unlocked_at) VALUES
    ('{USER_A}', '{ACHIEVEMENT}', 1, '2025-03-04 10:05+00'), ('{USER_B}', '{ACHIEVEMENT}', 0, NULL);
INSERT INTO user_wallets (id, user_id, gems, total_gems_earned, total_gems_spent) VALUES
    ('{WALLET_A}', '{USER_A}', 80, 110, 30), ('{WALLET_B}', '{USER_B}', 0, 0, 0);
INSERT INTO wallet_transactions (id, wallet_id, user_id, transaction_type, amount, balance_after, created_at) VALUES
    ('{TX_1}', '{WALLET_A}', '{USER_A}', 'earn', 100, 100, '2025-03-04 10:00+00'),
    ('{TX_2}', '{WALLET_A}', '{USER_A}', 'spend', -30, 70, '2025-03-04 11:00+00'),
    ('{TX_3}', '{WALLET_A}', '{USER_A}', 'reward', 10, 80, '2025-03-05 09:00+00');
INSERT INTO leaderboard_entries (id, user_id, week_start, week_end, league, xp_earned, current_rank) VALUES
    ('{ENTRY_A}', '{USER_A}', '2025-03-03', '2025-03-09', 'bronze', 35, 1),
    ('{ENTRY_B}', '{USER_B}', '2025-03-03', '2025-03-09', 'bronze', 22, 2);
INSERT INTO league_weeks (week_start, created_at) VALUES ('2025-03-03', '2025-03-10 02:05+00');
INSERT INTO streaks (id, user_id, current_streak, longest_streak, last_activity_date) VALUES ('{STREAK}', '{USER_A}', 2, 2, '2025-03-05');
INSERT INTO daily_review_sessions (id, user_id, review_date, started_at, completed_at) VALUES
    ('{SESSION}', '{USER_A}', '2025-03-05', '2025-03-05 08:00+00', '2025-03-05 08:10+00');
INSERT INTO vocabulary_items (id, language, word, definition, part_of_speech, difficulty_level) VALUES
    ('{VOCAB}', 'en', 'hello', 'a greeting', 'interjection', 'A1');
INSERT INTO user_vocab_knowledge (id, user_id, vocab_id, last_review_date) VALUES ('{KNOWLEDGE}', '{USER_A}', '{VOCAB}', '2025-03-05 08:05+00');
"""

# kind -> (SQL breaking that invariant and no other, the id of the row it makes offend)
BREAKS = {
    "wallet_ledger_mismatch": (f"UPDATE user_wallets SET gems = 85, total_gems_earned = 115 WHERE id = '{WALLET_A}'", WALLET_A),
    "balance_after_mismatch": (f"UPDATE wallet_transactions SET balance_after = 75 WHERE id = '{TX_2}'", TX_2),
    "transaction_user_mismatch": (f"UPDATE wallet_transactions SET user_id = '{USER_B}' WHERE id = '{TX_3}'", TX_3),
    "lesson_unit_course_mismatch": (
        f"""INSERT INTO courses (id, title, language, level) VALUES ('{ACHIEVEMENT}', 'Other', 'fr', 'A1');
            INSERT INTO units (id, course_id, title, order_index, total_lessons) VALUES ('{WALLET_B}', '{ACHIEVEMENT}', 'U', 0, 1);
            UPDATE lessons SET unit_id = '{WALLET_B}' WHERE id = '{LESSON_2}';
            UPDATE units SET total_lessons = 1 WHERE id = '{UNIT}'""",
        LESSON_2,
    ),
    "unit_total_lessons_mismatch": (f"UPDATE units SET total_lessons = 3 WHERE id = '{UNIT}'", UNIT),
    "course_total_lessons_mismatch": (f"UPDATE courses SET total_lessons = 1 WHERE id = '{COURSE}'", COURSE),
    "leaderboard_week_not_monday": (
        f"UPDATE leaderboard_entries SET week_start = '2025-03-04', week_end = '2025-03-10', xp_earned = 0, current_rank = NULL "
        f"WHERE id = '{ENTRY_B}'",
        ENTRY_B,
    ),
    "leaderboard_xp_mismatch": (f"UPDATE leaderboard_entries SET xp_earned = 21 WHERE id = '{ENTRY_B}'", ENTRY_B),
    "leaderboard_rank_gap": (f"UPDATE leaderboard_entries SET current_rank = 3 WHERE id = '{ENTRY_B}'", ENTRY_B),
    "leaderboard_rank_order": (
        f"UPDATE leaderboard_entries SET current_rank = CASE id WHEN '{ENTRY_A}' THEN 2 ELSE 1 END", ENTRY_A
    ),
    "league_week_rank_mismatch": (  # an entry added to the closed week after its close, unranked
        f"""INSERT INTO users (id, email, username, hashed_password) VALUES ('{TX_1}', 'c@example.com', 'c', 'x');
            INSERT INTO leaderboard_entries (id, user_id, week_start, week_end, league, xp_earned)
            VALUES ('{STREAK}', '{TX_1}', '2025-03-03', '2025-03-09', 'silver', 0)""",
        STREAK,
    ),
    "user_total_xp_mismatch": (f"UPDATE users SET total_xp = 40 WHERE id = '{USER_A}'", USER_A),
    "streak_in_future": ("UPDATE streaks SET last_activity_date = current_date + 2", STREAK),
    "review_session_in_future": ("UPDATE daily_review_sessions SET completed_at = now() + interval '1 day'", SESSION),
    "vocab_knowledge_in_future": ("UPDATE user_vocab_knowledge SET last_review_date = now() + interval '1 hour'", KNOWLEDGE),
}


@pytest.fixture
async def consistent_db(head_db, connect):
    """A database at head holding a little data that keeps every invariant."""
    await (await connect(head_db)).execute(CONSISTENT_DATA)
    return head_db


async def test_consistent_data_breaks_no_invariant(consistent_db, connect):
    assert await check_invariants(await connect(consistent_db)) == []


@pytest.mark.parametrize("kind", sorted(BREAKS))
async def test_each_broken_invariant_is_reported_with_its_count_and_example(consistent_db, connect, kind):
    from langlearn.verify.invariants import INVARIANTS

    connection = await connect(consistent_db)
    sql, offender = BREAKS[kind]
    if kind in ENFORCED_BY_THE_DATABASE:  # migration 7 made the database refuse it; the check still serves one without it
        table, constraint = ENFORCED_BY_THE_DATABASE[kind]
        with pytest.raises(asyncpg.IntegrityConstraintViolationError) as refused:
            await connection.execute(sql)
        assert refused.value.constraint_name == constraint
        await connection.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{constraint}"')
    await connection.execute(sql)
    findings = await check_invariants(connection)
    subject = next(invariant.subject for invariant in INVARIANTS if invariant.kind == kind)
    assert found(findings) == {("error", kind, subject)}, [finding.message for finding in findings]
    assert findings[0].details["count"] == 1
    assert findings[0].details["example_ids"] == [offender]
    assert offender in findings[0].message


ENFORCED_BY_THE_DATABASE = {
    "transaction_user_mismatch": ("wallet_transactions", "wallet_transactions_wallet_id_user_id_fkey"),
    "lesson_unit_course_mismatch": ("lessons", "lessons_unit_id_course_id_fkey"),
    "leaderboard_week_not_monday": ("leaderboard_entries", "leaderboard_entries_week_start_check"),
}


@pytest.mark.parametrize("rank", ["1", "NULL"], ids=["repeated", "missing"])
async def test_repeated_or_missing_rank_on_a_ranked_board_is_a_rank_gap(consistent_db, connect, rank):
    connection = await connect(consistent_db)
    await connection.execute(f"UPDATE leaderboard_entries SET current_rank = {rank} WHERE id = '{ENTRY_B}'")
    findings = await check_invariants(connection)
    expected = {("error", "leaderboard_rank_gap", "leaderboard_entries.current_rank")}
    if rank == "NULL":  # and an unranked entry of a closed week
        expected.add(("error", "league_week_rank_mismatch", "leaderboard_entries.current_rank"))
    assert found(findings) == expected
    assert all(finding.details["example_ids"] == [ENTRY_B] for finding in findings)


async def test_board_not_ranked_yet_is_no_gap(consistent_db, connect):
    connection = await connect(consistent_db)
    await connection.execute("UPDATE leaderboard_entries SET current_rank = NULL")
    await connection.execute("DELETE FROM league_weeks")  # the week not closed yet
    assert await check_invariants(connection) == []


async def test_a_week_ranked_without_its_close_is_reported(consistent_db, connect):
    connection = await connect(consistent_db)
    await connection.execute("DELETE FROM league_weeks")
    findings = await check_invariants(connection)
    assert found(findings) == {("error", "league_week_rank_mismatch", "leaderboard_entries.current_rank")}
    assert findings[0].details["count"] == 2
    assert findings[0].details["examples"][0] == {"id": ENTRY_A, "actual": "1", "expected": "not closed (no league_weeks row)"}


async def test_wallet_whose_gems_differ_from_its_ledger_is_reported(consistent_db, connect):
    connection = await connect(consistent_db)
    await connection.execute(BREAKS["wallet_ledger_mismatch"][0])
    [finding] = await assert_reported(consistent_db, connection, check_invariants, {("error", "wallet_ledger_mismatch", "user_wallets.gems")})
    assert finding.details["examples"] == [{"id": WALLET_A, "actual": 85, "expected": 80}]


async def test_leaderboard_rank_gap_is_reported(consistent_db, connect):
    connection = await connect(consistent_db)
    await connection.execute(BREAKS["leaderboard_rank_gap"][0])
    [finding] = await assert_reported(
        consistent_db, connection, check_invariants, {("error", "leaderboard_rank_gap", "leaderboard_entries.current_rank")}
    )
    assert finding.details["examples"] == [{"id": ENTRY_B, "actual": 3, "expected": 2}]


async def test_invariants_of_a_missing_table_are_reported_not_checked_and_spoil_no_caller_transaction(head_db, connect):
    connection = await connect(head_db)
    work_mem = await connection.fetchval("SHOW work_mem")
    async with connection.transaction():
        await connection.execute("DROP TABLE leaderboard_entries")
        findings = await check_invariants(connection)
        # the caller's transaction is still usable and its settings are its own again
        assert await connection.fetchval("SELECT count(*) FROM users") == 0
        assert await connection.fetchval("SHOW work_mem") == work_mem
    assert {finding.kind for finding in findings} == {"invariant_not_checked"}
    assert {finding.details["invariant"] for finding in findings} == {
        "leaderboard_week_not_monday", "leaderboard_xp_mismatch", "leaderboard_rank_gap", "leaderboard_rank_order",
        "league_week_rank_mismatch",
    }


# --- the result and the CLI -------------------------------------------------------------------


def test_result_exit_code_is_1_for_a_warning_alone():
    from langlearn.verify import Finding

    result = VerificationResult(findings=(Finding(Severity.WARNING, "schema", "extra_column", "users.x", "m"),))
    assert (result.ok, result.exit_code, result.errors, len(result.warnings)) == (False, 1, [], 1)
    assert json.loads(result.to_json())["findings"][0]["severity"] == "warning"


async def test_report_groups_findings_by_severity(head_db, connect):
    await (await connect(head_db)).execute("ALTER TABLE users ADD COLUMN added_by_hand text; DROP INDEX idx_lesson_unit_order")
    lines = verify_cli(head_db).stdout.splitlines()
    assert lines[0].endswith(": 1 error, 1 warning (schema, migrations, invariants)")
    assert lines[2:4] == ["Errors:", "  [schema] missing_index: lessons.idx_lesson_unit_order"]
    assert lines[6:8] == ["Warnings:", "  [schema] extra_column: users.added_by_hand"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgres://nobody@127.0.0.1:1/nothing", "cannot reach PostgreSQL at 127.0.0.1:1"),
        ("mysql://user@localhost/db", "is not PostgreSQL"),
        ("postgres://user@localhost:notaport/db", "is malformed"),
    ],
)
def test_unusable_database_url_exits_2_with_one_line(url, reason):
    result = run_cli("langlearn", "verify", database=url)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ") and reason in result.stderr
