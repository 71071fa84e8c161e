"""Leagues: close a week (final ranks, promotions and demotions, next week's leagues, promotion rewards).

`close_week(week_start)` is one transaction, run by a cron job after the week's Sunday (UTC):

1. every close takes one transaction-scoped advisory lock (`CLOSE_LOCK`), so closes run one at a time:
   a second close of the same week waits for the first to commit, then finds it closed. One lock for
   all weeks (not one per week) also keeps a close of week N+1 from reading leagues a close of week N
   is still moving; closes are rare, so serialising them costs nothing.
2. the week's marker (`league_weeks`) is read with the week's entries, which are locked (`FOR UPDATE`, by id),
   each with whether its promotion reward was paid; the outcome comes from the rule book (`rules.ranks`,
   `rules.close_week`, `rules.promotion_gems`), never from numbers copied here.
3. the "already closed" test: the week has its marker. Then nothing is written.
4. otherwise set-based writes, each changing only rows that differ (so a close of a week found half done writes
   the difference): the marker, the week's ranks and flags plus next week's entries (created with the XP already earned that week,
   or only their league changed: XP and lessons earned are never clobbered) in one statement (next week
   stays unranked: an open week is ranked when it closes, so a completion never re-ranks a board); then the rewards: wallets created if missing, locked in id order, then the ledger
   entries (GREATEST(now(), newest created_at), as in `wallet.py`), the wallets and the activity feed. A reward
   whose key is already in the ledger was paid: skipped, never an error (no client key can take it, `wallet.py`).

The marker. A closed week has its row in `league_weeks` (`models.LeagueWeek`), inserted by the close in the
transaction that ranks the week, so a week is closed exactly when its ranks, flags, rewards and next week's
leagues were written, and a week with no promotion, no demotion or no entry at all is told apart from an
unclosed one. The seed writes the rows of the weeks its simulation closed; migration 14 wrote those of the weeks
closed before the table existed (the state the previous close reported as already closed) and unranked the
ranked weeks without one, so a week is ranked exactly when it has its row (`langlearn verify` checks it); a
week the previous code closed after that migration ran has no row, and its next close writes the row and nothing
else (everything else is as a close leaves it). A reward is recognised by its key `league_promotion:<Monday>`
(`promotion_key`), or by `source = "league_promotion"` with `reference_id` = the week's Monday, as the seed writes
it. The lesson path (`lessons.py`) refuses a completion of a week with a row, by reading that one row.

Lock order: the advisory lock, the week's entries, next week's entries, then wallets (by id), as one
wallet's writers (`wallet.py`) lock only their wallet, and the lesson path (`lessons.py`) locks its
entry before its wallet.

Round trips (BEGIN and COMMIT included), independent of the number of entries: already closed 4; a close 5,
plus 3 when it pays rewards (wallets created, locked, paid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from langlearn import rules
from langlearn.operations.errors import InvalidRequest
from langlearn.operations.retry import retried_on_failover
from langlearn.operations.wallet import ledger_time, server_key
from langlearn.routing import PRIMARY, write_operation

PROMOTION_SOURCE = "league_promotion"  # the ledger's source for a promotion reward, as the seed writes it
PROMOTION_FEED = "league_promoted"  # the activity feed's type for it
Row = dict[str, Any]


@dataclass(frozen=True)
class WeekClosed:
    """What closing `week_start` did (or, `already_closed`, found done: the counts then describe the week's outcome)."""

    week_start: date
    ranked: int  # entries of the week (all ranked 1..n within their league)
    promoted: int
    demoted: int
    next_created: int  # next week's entries created
    next_moved: int  # next week's existing entries whose league was changed
    rewards_paid: int  # promotion rewards written to the ledger
    already_closed: bool
    lsn: str | None = field(default=None, compare=False)  # read-your-writes token (langlearn.routing), with standbys


@dataclass(frozen=True)
class _Entry:
    """One entry of the week with its outcome under the rule book, and whether its promotion reward was paid."""

    id: UUID
    user_id: UUID
    rank: int
    outcome: rules.WeekOutcome
    rewarded: bool


# --- SQL -------------------------------------------------------------------------------------------

CLOSE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('langlearn.leagues.close_week'))"
# a statement of its own after the lock: under READ COMMITTED it sees what a previous close committed. One row per entry
# (id NULL for a week without entries), each with `closed`: the week has its marker
READ_WEEK = """
    SELECT marker.closed, week.*
    FROM (SELECT EXISTS (SELECT 1 FROM league_weeks WHERE week_start = $1) AS closed) marker
    LEFT JOIN (
        SELECT e.id, e.user_id, e.league::text AS league, e.xp_earned,
               EXISTS (SELECT 1 FROM user_wallets w JOIN wallet_transactions t ON t.wallet_id = w.id
                       WHERE w.user_id = e.user_id
                         AND (t.idempotency_key = $2 OR (t.source = $3 AND t.reference_id = $4))) AS rewarded  -- the seed's keys differ
        FROM leaderboard_entries e
        WHERE e.week_start = $1
        ORDER BY e.id
        FOR UPDATE OF e  -- in id order, as every close locks them
    ) week ON true
    ORDER BY week.id
"""
# $1 the week; $2-$5 the week's entries: id, rank, promoted, demoted; $6-$7 next week: user, league. The marker is
# inserted without ON CONFLICT: under the close's lock, with none read, a second row would be a bug to report
WRITE_WEEK = """
    WITH marker AS (
        INSERT INTO league_weeks (week_start) VALUES ($1)
    ), outcome AS (
        SELECT * FROM unnest($2::uuid[], $3::int[], $4::bool[], $5::bool[]) AS o(id, position, promoted, demoted)
    ), week AS (
        UPDATE leaderboard_entries e
        SET current_rank = o.position, is_promoted = o.promoted, is_demoted = o.demoted, updated_at = now()
        FROM outcome o
        WHERE e.id = o.id
          AND (e.current_rank IS DISTINCT FROM o.position OR e.is_promoted <> o.promoted OR e.is_demoted <> o.demoted)
        RETURNING 1
    ), moving AS (
        SELECT * FROM unnest($6::uuid[], $7::league_type[]) AS m(user_id, league)
    ), earned AS (  -- a new entry starts with what its user already earned next week (the XP invariant)
        SELECT a.user_id, sum(a.xp_earned) AS xp, count(*) FILTER (WHERE a.passed) AS lessons
        FROM lesson_attempts a JOIN moving m ON m.user_id = a.user_id
        WHERE a.started_at >= ($1::date + 7)::timestamp AT TIME ZONE 'UTC'
          AND a.started_at < ($1::date + 14)::timestamp AT TIME ZONE 'UTC'
        GROUP BY a.user_id
    ), next AS (
        INSERT INTO leaderboard_entries (user_id, week_start, week_end, league, xp_earned, lessons_completed)
        SELECT m.user_id, $1::date + 7, $1::date + 13, m.league, coalesce(ea.xp, 0), coalesce(ea.lessons, 0)
        FROM moving m LEFT JOIN earned ea ON ea.user_id = m.user_id
        ORDER BY m.user_id
        ON CONFLICT (user_id, week_start) DO UPDATE SET league = EXCLUDED.league, updated_at = now()
            WHERE leaderboard_entries.league <> EXCLUDED.league  -- only the league: next week's XP stays
        RETURNING (xmax = 0) AS created
    )
    SELECT (SELECT count(*) FROM week) AS ranked,
           count(*) FILTER (WHERE created) AS created, count(*) FILTER (WHERE NOT created) AS moved
    FROM next
"""
CREATE_WALLETS = "INSERT INTO user_wallets (user_id) SELECT u FROM unnest($1::uuid[]) AS u ORDER BY u ON CONFLICT (user_id) DO NOTHING"
LOCK_WALLETS = "SELECT id FROM user_wallets WHERE user_id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
# $1-$5 per reward: user, amount, description, feed data, feed message; $6 source; $7 the week; $8 feed type; $9 the key.
# A reward whose key is in the user's ledger already was paid: it is skipped, never an error (`wallet.py`'s key spaces
# make sure only this close can have written that key).
WRITE_REWARDS = f"""
    WITH reward AS (
        SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::jsonb[], $5::text[])
                   AS r(user_id, amount, description, data, message)
    ), entry AS (
        INSERT INTO wallet_transactions (wallet_id, user_id, transaction_type, amount, balance_after, source,
                                         reference_id, idempotency_key, description, created_at)
        SELECT w.id, r.user_id, 'reward'::transaction_type, r.amount, w.gems + r.amount, $6, $7, $9::text, r.description,
               {ledger_time("w.id")}
        FROM reward r JOIN user_wallets w ON w.user_id = r.user_id
        WHERE NOT EXISTS (SELECT 1 FROM wallet_transactions t WHERE t.wallet_id = w.id AND t.idempotency_key = $9::text)
        ORDER BY w.id
        ON CONFLICT (wallet_id, idempotency_key) DO NOTHING  -- the backstop: the wallets are locked, the check above is exact
        RETURNING wallet_id, user_id, amount
    ), wallet AS (
        UPDATE user_wallets u
        SET gems = u.gems + entry.amount, total_gems_earned = u.total_gems_earned + entry.amount, updated_at = now()
        FROM entry WHERE u.id = entry.wallet_id
        RETURNING 1
    ), feed AS (  -- an event for each reward written now
        INSERT INTO activity_feeds (user_id, activity_type, activity_data, message)
        SELECT r.user_id, $8, r.data, r.message FROM reward r JOIN entry ON entry.user_id = r.user_id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM wallet) AS paid, (SELECT count(*) FROM feed) AS fed
"""


# --- operation -------------------------------------------------------------------------------------

@retried_on_failover
@write_operation
async def close_week(week_start: date) -> WeekClosed:
    """Close the week starting on Monday `week_start`: see the module's docstring.

    Refusals (nothing written): `InvalidRequest` for a day that is not a Monday or a week that may still take
    completions (until `rules.ATTEMPT_MAX_AGE` after its Sunday ends, UTC: `check_week`). Safe to run twice or concurrently: the first close does
    the work, the others report `already_closed` and write nothing.
    """
    check_week(week_start)
    reference = week_start.isoformat()
    async with in_transaction(PRIMARY) as conn:
        await conn.execute_query_dict(CLOSE_LOCK)
        rows = await conn.execute_query_dict(READ_WEEK, [week_start, promotion_key(week_start), PROMOTION_SOURCE, reference])
        entries = _outcomes([row for row in rows if row["id"] is not None])
        promoted = sum(entry.outcome.promoted for entry in entries)
        demoted = sum(entry.outcome.demoted for entry in entries)
        if rows[0]["closed"]:
            return WeekClosed(week_start, len(entries), promoted, demoted, 0, 0, 0, already_closed=True)
        written = await conn.execute_query_dict(WRITE_WEEK, [
            week_start,
            [entry.id for entry in entries], [entry.rank for entry in entries],
            [entry.outcome.promoted for entry in entries], [entry.outcome.demoted for entry in entries],
            [entry.user_id for entry in entries], [entry.outcome.next_league for entry in entries],
        ])
        created, moved = written[0]["created"], written[0]["moved"]
        paid = await _pay_rewards(conn, week_start, [entry for entry in entries if entry.outcome.promoted and not entry.rewarded])
    return WeekClosed(week_start, len(entries), promoted, demoted, created, moved, paid, already_closed=False)


def promotion_key(week_start: date) -> str:
    """The ledger key of the week's promotion rewards (one per promoted user's wallet)."""
    return server_key(PROMOTION_SOURCE, week_start.isoformat())


def check_week(week_start: date, now: datetime | None = None) -> None:
    """Refuse (`InvalidRequest`) a day that is not a Monday, or a week whose completions may still arrive at `now`
    (UTC by default): a completion counts within `rules.ATTEMPT_MAX_AGE` of its start, so a week closes that long after its Sunday."""
    if week_start.weekday() != 0:
        raise InvalidRequest(f"a week starts on a Monday; {week_start} is a {week_start:%A} (its week starts on {rules.week_start(week_start)})")
    closable = rules.week_closes_at(week_start)
    if (now or datetime.now(timezone.utc)) < closable:
        raise InvalidRequest(f"the week of {week_start} takes completions until {closable:%Y-%m-%d %H:%M} UTC: close it from then")


def last_ended_week(today: date | None = None) -> date:
    """The Monday of the newest week whose Sunday is before `today`: the week a cron job closes. By default
    `today` is the UTC day `rules.ATTEMPT_MAX_AGE` ago, so the week it names can be closed (`check_week`)."""
    return rules.week_start(today or (datetime.now(timezone.utc) - rules.ATTEMPT_MAX_AGE).date()) - timedelta(days=7)


# --- helpers ---------------------------------------------------------------------------------------

def _outcomes(rows: list[Row]) -> list[_Entry]:
    """Each entry's rank (within its league) and outcome under the rule book, and whether its reward was paid."""
    by_league: dict[str, dict[UUID, int]] = {}
    for row in rows:
        by_league.setdefault(row["league"], {})[row["user_id"]] = row["xp_earned"]
    positions = {user: rank for board in by_league.values() for user, rank in rules.ranks(board).items()}
    entries = []
    for row in rows:
        outcome = rules.close_week(row["league"], row["xp_earned"])
        rank = positions[row["user_id"]]
        entries.append(_Entry(row["id"], row["user_id"], rank, outcome, row["rewarded"]))
    return entries


async def _pay_rewards(conn: BaseDBAsyncClient, week_start: date, promoted: list[_Entry]) -> int:
    """The promotion rewards not yet paid: one ledger entry (and feed item) each, keyed per user and week."""
    if not promoted:
        return 0
    users = [entry.user_id for entry in promoted]
    await conn.execute_query_dict(CREATE_WALLETS, [users])  # a user may have no wallet yet
    await conn.execute_query_dict(LOCK_WALLETS, [users])
    written = await conn.execute_query_dict(WRITE_REWARDS, [
        users,
        [rules.promotion_gems(entry.outcome.league) for entry in promoted],
        [f"Promoted to the {entry.outcome.next_league.title()} league" for entry in promoted],
        [json.dumps({"league": entry.outcome.next_league, "week_start": week_start.isoformat()}) for entry in promoted],
        [f"was promoted to the {entry.outcome.next_league.title()} league" for entry in promoted],  # the seed's wording
        PROMOTION_SOURCE, week_start.isoformat(), PROMOTION_FEED, promotion_key(week_start),
    ])
    paid: int = written[0]["paid"]
    return paid
