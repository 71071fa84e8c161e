"""Key spaces of the ledger (issue 21, finding 1): no client request can take the key of a reward the server pays.

A client's idempotency key never contains ':'; the server's own keys are `<source>:<reference>` and only an entry of
that source may carry one (langlearn.operations.wallet.check_ledger_key, and the database's CHECK
wallet_transactions_idempotency_key_check). Each server key is planted through every client-facing wallet operation
(all refused), then the week's close, a lesson reaching the daily goal and a follow unlocking an achievement still pay.
And a server write meeting its key already in the ledger treats it as paid, never as an error.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import asyncpg
import pytest

from langlearn import rules
from langlearn.operations import leagues, lessons, social, wallet
from langlearn.operations.achievements import Statement, numbered
from langlearn.operations.errors import IdempotencyKeyReused, InvalidRequest
from langlearn.startup import database
from tests.test_leagues import WEEK, assert_closed, build_week
from tests.test_leagues import pooled as league_pool
from tests.test_lessons import first_lesson, new_learner, right_answers, times
from tests.test_wallet_operations import assert_consistent, new_item, new_user, pooled, snapshot


async def plant_everywhere(user: UUID, item: UUID, key: str) -> None:
    """Try `key` through every client-facing wallet operation: each must be refused before writing anything."""
    with pytest.raises(InvalidRequest, match="may not contain ':'"):
        await wallet.purchase(user, item, 1, key)
    with pytest.raises(InvalidRequest, match="may not contain ':'"):
        await wallet.spend(user, 1, "shop", key)
    with pytest.raises(InvalidRequest, match="may not contain ':'"):
        await wallet.earn(user, 1, "bonus", key)


# --- the operations refuse, the database refuses ------------------------------------------------------

@pytest.mark.clock  # the week closes by the clock
async def test_a_purchase_keyed_like_the_promotion_reward_cannot_break_the_close(head_db, connect):
    connection = await connect(head_db)
    users = await build_week(connection)
    item = await new_item(connection, "hint", 5)
    before = await snapshot(connection, users["b_high"])
    async with database(league_pool(head_db), migrate="check", global_fallback=False):
        await plant_everywhere(users["b_high"], item, leagues.promotion_key(WEEK))
        assert await snapshot(connection, users["b_high"]) == before
        closed = await leagues.close_week(WEEK)
    assert (closed.rewards_paid, closed.already_closed) == (3, False)
    await assert_closed(connection, users)


async def test_the_database_refuses_a_server_key_on_an_entry_of_another_source(head_db, connect):
    connection = await connect(head_db)
    user = await new_user(connection, "squatter", gems=50)
    wallet_id = await connection.fetchval("SELECT id FROM user_wallets WHERE user_id = $1", user)
    insert = """INSERT INTO wallet_transactions (wallet_id, user_id, transaction_type, amount, balance_after, source, idempotency_key)
                VALUES ($1, $2, 'spend', -1, 49, $3, $4)"""
    for source, key in (("shop", "league_promotion:2026-11-02"), (None, "daily_goal:2026-11-02"), ("achievement", "achievement")):
        if ":" in key:
            with pytest.raises(asyncpg.CheckViolationError) as refused:
                await connection.execute(insert, wallet_id, user, source, key)
            assert refused.value.constraint_name == "wallet_transactions_idempotency_key_check"
        else:  # no ':': a client's key, whatever its words
            await connection.execute("UPDATE user_wallets SET gems = 49, total_gems_spent = 1 WHERE id = $1", wallet_id)
            await connection.execute(insert, wallet_id, user, source, key)
    await assert_consistent(connection)


async def test_server_keys_and_client_keys_in_the_operations(head_db, connect):
    connection = await connect(head_db)
    user = await new_user(connection, "keys", gems=100)
    async with database(pooled(head_db), migrate="check", global_fallback=False):
        paid = await wallet.earn(user, 5, "referral", wallet.server_key("referral", "friend-1"), kind="reward")
        assert not paid.replayed  # the server's own key, in its source's namespace
        with pytest.raises(InvalidRequest, match="may not contain ':'"):
            await wallet.earn(user, 5, "referral", wallet.server_key("welcome_bonus", "x"), kind="reward")
        client = await wallet.spend(user, 3, "shop", "7b6c2a0e-client-key")
        assert client.gems == 102
    await assert_consistent(connection)


# --- server writes treat their key found as "already paid" ----------------------------------------------

@pytest.mark.clock
async def test_a_promotion_key_already_in_the_ledger_is_paid_once_not_an_error(head_db, connect):
    connection = await connect(head_db)
    users = await build_week(connection)
    # b_high's wallet holds the week's promotion key under another reference (the close's own earlier write, say):
    # before, the close's insert hit the unique key and rolled back for every league
    wallet_id = await connection.fetchval("SELECT id FROM user_wallets WHERE user_id = $1", users["b_high"])
    gems = rules.promotion_gems("bronze")
    await connection.execute(
        """INSERT INTO wallet_transactions (wallet_id, user_id, transaction_type, amount, balance_after, source, reference_id, idempotency_key)
           VALUES ($1, $2, 'reward', $3, 50 + $3, 'league_promotion', 'paid earlier', $4)""",
        wallet_id, users["b_high"], gems, leagues.promotion_key(WEEK))
    await connection.execute("UPDATE user_wallets SET gems = gems + $2, total_gems_earned = total_gems_earned + $2 WHERE id = $1", wallet_id, gems)
    async with database(league_pool(head_db), migrate="check", global_fallback=False):
        closed = await leagues.close_week(WEEK)
        again = await leagues.close_week(WEEK)
    assert (closed.rewards_paid, again.already_closed) == (2, True)
    assert await connection.fetchval("SELECT gems FROM user_wallets WHERE id = $1", wallet_id) == 50 + gems
    await assert_consistent(connection)


@pytest.mark.slow
async def test_an_achievement_key_already_in_the_ledger_does_not_fail_the_follow(seeded_db, connect):
    connection = await connect(seeded_db)
    fan, idol = [await new_user(connection, name) for name in ("keyed_fan", "keyed_idol")]
    first = await connection.fetchrow(
        "SELECT slug, gems_reward FROM achievements WHERE condition_type = 'follow_count' ORDER BY condition_value LIMIT 1")
    assert first["gems_reward"] > 0
    item = await connection.fetchval("SELECT id FROM shop_items WHERE is_available ORDER BY price_gems LIMIT 1")
    async with database(pooled(seeded_db), migrate="check", global_fallback=False):
        await plant_everywhere(fan, item, wallet.server_key("achievement", first["slug"]))  # no client gets the key
        for_the_test = await wallet.earn(fan, first["gems_reward"], "achievement", wallet.server_key("achievement", first["slug"]),
                                         kind="reward", reference_id="planted")
        await social.follow(fan, idol)  # unlocks the achievement: its gems are found paid, not paid twice
    assert not for_the_test.replayed
    assert await connection.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", fan) == first["gems_reward"]
    assert await connection.fetchval(
        "SELECT count(*) FROM user_achievements ua JOIN achievements a ON a.id = ua.achievement_id "
        "WHERE ua.user_id = $1 AND a.slug = $2 AND ua.unlocked_at IS NOT NULL", fan, first["slug"]) == 1
    await assert_consistent(connection)


@pytest.mark.slow
@pytest.mark.clock  # a lesson's day is near now
async def test_a_planted_daily_goal_key_is_refused_and_the_goal_is_paid(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_learner(connection, "goal_keeper")
    item = await connection.fetchval("SELECT id FROM shop_items WHERE is_available ORDER BY price_gems LIMIT 1")
    lesson = await first_lesson(connection)
    started, finished = times()
    day = rules.activity_day(started)
    async with database(pooled(seeded_db), migrate="check", global_fallback=False):
        await plant_everywhere(user, item, wallet.server_key("daily_goal", day.isoformat()))
        done = await lessons.complete_lesson(user, lesson["id"], right_answers(lesson), started, finished, "goal-attempt")
    assert done.passed
    goal = await connection.fetch("SELECT amount FROM wallet_transactions WHERE user_id = $1 AND source = 'daily_goal'", user)
    assert [row["amount"] for row in goal] == [rules.DAILY_GOAL_GEMS]
    await assert_consistent(connection)


# --- a purchase's retry is recognised by its request, not by its wording -------------------------------

async def test_a_purchase_retry_is_recognised_by_its_stored_request(head_db, connect):
    connection = await connect(head_db)
    user = await new_user(connection, "buyer", gems=100)
    item = await new_item(connection, "hints", 10)
    async with database(pooled(head_db), migrate="check", global_fallback=False):
        first = await wallet.purchase(user, item, 2, "buy-1")
        # the shop renames its item and the wording of descriptions changes: a retry is still this purchase
        await connection.execute("UPDATE wallet_transactions SET description = 'Purchased: hints (2)' WHERE id = $1", first.transaction_id)
        retry = await wallet.purchase(user, item, 2, "buy-1")
        with pytest.raises(IdempotencyKeyReused):
            await wallet.purchase(user, item, 3, "buy-1")
    assert (retry.replayed, retry.transaction_id, retry.gems) == (True, first.transaction_id, 80)
    await assert_consistent(connection)


# --- named parameters ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("sql", "expected", "names"), [
    ("SELECT :user, :user2, :user", "SELECT $1, $2, $1", ("user", "user2")),  # a digit ends no name
    ("SELECT ':user', :user", "SELECT ':user', $1", ("user",)),
    ("SELECT 'it''s :a', :b", "SELECT 'it''s :a', $1", ("b",)),
    ("SELECT E'\\' :a', :b", "SELECT E'\\' :a', $1", ("b",)),
    ('SELECT ":a" FROM t WHERE x = :b', 'SELECT ":a" FROM t WHERE x = $1', ("b",)),
    ("SELECT :a -- :b\n, :c", "SELECT $1 -- :b\n, $2", ("a", "c")),
    ("SELECT /* :a */ :b", "SELECT /* :a */ $1", ("b",)),
    ("DO $$ BEGIN PERFORM :a; END $$; SELECT :b", "DO $$ BEGIN PERFORM :a; END $$; SELECT $1", ("b",)),
    ("SELECT $q$ :a $q$, :b::int, x::text", "SELECT $q$ :a $q$, $1::int, x::text", ("b",)),
])
def test_numbered_skips_literals_comments_and_casts(sql, expected, names):
    assert numbered(sql) == (expected, names)


def test_numbered_refuses_positional_parameters_among_names():
    with pytest.raises(ValueError, match=r"\$1"):
        numbered("SELECT :a, $1")


def test_a_statements_arguments_follow_its_names():
    statement = Statement.of("SELECT :b, :a, :b")
    assert (statement.sql, statement.arguments({"a": 1, "b": 2})) == ("SELECT $1, $2, $1", [2, 1])


def test_week_key_is_in_the_promotion_namespace():
    assert leagues.promotion_key(WEEK) == f"league_promotion:{WEEK}"
    assert leagues.promotion_key(WEEK + timedelta(days=7)) != leagues.promotion_key(WEEK)
