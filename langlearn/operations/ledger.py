"""A wallet's statement: the balance and totals, and the ledger newest first in keyset pages.

The ledger order is (created_at, ledger_seq) (see `WalletTransaction`): entries written in one
transaction share created_at, so ledger_seq is the tie-break and part of the cursor, or a page
boundary falling between two such entries would repeat or skip one.

The balance and the page come from one statement, so they are one snapshot: the page's newest
entry's `balance_after` is the balance shown (on the first page), even while another request writes.

Round trips per call: 1 (a read, outside any transaction; one statement needs none), on a standby when
there is one (`langlearn.routing.reader`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from langlearn.operations.errors import InvalidRequest, NotFound
from langlearn.routing import reader

STATEMENT_LIMIT_MAX = 100  # the largest page a client may ask for
STATEMENT_LIMIT_DEFAULT = 20

Row = dict[str, Any]


@dataclass(frozen=True)
class LedgerCursor:
    """Where a page ended: the next page holds the entries strictly older than (created_at, ledger_seq)."""

    created_at: datetime
    ledger_seq: int


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger entry: a signed `amount` (+ earned, - spent) and the balance right after it."""

    transaction_id: UUID
    transaction_type: str
    amount: int
    balance_after: int
    source: str | None
    reference_id: str | None
    description: str | None
    created_at: datetime
    ledger_seq: int


@dataclass(frozen=True)
class WalletStatement:
    """The wallet now and up to `limit` entries, newest first; `next` is None on the last page.
    A user without a wallet row yet (it is created at the first wallet operation) has zeros."""

    gems: int
    total_gems_earned: int
    total_gems_spent: int
    transactions: tuple[LedgerEntry, ...]
    next: LedgerCursor | None


# the user row anchors the result: no row at all means no such user; a user without a wallet or without
# entries yields one row of NULLs. The row comparison is the keyset condition, NULL meaning "the first page".
STATEMENT = """
    SELECT w.gems, w.total_gems_earned, w.total_gems_spent,
           t.id, t.transaction_type, t.amount, t.balance_after, t.source, t.reference_id, t.description, t.created_at, t.ledger_seq
    FROM users u
    LEFT JOIN user_wallets w ON w.user_id = u.id
    LEFT JOIN LATERAL (
        SELECT e.id, e.transaction_type::text AS transaction_type, e.amount, e.balance_after, e.source, e.reference_id,
               e.description, e.created_at, e.ledger_seq
        FROM wallet_transactions e
        WHERE e.user_id = u.id AND ($2::timestamptz IS NULL OR (e.created_at, e.ledger_seq) < ($2, $3::bigint))
        ORDER BY e.created_at DESC, e.ledger_seq DESC
        LIMIT $4
    ) t ON true
    WHERE u.id = $1
    ORDER BY t.created_at DESC, t.ledger_seq DESC
"""


async def wallet_statement(user_id: UUID, *, limit: int = STATEMENT_LIMIT_DEFAULT, before: LedgerCursor | None = None) -> WalletStatement:
    """`user_id`'s wallet and its ledger entries older than `before`, newest first, `limit` per page.

    Refusals: `InvalidRequest` (a limit outside 1-STATEMENT_LIMIT_MAX), `NotFound` (unknown user)."""
    if isinstance(limit, bool) or not 1 <= limit <= STATEMENT_LIMIT_MAX:
        raise InvalidRequest(f"a statement page holds 1 to {STATEMENT_LIMIT_MAX} entries, not {limit}")
    after_at, after_seq = (before.created_at, before.ledger_seq) if before else (None, None)
    # one row more than the page: whether a next page exists, without a second query
    rows = await reader().execute_query_dict(STATEMENT, [user_id, after_at, after_seq, limit + 1])
    if not rows:
        raise NotFound(f"no user {user_id}")
    first = rows[0]
    entries = tuple(_entry(row) for row in rows[:limit] if row["id"] is not None)
    more = len(rows) > limit
    return WalletStatement(
        first["gems"] or 0, first["total_gems_earned"] or 0, first["total_gems_spent"] or 0, entries,
        LedgerCursor(entries[-1].created_at, entries[-1].ledger_seq) if more else None,
    )


def _entry(row: Row) -> LedgerEntry:
    return LedgerEntry(row["id"], row["transaction_type"], row["amount"], row["balance_after"], row["source"], row["reference_id"],
                       row["description"], row["created_at"], row["ledger_seq"])
