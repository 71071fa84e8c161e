"""The constraints migrations 6 and 7 add, each met with the row it exists to reject, and the ledger order.

Every case changes one row of the demo seed twice: into what the constraint forbids (the database
must refuse it, naming the constraint) and into the nearest value it allows (accepted, so a case
cannot pass because its statement touched nothing or failed for another reason). That the scale
seed satisfies all of them is tests/test_online_migration.py's `test_a_scale_seed_verifies_clean`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import asyncpg
import pytest
from tortoise.exceptions import IntegrityError

from langlearn import history
from langlearn.models import User
from langlearn.startup import database
from langlearn.verify import check_invariants

HISTORY = history.load_history()
HOT_PATH_INDEXES = "6_20261125214626_hot_path_indexes.py"
LEDGER_ORDER = "7_20261125214835_ledger_order_and_constraints.py"
# Scaffolding of migration 7, dropped once SET NOT NULL has used it.
LEDGER_SEQ_NOT_NULL = "wallet_transactions_ledger_seq_not_null"
# The unique keys the composite foreign keys reference: they hold the table's primary key, so no row can break one
# without breaking the primary key first (tested below as what the foreign keys reference, not with a row).
REFERENCED_KEYS = {"wallet_transactions_wallet_id_user_id_fkey": "idx_user_wallet_id_user", "lessons_unit_id_course_id_fkey": "idx_unit_id_course"}


def first(table: str, where: str = "TRUE") -> str:
    """The id of one row of `table`, the same every time."""
    return f"(SELECT id FROM {table} WHERE {where} ORDER BY id LIMIT 1)"


def set_column(table: str, assignment: str, where: str = "TRUE") -> str:
    return f"UPDATE {table} SET {assignment} WHERE id = {first(table, where)}"


@dataclass(frozen=True)
class Case:
    constraint: str
    error: type[asyncpg.IntegrityConstraintViolationError]
    rejected: str  # one row changed into what the constraint exists to reject
    accepted: str  # the same row changed into the nearest value it allows

    @property
    def id(self) -> str:
        return self.constraint


def negative(constraint: str, table: str, column: str) -> list[pytest.param]:
    """A count, size or duration below zero, and zero itself."""
    return [pytest.param(
        Case(constraint, asyncpg.CheckViolationError, set_column(table, f"{column} = -1"), set_column(table, f"{column} = 0")),
        id=f"{constraint}:{column}",
    )]


# A Tuesday and the Monday before it, years before the seed's weeks (no XP, no rank there).
TUESDAY, MONDAY = "DATE '2001-01-02'", "DATE '2001-01-01'"
LEAGUE_ENTRY = "INSERT INTO leaderboard_entries (user_id, week_start, week_end, league) VALUES ({user}, {week}, {week} + 6, 'bronze')"
LEDGER_ENTRY = (
    "INSERT INTO wallet_transactions (wallet_id, user_id, transaction_type, amount, balance_after) "
    "SELECT w.id, {user}, 'earn', 5, w.gems + 5 FROM user_wallets w WHERE w.id = " + first("user_wallets")
)
# another course's unit, or one of the lesson's own course
MOVE_LESSON = (
    "UPDATE lessons l SET unit_id = (SELECT u.id FROM units u WHERE u.course_id {op} l.course_id ORDER BY u.id LIMIT 1) "
    "WHERE l.id = " + first("lessons", "unit_id IS NOT NULL")
)
NEW_USER = "INSERT INTO users (email, username, hashed_password) SELECT 'probe@example.com', {username}, 'x' FROM users WHERE id = " + first(
    "users", "username <> upper(username)"
)

CASES = [
    *negative("courses_totals_check", "courses", "total_xp"),
    *negative("courses_totals_check", "courses", "estimated_duration"),
    *negative("units_total_lessons_check", "units", "total_lessons"),
    *negative("lessons_estimated_minutes_check", "lessons", "estimated_minutes"),
    *negative("media_resources_size_check", "media_resources", "size_bytes"),
    *negative("media_resources_size_check", "media_resources", "duration_seconds"),
    *negative("user_progress_effort_check", "user_progress", "time_spent_seconds"),
    *negative("user_progress_effort_check", "user_progress", "attempts"),
    *negative("streaks_total_days_active_check", "streaks", "total_days_active"),
    *negative("lesson_attempts_effort_check", "lesson_attempts", "hints_used"),
    *negative("lesson_attempts_effort_check", "lesson_attempts", "lives_remaining"),
    *negative("lesson_attempts_effort_check", "lesson_attempts", "time_spent_ms"),
    *negative("lesson_attempts_effort_check", "lesson_attempts", "avg_response_time_ms"),
    *negative("question_attempts_time_spent_ms_check", "question_attempts", "time_spent_ms"),
    *[
        pytest.param(Case(
            "refresh_tokens_token_hash_check", asyncpg.CheckViolationError,
            set_column("refresh_tokens", f"token_hash = {bad}"), set_column("refresh_tokens", "token_hash = repeat('ab', 32)"),
        ), id=f"refresh_tokens_token_hash_check:{name}")
        # CHAR(64) pads 63 digits with a space, which is no hex digit
        for name, bad in (("upper-case", "repeat('AB', 32)"), ("not hex", "repeat('ag', 32)"), ("63 digits", "repeat('a', 63)"))
    ],
    pytest.param(Case(
        "lesson_attempts_finished_check", asyncpg.CheckViolationError,
        set_column("lesson_attempts", "finished_at = started_at - interval '1 microsecond'"), set_column("lesson_attempts", "finished_at = started_at"),
    ), id="lesson_attempts_finished_check"),
    pytest.param(Case(
        "daily_review_sessions_completed_check", asyncpg.CheckViolationError,
        set_column("daily_review_sessions", "completed_at = started_at - interval '1 microsecond'", "started_at IS NOT NULL"),
        set_column("daily_review_sessions", "completed_at = started_at", "started_at IS NOT NULL"),
    ), id="daily_review_sessions_completed_check"),
    pytest.param(Case(
        "leaderboard_entries_week_start_check", asyncpg.CheckViolationError,
        LEAGUE_ENTRY.format(user=first("users"), week=TUESDAY), LEAGUE_ENTRY.format(user=first("users"), week=MONDAY),
    ), id="leaderboard_entries_week_start_check"),
    pytest.param(Case(
        "wallet_transactions_wallet_id_user_id_fkey", asyncpg.ForeignKeyViolationError,
        LEDGER_ENTRY.format(user="(SELECT u.id FROM users u WHERE u.id <> w.user_id ORDER BY u.id LIMIT 1)"),  # another user's entry in this wallet
        LEDGER_ENTRY.format(user="w.user_id"),
    ), id="wallet_transactions_wallet_id_user_id_fkey"),
    pytest.param(Case(
        "lessons_unit_id_course_id_fkey", asyncpg.ForeignKeyViolationError, MOVE_LESSON.format(op="<>"), MOVE_LESSON.format(op="="),
    ), id="lessons_unit_id_course_id_fkey"),
    pytest.param(Case(
        "idx_users_username_lower", asyncpg.UniqueViolationError,
        NEW_USER.format(username="upper(username)"),  # an existing username in another case
        NEW_USER.format(username="upper(username) || '2'"),
    ), id="idx_users_username_lower"),
]


@pytest.mark.parametrize("case", CASES)
async def test_a_new_constraint_rejects_the_row_it_exists_to_reject_naming_itself(seeded_db, connect, case: Case):
    connection = await connect(seeded_db)

    with pytest.raises(case.error) as refused:
        await connection.execute(case.rejected)

    assert refused.value.constraint_name == case.constraint, refused.value
    assert (await connection.execute(case.accepted)).endswith(" 1")  # UPDATE 1 / INSERT 0 1: the row itself is fine


def test_every_constraint_the_migrations_add_has_a_case():
    """So that a constraint added to migration 6 or 7 later cannot go untested."""
    added = set(re.findall(r'ADD CONSTRAINT "(\w+)"', HISTORY.get(LEDGER_ORDER).sql("up"))) - {LEDGER_SEQ_NOT_NULL}
    unique = set(re.findall(r'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "(\w+)"', HISTORY.get(HOT_PATH_INDEXES).sql("up")))
    assert set(REFERENCED_KEYS.values()) <= unique
    assert {param.values[0].constraint for param in CASES} == added | (unique - set(REFERENCED_KEYS.values()))


async def test_the_composite_foreign_keys_reference_the_unique_keys_of_migration_6(head_db, connect):
    connection = await connect(head_db)
    rows = await connection.fetch(
        "SELECT conname, conindid::regclass::text AS key FROM pg_constraint WHERE contype = 'f' AND conname = ANY($1::text[])", list(REFERENCED_KEYS)
    )
    assert {row["conname"]: row["key"] for row in rows} == REFERENCED_KEYS


async def test_the_orm_reports_a_username_taken_in_another_case_as_an_integrity_error_naming_the_index(seeded_db):
    async with database(seeded_db, migrate="off"):
        taken = (await User.all().order_by("id").first()).username
        assert taken != taken.upper()

        with pytest.raises(IntegrityError, match="idx_users_username_lower"):
            await User.create(email="probe@example.com", username=taken.upper(), hashed_password="x")
        assert (await User.create(email="probe@example.com", username=f"{taken.upper()}2", hashed_password="x")).id


# --- the ledger order ------------------------------------------------------------------------------

# Ids in the reverse of the insert order: the old tie-break (created_at, id) would read this ledger backwards.
EARN, SPEND = uuid.UUID("ffffffff-ffff-4fff-bfff-ffffffffffff"), uuid.UUID("00000000-0000-4000-8000-000000000000")
ENTRY = "INSERT INTO wallet_transactions (id, wallet_id, user_id, transaction_type, amount, balance_after) VALUES ($1, $2, $3, $4, $5, $6)"


async def one_wallet(connection: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    """(user id, wallet id) of a new learner with an empty wallet."""
    user = await connection.fetchval("INSERT INTO users (email, username, hashed_password) VALUES ('ledger@example.com', 'ledger', 'x') RETURNING id")
    return user, await connection.fetchval("INSERT INTO user_wallets (user_id) VALUES ($1) RETURNING id", user)


async def test_entries_written_in_one_transaction_share_created_at_and_are_ordered_by_ledger_seq(head_db, connect):
    connection = await connect(head_db)
    user, wallet = await one_wallet(connection)
    async with connection.transaction():  # now() is the transaction's start: both entries get the same created_at
        await connection.execute(ENTRY, EARN, wallet, user, "earn", 10, 10)
        await connection.execute(ENTRY, SPEND, wallet, user, "spend", -4, 6)
        await connection.execute("UPDATE user_wallets SET gems = 6, total_gems_earned = 10, total_gems_spent = 4 WHERE id = $1", wallet)

    earn, spend = await connection.fetch("SELECT created_at, ledger_seq FROM wallet_transactions WHERE id = ANY($1::uuid[]) ORDER BY amount DESC", [EARN, SPEND])
    assert earn["created_at"] == spend["created_at"]
    assert earn["ledger_seq"] < spend["ledger_seq"]  # drawn from the sequence as the rows were inserted
    assert await check_invariants(connection) == []  # the running sum follows (created_at, ledger_seq), not the ids

    # the same entries in the other order: 6 after -4 is no running sum
    await connection.execute(
        "UPDATE wallet_transactions t SET ledger_seq = o.ledger_seq FROM wallet_transactions o WHERE t.id = ANY($1::uuid[]) AND o.id = ANY($1::uuid[]) AND o.id <> t.id",
        [EARN, SPEND],
    )
    findings = await check_invariants(connection)
    assert [(finding.kind, finding.details["count"]) for finding in findings] == [("balance_after_mismatch", 2)]


async def test_ledger_seq_is_never_null(head_db, connect):
    connection = await connect(head_db)
    user, wallet = await one_wallet(connection)

    with pytest.raises(asyncpg.NotNullViolationError) as refused:
        await connection.execute(
            "INSERT INTO wallet_transactions (wallet_id, user_id, transaction_type, amount, balance_after, ledger_seq) VALUES ($1, $2, 'earn', 5, 5, NULL)", wallet, user
        )
    assert refused.value.column_name == "ledger_seq"
