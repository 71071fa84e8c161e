"""The wallet and shop operations (langlearn.operations.wallet) on a real PostgreSQL, races included."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID, uuid4

import pytest

from langlearn import rules
from langlearn.operations import wallet
from langlearn.operations.errors import (
    FreezeLimit,
    IdempotencyKeyReused,
    InsufficientGems,
    NotAvailable,
    NotOwned,
    OutOfStock,
)
from langlearn.startup import database
from langlearn.verify import check_invariants

POOL = 25  # the Tortoise pool: enough connections for every racer to hold its own


def pooled(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}maxsize={POOL}"


async def new_user(connection, name: str, gems: int = 0) -> UUID:
    user_id = await connection.fetchval(
        "INSERT INTO users (email, username, hashed_password) VALUES ($1, $2, '$argon2id$x') RETURNING id", f"{name}@example.com", name
    )
    if gems:
        wallet_id = await connection.fetchval(
            "INSERT INTO user_wallets (user_id, gems, total_gems_earned) VALUES ($1, $2, $2) RETURNING id", user_id, gems
        )
        await connection.execute(
            """INSERT INTO wallet_transactions (wallet_id, user_id, transaction_type, amount, balance_after, source, idempotency_key)
               VALUES ($1, $2, 'earn', $3, $3, 'welcome_bonus', 'welcome')""", wallet_id, user_id, gems,
        )
    return user_id


async def new_item(connection, name: str, price: int, *, stock: int | None = None, item_type: str = "hint_pack",
                   effects: str = '{"hints": 5}', available: bool = True) -> UUID:
    return await connection.fetchval(
        """INSERT INTO shop_items (name, description, item_type, price_gems, effects, stock_quantity, is_available)
           VALUES ($1, 'test', $2, $3, $4::jsonb, $5, $6) RETURNING id""", name, item_type, price, effects, stock, available,
    )


async def snapshot(connection, user_id: UUID) -> dict:
    """Everything the operations may write for a user, to compare before and after a refusal."""
    return {
        "wallet": await connection.fetchrow("SELECT gems, total_gems_earned, total_gems_spent FROM user_wallets WHERE user_id = $1", user_id),
        "ledger": await connection.fetch("SELECT * FROM wallet_transactions WHERE user_id = $1 ORDER BY created_at, ledger_seq", user_id),
        "inventory": await connection.fetch("SELECT * FROM user_inventory WHERE user_id = $1 ORDER BY shop_item_id", user_id),
        "stock": await connection.fetch("SELECT id, stock_quantity FROM shop_items ORDER BY id"),
        "streak": await connection.fetchrow("SELECT freeze_count FROM streaks WHERE user_id = $1", user_id),
    }


async def assert_consistent(connection) -> None:
    findings = await check_invariants(connection)
    assert findings == [], [f.message for f in findings]


# --- earn and spend ---------------------------------------------------------------------------------

async def test_earn_creates_the_wallet_and_writes_one_entry(head_db, connect):
    connection = await connect(head_db)
    user = await new_user(connection, "earner")
    async with database(head_db, migrate="check", global_fallback=False):
        first = await wallet.earn(user, 30, "daily_goal", "goal-1", reference_id="2026-11-25")
        second = await wallet.earn(user, 5, "achievement", "ach-1", kind="reward")
        again = await wallet.earn(user, 30, "daily_goal", "goal-1", reference_id="2026-11-25")
    assert (first.gems, first.amount, first.replayed) == (30, 30, False)
    assert (second.gems, second.replayed) == (35, False)
    assert again == wallet.WalletResult(first.transaction_id, 30, 30, replayed=True)  # the first result, nothing written
    row = await connection.fetchrow("SELECT gems, total_gems_earned, total_gems_spent FROM user_wallets WHERE user_id = $1", user)
    assert tuple(row) == (35, 35, 0)
    ledger = await connection.fetch(
        "SELECT transaction_type::text, amount, balance_after, source, reference_id, idempotency_key FROM wallet_transactions"
        " WHERE user_id = $1 ORDER BY created_at, ledger_seq", user)
    assert [tuple(r) for r in ledger] == [
        ("earn", 30, 30, "daily_goal", "2026-11-25", "goal-1"), ("reward", 5, 35, "achievement", None, "ach-1")]
    await assert_consistent(connection)


async def test_spend_and_its_refusals(head_db, connect):
    connection = await connect(head_db)
    user = await new_user(connection, "spender", gems=50)
    async with database(head_db, migrate="check", global_fallback=False):
        spent = await wallet.spend(user, 30, "hearts", "refill-1")
        assert (spent.gems, spent.amount, spent.replayed) == (20, -30, False)
        before = await snapshot(connection, user)
        with pytest.raises(InsufficientGems) as refused:
            await wallet.spend(user, 21, "hearts", "refill-2")
        assert refused.value.code == "insufficient_gems"
        with pytest.raises(IdempotencyKeyReused):
            await wallet.spend(user, 10, "hearts", "refill-1")  # same key, other amount
        assert await snapshot(connection, user) == before
        # a retry after the balance fell is still the first (successful) result
        assert await wallet.spend(user, 30, "hearts", "refill-1") == wallet.WalletResult(spent.transaction_id, -30, 20, replayed=True)
    row = await connection.fetchrow("SELECT gems, total_gems_earned, total_gems_spent FROM user_wallets WHERE user_id = $1", user)
    assert tuple(row) == (20, 50, 30)
    await assert_consistent(connection)


# --- purchase ----------------------------------------------------------------------------------------

async def test_purchase_row_by_row(head_db, connect):
    connection = await connect(head_db)
    user = await new_user(connection, "buyer", gems=200)
    item = await new_item(connection, "Lotus", 40, stock=10)
    async with database(head_db, migrate="check", global_fallback=False):
        bought = await wallet.purchase(user, item, 2, "buy-1")
        more = await wallet.purchase(user, item, 1, "buy-2")
    assert (bought.cost, bought.gems, bought.quantity, bought.replayed) == (80, 120, 2, False)
    assert (more.cost, more.gems) == (40, 80)
    assert await connection.fetchval("SELECT stock_quantity FROM shop_items WHERE id = $1", item) == 7
    assert await connection.fetchval("SELECT quantity FROM user_inventory WHERE user_id = $1 AND shop_item_id = $2", user, item) == 3
    entry = await connection.fetchrow("SELECT * FROM wallet_transactions WHERE id = $1", bought.transaction_id)
    assert (entry["transaction_type"], entry["amount"], entry["balance_after"], entry["source"], entry["reference_id"],
            entry["idempotency_key"]) == ("purchase", -80, 120, "shop", str(item), "buy-1")
    row = await connection.fetchrow("SELECT gems, total_gems_earned, total_gems_spent FROM user_wallets WHERE user_id = $1", user)
    assert tuple(row) == (80, 200, 120)
    await assert_consistent(connection)


async def test_purchase_refusals_write_nothing(head_db, connect):
    connection = await connect(head_db)
    user = await new_user(connection, "refused", gems=100)
    sold_out = await new_item(connection, "Sold out", 10, stock=1)
    retired = await new_item(connection, "Retired", 10, available=False)
    dear = await new_item(connection, "Dear", 101, stock=5)
    async with database(head_db, migrate="check", global_fallback=False):
        await wallet.purchase(user, sold_out, 1, "k0")
        before = await snapshot(connection, user)
        for item, quantity, error, code in [
            (sold_out, 1, OutOfStock, "out_of_stock"), (retired, 1, NotAvailable, "not_available"), (dear, 1, InsufficientGems, "insufficient_gems"),
        ]:
            with pytest.raises(error) as refused:
                await wallet.purchase(user, item, quantity, f"k-{code}")
            assert refused.value.code == code
        with pytest.raises(IdempotencyKeyReused):
            await wallet.purchase(user, dear, 1, "k0")
        with pytest.raises(IdempotencyKeyReused):
            await wallet.purchase(user, sold_out, 2, "k0")
        assert await snapshot(connection, user) == before  # the stock taken before InsufficientGems was put back
    await assert_consistent(connection)


async def test_racing_purchases_exactly_k_succeed(head_db, connect):
    """N = 20 purchases at once, gems for k = 7: exactly 7 succeed, 13 get insufficient_gems."""
    connection = await connect(head_db)
    n, k, price = 20, 7, 30
    user = await new_user(connection, "racer", gems=k * price + price - 1)
    item = await new_item(connection, "Boost", price)
    async with database(pooled(head_db), migrate="check", global_fallback=False):
        started = time.perf_counter()
        results = await asyncio.gather(*(wallet.purchase(user, item, 1, f"race-{i}") for i in range(n)), return_exceptions=True)
        elapsed = time.perf_counter() - started
    succeeded = [r for r in results if isinstance(r, wallet.PurchaseResult)]
    refused = [r for r in results if isinstance(r, InsufficientGems)]
    assert (len(succeeded), len(refused)) == (k, n - k), results
    assert sorted(r.gems for r in succeeded) == [price - 1 + price * i for i in range(k)]  # each saw its predecessor
    assert await connection.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", user) == price - 1
    assert await connection.fetchval("SELECT quantity FROM user_inventory WHERE user_id = $1", user) == k
    assert await connection.fetchval("SELECT count(*) FROM wallet_transactions WHERE user_id = $1 AND transaction_type = 'purchase'", user) == k
    await assert_consistent(connection)
    print(f"{n} racing purchases: {elapsed * 1000:.0f} ms")


async def test_racing_buyers_take_exactly_the_stock(head_db, connect):
    connection = await connect(head_db)
    item = await new_item(connection, "Limited", 10, stock=3)
    buyers = [await new_user(connection, f"buyer{i}", gems=100) for i in range(8)]
    async with database(pooled(head_db), migrate="check", global_fallback=False):
        results = await asyncio.gather(*(wallet.purchase(user, item, 1, "limited") for user in buyers), return_exceptions=True)
    assert sum(isinstance(r, wallet.PurchaseResult) for r in results) == 3
    assert sum(isinstance(r, OutOfStock) for r in results) == 5, results
    assert await connection.fetchval("SELECT stock_quantity FROM shop_items WHERE id = $1", item) == 0
    assert await connection.fetchval("SELECT sum(quantity) FROM user_inventory WHERE shop_item_id = $1", item) == 3
    assert await connection.fetchval("SELECT sum(gems) FROM user_wallets") == 8 * 100 - 3 * 10
    await assert_consistent(connection)


async def test_one_key_sent_20_times_at_once_has_one_effect(head_db, connect):
    connection = await connect(head_db)
    user = await new_user(connection, "retrier", gems=100)
    item = await new_item(connection, "Frame", 25, stock=10)
    async with database(pooled(head_db), migrate="check", global_fallback=False):
        started = time.perf_counter()
        results = await asyncio.gather(*(wallet.purchase(user, item, 2, "same-key") for _ in range(20)))
        elapsed = time.perf_counter() - started
        earned = await asyncio.gather(*(wallet.earn(user, 7, "daily_goal", "goal-once") for _ in range(20)))
    assert sum(not r.replayed for r in results) == 1
    first = next(r for r in results if not r.replayed)
    assert {(r.transaction_id, r.cost, r.gems, r.quantity) for r in results} == {(first.transaction_id, 50, 50, 2)}
    assert sum(not r.replayed for r in earned) == 1 and len({(r.transaction_id, r.gems) for r in earned}) == 1
    assert await connection.fetchval("SELECT stock_quantity FROM shop_items WHERE id = $1", item) == 8
    assert await connection.fetchval("SELECT quantity FROM user_inventory WHERE user_id = $1", user) == 2
    assert await connection.fetchval("SELECT count(*) FROM wallet_transactions WHERE user_id = $1", user) == 3  # welcome, purchase, earn
    assert await connection.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", user) == 57
    await assert_consistent(connection)
    print(f"20 replays of one key: {elapsed * 1000:.0f} ms")


# --- activate ----------------------------------------------------------------------------------------

FREEZE = '{"protects_days": 1, "max_held": 2}'
BOOST = '{"xp_multiplier": 2, "duration_minutes": 15}'


async def test_streak_freezes_are_held_in_the_inventory_and_the_streak_alike(head_db, connect):
    connection = await connect(head_db)
    user = await new_user(connection, "freezer", gems=500)
    await connection.execute("INSERT INTO streaks (user_id) VALUES ($1)", user)
    freeze = await new_item(connection, "Freeze", 50, item_type="streak_freeze", effects=FREEZE)
    async with database(head_db, migrate="check", global_fallback=False):
        with pytest.raises(NotOwned):
            await wallet.activate(user, freeze)
        bought = await wallet.purchase(user, freeze, 2, "freezes")
        assert bought.quantity_owned == wallet.MAX_FREEZES
        before = await snapshot(connection, user)
        with pytest.raises(FreezeLimit):  # MAX_FREEZES held: the third is not sold, and nothing is charged
            await wallet.purchase(user, freeze, 1, "one-more")
        assert await snapshot(connection, user) == before
        one = await wallet.activate(user, freeze)
        two = await wallet.activate(user, freeze)  # marking it in use again changes nothing: a missed day spends it
        assert (one.quantity_left, one.freeze_count) == (two.quantity_left, two.freeze_count) == (2, 2)
    assert await connection.fetchval("SELECT freeze_count FROM streaks WHERE user_id = $1", user) == wallet.MAX_FREEZES
    assert await connection.fetchrow("SELECT quantity, is_active FROM user_inventory WHERE user_id = $1", user) == (2, True)
    await assert_consistent(connection)


@pytest.mark.clock
async def test_activate_double_xp_sets_its_expiry(head_db, connect):
    connection = await connect(head_db)
    user = await new_user(connection, "booster", gems=500)
    boost = await new_item(connection, "Boost", 40, item_type="double_xp", effects=BOOST)
    async with database(head_db, migrate="check", global_fallback=False):
        await wallet.purchase(user, boost, 2, "boosts")
        first = await wallet.activate(user, boost)
        assert first.activated_at is not None and first.expires_at is not None
        assert (first.expires_at - first.activated_at).total_seconds() == 15 * 60
        second = await wallet.activate(user, boost)  # still running: extended, not restarted
        assert second.activated_at == first.activated_at
        assert (second.expires_at - first.expires_at).total_seconds() == 15 * 60
        with pytest.raises(NotOwned) as refused:
            await wallet.activate(user, boost)
        assert refused.value.code == "not_owned"
    row = await connection.fetchrow("SELECT quantity, is_active, expires_at FROM user_inventory WHERE user_id = $1", user)
    assert (row["quantity"], row["is_active"], row["expires_at"]) == (0, True, second.expires_at)
    await assert_consistent(connection)


@pytest.mark.clock
async def test_operations_on_the_seed_leave_it_verified(seeded_db, connect):
    from langlearn.verify import verify

    connection = await connect(seeded_db)
    user, gems = await connection.fetchrow(  # a learner who may hold one more freeze (what the seed gave them follows its anchor)
        f"SELECT user_id, gems FROM user_wallets JOIN streaks USING (user_id) WHERE freeze_count < {rules.MAX_FREEZES} "
        "ORDER BY gems DESC, user_id LIMIT 1")
    freeze, price = await connection.fetchrow("SELECT id, price_gems FROM shop_items WHERE item_type = 'streak_freeze'")
    async with database(seeded_db, migrate="check", global_fallback=False):
        await wallet.earn(user, 30 + price, "daily_goal", f"goal-{uuid4()}")  # pays for what follows, whatever they had
        await wallet.spend(user, 30, "hearts", f"hearts-{uuid4()}")
        bought = await wallet.purchase(user, freeze, 1, f"freeze-{uuid4()}")
    assert bought.gems == gems
    result = await verify(seeded_db)
    assert result.errors == [], [f.message for f in result.errors]
