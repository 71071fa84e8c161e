"""Following and the activity feed: follow, unfollow, the feed of the people one follows, one's own feed.

follow and unfollow are single statements, idempotent by the UNIQUE (follower_id, following_id) index
idx_following_unique (`ON CONFLICT DO NOTHING`), so two concurrent follows cannot insert twice. A new
follow also moves the follower's `follow_count` achievements (`achievements.plan_awards`: XP, gems,
feed), so it first takes the follower's wallet lock, as every writer of a user's rewards does.
The feeds are one keyset-paginated query each, newest first, ordered by (created_at, id) so that events of the same instant are neither repeated nor skipped between pages.

Round trips per call (BEGIN and COMMIT included), independent of the data:
    follow     5 (a new follow: wallet, follow, the metric), +1 when achievements move; an existing one 4;
               a refusal (unknown user) 4
    unfollow   3
    feed       1 (a read, outside any transaction)
    own_feed   1
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from langlearn.operations.achievements import WRITE_AWARDS, Awards, catalogue_sql, plan_awards, read_catalogue
from langlearn.operations.errors import InvalidRequest, NotFound
from langlearn.operations.wallet import lock_wallet
from langlearn.routing import PRIMARY, reader, write_operation

FEED_LIMIT_MAX = 100  # the largest page a client may ask for
FEED_LIMIT_DEFAULT = 50

Row = dict[str, Any]


@dataclass(frozen=True)
class FeedCursor:
    """Where a feed page ended: the next page holds the events strictly older than (created_at, activity_id)."""

    created_at: datetime
    activity_id: UUID


@dataclass(frozen=True)
class FollowResult:
    """`changed`: the follow was created (follow) or removed (unfollow); False for a repeated request."""

    follower_id: UUID
    following_id: UUID
    changed: bool
    lsn: str | None = field(default=None, compare=False)  # read-your-writes token (langlearn.routing), with standbys


@dataclass(frozen=True)
class FeedItem:
    """One event of an activity feed."""

    activity_id: UUID
    user_id: UUID
    username: str
    activity_type: str
    activity_data: dict[str, Any]
    message: str
    is_public: bool
    created_at: datetime


@dataclass(frozen=True)
class FeedPage:
    """Up to `limit` events, newest first; `next` is None on the last page."""

    items: tuple[FeedItem, ...]
    next: FeedCursor | None


# --- SQL -------------------------------------------------------------------------------------------

# both users must exist: the join yields no row otherwise (and then nothing is inserted)
FOLLOW = """
    INSERT INTO user_following (follower_id, following_id)
    SELECT follower.id, followed.id FROM users follower, users followed WHERE follower.id = $1 AND followed.id = $2
    ON CONFLICT (follower_id, following_id) DO NOTHING
    RETURNING id
"""
READ_METRICS = f"SELECT (SELECT count(*) FROM user_following WHERE follower_id = $1) AS follow_count, {catalogue_sql('$1')} AS catalogue"
USERS_FOUND = "SELECT id FROM users WHERE id = ANY($1::uuid[])"
UNFOLLOW = "DELETE FROM user_following WHERE follower_id = $1 AND following_id = $2 RETURNING id"
_FEED_COLUMNS = "a.id, a.user_id, u.username, a.activity_type, a.activity_data, a.message, a.is_public, a.created_at"
# the followed users from idx_following_unique, then each one's public events from idx_activity_feed_public
# (user_id, is_public, created_at): the row comparison is the keyset condition, NULL meaning "the first page"
FEED = f"""
    SELECT {_FEED_COLUMNS}
    FROM user_following f
    JOIN activity_feeds a ON a.user_id = f.following_id AND a.is_public
    JOIN users u ON u.id = a.user_id
    WHERE f.follower_id = $1 AND ($2::timestamptz IS NULL OR (a.created_at, a.id) < ($2, $3::uuid))
    ORDER BY a.created_at DESC, a.id DESC
    LIMIT $4
"""
OWN_FEED = f"""
    SELECT {_FEED_COLUMNS}
    FROM activity_feeds a JOIN users u ON u.id = a.user_id
    WHERE a.user_id = $1 AND ($2::timestamptz IS NULL OR (a.created_at, a.id) < ($2, $3::uuid))
    ORDER BY a.created_at DESC, a.id DESC
    LIMIT $4
"""


# --- operations ------------------------------------------------------------------------------------

@write_operation
async def follow(follower_id: UUID, following_id: UUID) -> FollowResult:
    """`follower_id` follows `following_id`; following again changes nothing.

    Refusals (nothing written): `InvalidRequest` (following oneself), `NotFound` (either user unknown).
    """
    if follower_id == following_id:
        raise InvalidRequest("nobody follows themselves")
    async with in_transaction(PRIMARY) as conn:
        wallet_id, gems = await lock_wallet(conn, follower_id)
        if await conn.execute_query_dict(FOLLOW, [follower_id, following_id]):
            metrics = (await conn.execute_query_dict(READ_METRICS, [follower_id]))[0]
            awards = plan_awards(Awards(gems), read_catalogue(metrics["catalogue"]), {"follow_count": metrics["follow_count"]})
            if awards.changes_anything:
                await conn.execute_query_dict(WRITE_AWARDS.sql, WRITE_AWARDS.arguments(awards.values(follower_id, wallet_id)))
            return FollowResult(follower_id, following_id, changed=True)
        # nothing inserted: the follow exists already, or a user is unknown (only a refusal pays this read)
        await _require_users(conn, follower_id, following_id)
    return FollowResult(follower_id, following_id, changed=False)


@write_operation
async def unfollow(follower_id: UUID, following_id: UUID) -> FollowResult:
    """`follower_id` stops following `following_id`; a follow that does not exist (any more) is no error."""
    async with in_transaction(PRIMARY) as conn:
        removed = await conn.execute_query_dict(UNFOLLOW, [follower_id, following_id])
    return FollowResult(follower_id, following_id, changed=bool(removed))


async def feed(user_id: UUID, *, limit: int = FEED_LIMIT_DEFAULT, before: FeedCursor | None = None) -> FeedPage:
    """The public events of the people `user_id` follows, newest first, `limit` per page, older than `before`.
    An unknown user follows nobody: an empty page (telling them apart would cost a query)."""
    return await _page(FEED, user_id, limit, before)


async def own_feed(user_id: UUID, *, limit: int = FEED_LIMIT_DEFAULT, before: FeedCursor | None = None) -> FeedPage:
    """`user_id`'s own events, private ones included (it is their own), newest first, keyset-paginated like `feed`."""
    return await _page(OWN_FEED, user_id, limit, before)


# --- helpers ---------------------------------------------------------------------------------------

async def _page(query: str, user_id: UUID, limit: int, before: FeedCursor | None) -> FeedPage:
    if not 1 <= limit <= FEED_LIMIT_MAX:
        raise InvalidRequest(f"a feed page holds 1 to {FEED_LIMIT_MAX} events, not {limit}")
    after_at, after_id = (before.created_at, before.activity_id) if before else (None, None)
    # one row more than the page: whether a next page exists, without a second query
    rows = await reader().execute_query_dict(query, [user_id, after_at, after_id, limit + 1])  # a standby, if any
    items = tuple(_item(row) for row in rows[:limit])
    more = len(rows) > limit
    return FeedPage(items, FeedCursor(items[-1].created_at, items[-1].activity_id) if more else None)


async def _require_users(conn: BaseDBAsyncClient, *user_ids: UUID) -> None:
    found = {row["id"] for row in await conn.execute_query_dict(USERS_FOUND, [list(user_ids)])}
    for user_id in user_ids:
        if user_id not in found:
            raise NotFound(f"no user {user_id}")


def _item(row: Row) -> FeedItem:
    data = row["activity_data"]
    if isinstance(data, str):  # asyncpg returns JSONB as text unless a codec is set
        data = json.loads(data)
    return FeedItem(row["id"], row["user_id"], row["username"], row["activity_type"], data if isinstance(data, dict) else {},
                    row["message"], row["is_public"], row["created_at"])
