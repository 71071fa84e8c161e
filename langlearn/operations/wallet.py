"""The gem wallet and the shop: earn, spend, purchase, activate an item.

Each operation is one transaction (`in_transaction(PRIMARY)`) of raw SQL on the transaction's connection, so
that every lock and every conditional write is visible here.

Lock order, which every writer of these rows must follow (or deadlocks become possible):
    1. the wallet row:    SELECT … FROM user_wallets WHERE user_id = $1 FOR UPDATE
    2. the shop item row: the conditional stock UPDATE (purchase only)
    3. the inventory row: its upsert / conditional decrement
    4. the streak row:    the freeze_count upsert (a streak freeze bought)
Streak freezes are held in the inventory and counted in `streaks.freeze_count` alike (the verification checks
that they agree): buying one adds to both (at most `MAX_FREEZES` held), a lesson completed after a missed day
takes one from both (`lessons.py`, under the same wallet lock), and activating one only marks it in use.
Key spaces. A client's idempotency key never contains ':'; a key with ':' is the server's own, `<source>:<reference>`
(`server_key`: `league_promotion:2026-12-07`, `daily_goal:2026-12-07`, `achievement:first-lesson`), and only an
entry of that source may carry it. The operations refuse a client key with ':' (`check_ledger_key`), and the
database's CHECK wallet_transactions_idempotency_key_check enforces the same rule for every writer, so no client
request can take a key a server reward will need. A purchase's retry is recognised by its stored request digest
(`request_digest`, the item and quantity), never by reading its description.

A wallet's ledger is written only under its wallet's lock, so the lock serialises one wallet's
requests: the idempotency check that follows it and the insert after that cannot interleave with
another request for the same wallet (a check-then-insert is race-free here; UNIQUE (wallet_id,
idempotency_key) stays as the backstop). Stock and inventory are changed by single conditional
statements (`… >= $q`), which PostgreSQL re-evaluates on the newest row version after waiting for a
concurrent writer, so they never go negative and need no read first.

Ledger order is (created_at, ledger_seq). `now()` is the transaction's *start*, and two transactions
can start in one order and take the wallet lock in the other, so an entry's created_at is
GREATEST(now(), the wallet's newest created_at): never before an entry written earlier, and ties are
broken by ledger_seq, drawn at insert, i.e. under the lock, in write order.

Round trips per call (BEGIN and COMMIT included), independent of the data:
    earn / spend   5: lock, idempotency check, entry + wallet (one statement); a replay 4
    purchase       6: lock, idempotency check, stock, entry + wallet + inventory (one statement);
                   a streak freeze 8 (the freezes held read, the streak's count raised)
    activate       4: item, inventory update
A user's first operation adds 2 (the wallet created, then locked); a refusal reads at most one row more.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from langlearn.operations.errors import (
    FreezeLimit,
    IdempotencyKeyReused,
    InsufficientGems,
    InvalidRequest,
    NotActivatable,
    NotAvailable,
    NotFound,
    NotOwned,
    OutOfStock,
)
from langlearn.operations.retry import retried_on_failover
from langlearn.routing import PRIMARY, write_operation
from langlearn.rules import MAX_FREEZES  # how many freezes a streak may hold

IDEMPOTENCY_KEY_MAX = 100  # wallet_transactions.idempotency_key VARCHAR(100)
SERVER_KEY_SEPARATOR = ":"  # only the server's own keys contain it: `<source>:<reference>`
SHOP_SOURCE = "shop"

EarnKind = Literal["earn", "reward", "refund"]
Row = dict[str, Any]


@dataclass(frozen=True)
class WalletResult:
    """A ledger entry written (or found, `replayed`): `gems` is the balance right after it."""

    transaction_id: UUID
    amount: int  # signed: + earned, - spent
    gems: int
    replayed: bool
    lsn: str | None = field(default=None, compare=False)  # read-your-writes token (langlearn.routing), with standbys


@dataclass(frozen=True)
class PurchaseResult:
    """A purchase made (or found, `replayed`): `cost` gems for `quantity` of the item, `gems` left after it."""

    transaction_id: UUID
    shop_item_id: UUID
    quantity: int
    cost: int
    gems: int
    replayed: bool
    quantity_owned: int  # the inventory's quantity after the purchase (for a replay: now, as it may have been used since)
    lsn: str | None = field(default=None, compare=False)  # read-your-writes token (langlearn.routing), with standbys


@dataclass(frozen=True)
class ActivationResult:
    """One item used: `quantity_left` in the inventory; `freeze_count` for a streak freeze,
    `activated_at`/`expires_at` for a timed boost."""

    shop_item_id: UUID
    item_type: str
    quantity_left: int
    freeze_count: int | None = None
    activated_at: datetime | None = None
    expires_at: datetime | None = None
    lsn: str | None = field(default=None, compare=False)  # read-your-writes token (langlearn.routing), with standbys


# --- SQL -------------------------------------------------------------------------------------------

CREATE_WALLET = "INSERT INTO user_wallets (user_id) SELECT id FROM users WHERE id = $1 ON CONFLICT (user_id) DO NOTHING"
LOCK_WALLET = "SELECT id, gems FROM user_wallets WHERE user_id = $1 FOR UPDATE"


def ledger_time(wallet_id: str) -> str:
    """The created_at of a new entry of the (locked) wallet `wallet_id` (an SQL expression): never before the
    wallet's newest entry, see the module docstring. Every ledger writer uses it."""
    return f"GREATEST(now(), (SELECT max(t.created_at) FROM wallet_transactions t WHERE t.wallet_id = {wallet_id}))"


# a statement of its own after the lock: under READ COMMITTED it sees what the previous holder committed
# (a join in the locking statement would read the entry from the snapshot taken before the wait)
FIND_ENTRY = """
    SELECT id, transaction_type::text AS kind, amount, balance_after, source, reference_id, request_digest
    FROM wallet_transactions WHERE wallet_id = $1 AND idempotency_key = $2
"""
_ENTRY = f"""
    entry AS (
        INSERT INTO wallet_transactions (wallet_id, user_id, transaction_type, amount, balance_after, source,
                                         reference_id, idempotency_key, description, request_digest, created_at)
        VALUES ($1, $2, $3::transaction_type, $4, $5, $6, $7, $8, $9, $10,
                {ledger_time("$1")})
        RETURNING id
    ), wallet AS (
        UPDATE user_wallets
        SET gems = gems + $4, total_gems_earned = total_gems_earned + GREATEST($4, 0),
            total_gems_spent = total_gems_spent + GREATEST(-$4, 0), updated_at = now()
        WHERE id = $1
        RETURNING gems
    )"""
WRITE_ENTRY = f"WITH {_ENTRY} SELECT entry.id, wallet.gems FROM entry, wallet"
TAKE_STOCK = """
    UPDATE shop_items SET stock_quantity = stock_quantity - $2
    WHERE id = $1 AND is_available AND (stock_quantity IS NULL OR stock_quantity >= $2)
    RETURNING price_gems, name, item_type
"""
READ_ITEM = "SELECT name, item_type, is_available, stock_quantity, price_gems, effects FROM shop_items WHERE id = $1"
WRITE_PURCHASE = f"""
    WITH {_ENTRY}, held AS (
        INSERT INTO user_inventory (user_id, shop_item_id, quantity) VALUES ($2, $11, $12)
        ON CONFLICT (user_id, shop_item_id) DO UPDATE SET quantity = user_inventory.quantity + EXCLUDED.quantity
        RETURNING quantity
    )
    SELECT entry.id, wallet.gems, held.quantity FROM entry, wallet, held
"""
READ_OWNED = "SELECT quantity FROM user_inventory WHERE user_id = $1 AND shop_item_id = $2"
FREEZES_HELD = """
    SELECT coalesce(sum(i.quantity), 0) AS held FROM user_inventory i JOIN shop_items s ON s.id = i.shop_item_id
    WHERE i.user_id = $1 AND s.item_type = 'streak_freeze'
"""
ADD_FREEZES = """
    INSERT INTO streaks (user_id, freeze_count) VALUES ($1, $2)
    ON CONFLICT (user_id) DO UPDATE SET freeze_count = streaks.freeze_count + EXCLUDED.freeze_count, updated_at = now()
"""
USE_FREEZE = """
    WITH held AS (
        UPDATE user_inventory SET is_active = true, activated_at = coalesce(activated_at, now())
        WHERE user_id = $1 AND shop_item_id = $2 AND quantity >= 1
        RETURNING quantity
    )
    SELECT held.quantity, (SELECT freeze_count FROM streaks WHERE user_id = $1) AS freeze_count FROM held
"""
# a boost still running is extended from its expiry rather than restarted
USE_BOOST = """
    UPDATE user_inventory
    SET quantity = quantity - 1, is_active = true,
        activated_at = CASE WHEN is_active AND expires_at > now() THEN activated_at ELSE now() END,
        expires_at = GREATEST(expires_at, now()) + make_interval(mins => $3)
    WHERE user_id = $1 AND shop_item_id = $2 AND quantity >= 1
    RETURNING quantity, activated_at, expires_at
"""


# --- operations ------------------------------------------------------------------------------------

@retried_on_failover
@write_operation
async def earn(
    user_id: UUID, amount: int, source: str, idempotency_key: str, *, reference_id: str | None = None,
    kind: EarnKind = "earn", description: str | None = None,
) -> WalletResult:
    """Add `amount` (> 0) gems. A retry with the same key returns the first result and writes nothing."""
    if amount <= 0:
        raise InvalidRequest(f"an amount earned must be positive, not {amount}")
    if kind not in ("earn", "reward", "refund"):
        raise InvalidRequest(f"unknown kind of earning {kind!r}")
    return await _post(user_id, kind, amount, source, reference_id, idempotency_key, description)


@retried_on_failover
@write_operation
async def spend(
    user_id: UUID, amount: int, source: str, idempotency_key: str, *, reference_id: str | None = None,
    description: str | None = None,
) -> WalletResult:
    """Take `amount` (> 0) gems; `InsufficientGems` (nothing written) when the wallet holds fewer."""
    if amount <= 0:
        raise InvalidRequest(f"an amount spent must be positive, not {amount}")
    return await _post(user_id, "spend", -amount, source, reference_id, idempotency_key, description)


@retried_on_failover
@write_operation
async def purchase(user_id: UUID, shop_item_id: UUID, quantity: int, idempotency_key: str) -> PurchaseResult:
    """Buy `quantity` of a shop item: stock taken, gems spent (a "purchase" entry keyed by
    `idempotency_key`), the inventory row created or increased, all or nothing.

    Refusals (nothing written): `NotFound`, `NotAvailable`, `OutOfStock`, `InsufficientGems`,
    `IdempotencyKeyReused` (the key's first purchase was of another item or quantity).
    """
    if quantity < 1:
        raise InvalidRequest(f"a purchase buys at least one item, not {quantity}")
    check_ledger_key(idempotency_key, source=None)  # a purchase's key is always the client's
    request = _purchase_digest(shop_item_id, quantity)
    async with in_transaction(PRIMARY) as conn:
        wallet_id, gems = await lock_wallet(conn, user_id)
        if first := await _find_entry(conn, wallet_id, idempotency_key):
            if not _same_purchase(first, shop_item_id, request):
                raise IdempotencyKeyReused(f"idempotency key {idempotency_key!r} was first used for another request")
            owned = await conn.execute_query_dict(READ_OWNED, [user_id, shop_item_id])
            return PurchaseResult(first["id"], shop_item_id, quantity, -first["amount"], first["balance_after"], replayed=True,
                                  quantity_owned=owned[0]["quantity"] if owned else 0)
        taken = await conn.execute_query_dict(TAKE_STOCK, [shop_item_id, quantity])
        if not taken:
            raise await _why_not_for_sale(conn, shop_item_id, quantity)
        cost = taken[0]["price_gems"] * quantity
        if cost == 0:  # wallet_transactions.amount <> 0: a free item leaves no ledger entry to key a retry on
            raise InvalidRequest("a free item cannot be bought (the ledger records no zero amounts)")
        if gems < cost:  # raising rolls the transaction back: the stock taken above is restored
            raise InsufficientGems(f"{quantity} × {taken[0]['name']} cost {cost} gems; the wallet holds {gems}")
        if taken[0]["item_type"] == "streak_freeze":  # the wallet lock serialises every writer of the user's freezes: this read stays true
            held = (await conn.execute_query_dict(FREEZES_HELD, [user_id]))[0]["held"]
            if held + quantity > MAX_FREEZES:
                raise FreezeLimit(f"{held} streak freezes held; at most {MAX_FREEZES} at a time")
            await conn.execute_query_dict(ADD_FREEZES, [user_id, quantity])
        written = await conn.execute_query_dict(WRITE_PURCHASE, [
            wallet_id, user_id, "purchase", -cost, gems - cost, SHOP_SOURCE, str(shop_item_id), idempotency_key,
            f"Bought {quantity} × {taken[0]['name']}", request, shop_item_id, quantity,
        ])
    return PurchaseResult(written[0]["id"], shop_item_id, quantity, cost, written[0]["gems"], replayed=False,
                          quantity_owned=written[0]["quantity"])


@write_operation
async def activate(user_id: UUID, shop_item_id: UUID) -> ActivationResult:
    """Use a held item: a streak freeze is marked in use (it is spent by a missed day, `lessons.py`; activating it
    again changes nothing); a double XP boost uses one item and is active until now + its
    `effects.duration_minutes` (extending one still running).

    Refusals (nothing written): `NotFound`, `NotOwned`, `NotActivatable`.
    A boost's activation is not idempotent: each call uses one more (a client retrying must not resend blindly).
    """
    async with in_transaction(PRIMARY) as conn:
        items = await conn.execute_query_dict(READ_ITEM, [shop_item_id])
        if not items:
            raise NotFound(f"no shop item {shop_item_id}")
        item = items[0]
        item_type: str = item["item_type"]
        if item_type == "streak_freeze":
            used = await conn.execute_query_dict(USE_FREEZE, [user_id, shop_item_id])
            if not used:
                raise NotOwned(f"no {item['name']} to activate")
            return ActivationResult(shop_item_id, item_type, used[0]["quantity"], freeze_count=used[0]["freeze_count"])
        if item_type == "double_xp":
            minutes = _effects(item).get("duration_minutes")
            if not isinstance(minutes, int) or minutes <= 0:
                raise NotActivatable(f"{item['name']} has no duration_minutes in its effects")
            used = await conn.execute_query_dict(USE_BOOST, [user_id, shop_item_id, minutes])
            if not used:
                raise NotOwned(f"no {item['name']} to activate")
            row = used[0]
            return ActivationResult(shop_item_id, item_type, row["quantity"], activated_at=row["activated_at"], expires_at=row["expires_at"])
        raise NotActivatable(f"{item['name']} ({item_type}) is not activated")


# --- helpers ---------------------------------------------------------------------------------------

async def _post(
    user_id: UUID, kind: str, amount: int, source: str, reference_id: str | None, idempotency_key: str, description: str | None
) -> WalletResult:
    """One ledger entry of `amount` (signed) and the wallet moved by it, under the wallet's lock."""
    check_ledger_key(idempotency_key, source)
    async with in_transaction(PRIMARY) as conn:
        wallet_id, gems = await lock_wallet(conn, user_id)
        if first := await _find_entry(conn, wallet_id, idempotency_key):
            if (first["kind"], first["amount"], first["source"], first["reference_id"]) != (kind, amount, source, reference_id):
                raise IdempotencyKeyReused(f"idempotency key {idempotency_key!r} was first used for another request")
            return WalletResult(first["id"], first["amount"], first["balance_after"], replayed=True)
        if gems + amount < 0:
            raise InsufficientGems(f"spending {-amount} gems needs {-amount - gems} more; the wallet holds {gems}")
        written = await conn.execute_query_dict(WRITE_ENTRY, [
            wallet_id, user_id, kind, amount, gems + amount, source, reference_id, idempotency_key, description, None,
        ])
    return WalletResult(written[0]["id"], amount, written[0]["gems"], replayed=False)


async def lock_wallet(conn: BaseDBAsyncClient, user_id: UUID) -> tuple[UUID, int]:
    """Lock the user's wallet row (creating it, empty, on first use): (wallet id, gems)."""
    rows = await conn.execute_query_dict(LOCK_WALLET, [user_id])
    if not rows:
        # ON CONFLICT DO NOTHING: two first requests may race to create it; the second waits for the
        # first's commit, then finds the row and locks it below
        await conn.execute_query_dict(CREATE_WALLET, [user_id])
        rows = await conn.execute_query_dict(LOCK_WALLET, [user_id])
        if not rows:
            raise NotFound(f"no user {user_id}")
    return rows[0]["id"], rows[0]["gems"]


async def _find_entry(conn: BaseDBAsyncClient, wallet_id: UUID, idempotency_key: str) -> Row | None:
    rows = await conn.execute_query_dict(FIND_ENTRY, [wallet_id, idempotency_key])
    return rows[0] if rows else None


async def _why_not_for_sale(conn: BaseDBAsyncClient, shop_item_id: UUID, quantity: int) -> Exception:
    """The refusal for a stock update that matched no row (read after it, so it names what it found)."""
    rows = await conn.execute_query_dict(READ_ITEM, [shop_item_id])
    if not rows:
        return NotFound(f"no shop item {shop_item_id}")
    item = rows[0]
    if not item["is_available"]:
        return NotAvailable(f"{item['name']} is no longer sold")
    return OutOfStock(f"{item['name']}: {item['stock_quantity']} left, {quantity} wanted")


def check_key(idempotency_key: str) -> None:
    if not idempotency_key or len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
        raise InvalidRequest(f"an idempotency key is 1 to {IDEMPOTENCY_KEY_MAX} characters")


def server_key(source: str, reference: str) -> str:
    """The key of an entry the server writes on its own behalf, in `source`'s namespace (no client key has ':')."""
    return f"{source}{SERVER_KEY_SEPARATOR}{reference}"


def check_ledger_key(idempotency_key: str, source: str | None) -> None:
    """A ledger entry's key: a client's (no ':'), or the server's own for an entry of `source` (`server_key`).
    The same rule as the database's CHECK wallet_transactions_idempotency_key_check, refused here with a clear message."""
    check_key(idempotency_key)
    if SERVER_KEY_SEPARATOR in idempotency_key and (source is None or not idempotency_key.startswith(server_key(source, ""))):
        raise InvalidRequest(f"an idempotency key may not contain {SERVER_KEY_SEPARATOR!r}: such keys are the server's own; "
                             "send a key without it (a UUID, for example)")


def _purchase_digest(shop_item_id: UUID, quantity: int) -> str:
    """What a purchase's entry stores to recognise its retry: the request itself, not the (changeable) price or wording."""
    return hashlib.sha256(f"purchase\n{shop_item_id}\n{quantity}".encode()).hexdigest()


def _same_purchase(first: Row, shop_item_id: UUID, request: str) -> bool:
    """Whether the entry found under a purchase's key is this purchase. An entry written before request digests were
    stored (NULL) can only be matched by its kind and item."""
    if first["kind"] != "purchase" or first["reference_id"] != str(shop_item_id):
        return False
    return first["request_digest"] in (None, request)


def _effects(item: Row) -> dict[str, Any]:
    effects = item["effects"]
    if isinstance(effects, str):  # asyncpg returns JSONB as text unless a codec is set
        effects = json.loads(effects)
    return effects if isinstance(effects, dict) else {}
