"""The data invariants of SCHEMA.md, each one set-based query over whole tables.

Every invariant selects its offending rows as `(id, actual, expected)`; one wrapper turns that into
the count and five examples, so each check is a single statement whose cost grows with the table
sizes (hash joins and aggregates, one sort per window), never with a loop over users.

"The future" allows `CLOCK_SKEW` of difference between the application's clock and the database's.
Weeks run Monday to Sunday in UTC; a wallet's ledger is ordered by `created_at`, ties by `id`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from langlearn.verify.findings import Finding, error, warning

CHECK = "invariants"
EXAMPLES = 5
CLOCK_SKEW = "5 minutes"
WORK_MEM = "64MB"
NOW = f"(now() + interval '{CLOCK_SKEW}')"
TODAY = f"({NOW} AT TIME ZONE 'UTC')::date"


@dataclass(frozen=True)
class Invariant:
    kind: str
    subject: str
    rows: str  # SELECT id, actual, expected of the offending rows
    problem: str  # the offending rows, as a plural noun phrase
    fix: str
    example: str = "{column} is {actual}, should be {expected}"

    @property
    def query(self) -> str:
        return f"""
            WITH bad AS MATERIALIZED ({self.rows})
            SELECT (SELECT count(*) FROM bad) AS count,
                   (SELECT json_agg(example) FROM (SELECT * FROM bad ORDER BY id LIMIT {EXAMPLES}) example) AS examples
        """


INVARIANTS = (
    Invariant(
        "wallet_ledger_mismatch",
        "user_wallets.gems",
        """
        SELECT w.id, w.gems AS actual, coalesce(t.total, 0) AS expected
        FROM user_wallets w
        LEFT JOIN (SELECT wallet_id, sum(amount) AS total FROM wallet_transactions GROUP BY wallet_id) t ON t.wallet_id = w.id
        WHERE w.gems <> coalesce(t.total, 0)
        """,
        "wallets whose gems differ from the sum of their transactions",
        "find the missing or wrong ledger entries; gems must equal sum(amount) of wallet_transactions",
    ),
    Invariant(
        "balance_after_mismatch",
        "wallet_transactions.balance_after",
        """
        SELECT id, balance_after AS actual, running AS expected
        FROM (SELECT id, balance_after,
                     sum(amount) OVER (PARTITION BY wallet_id ORDER BY created_at, ledger_seq ROWS UNBOUNDED PRECEDING) AS running  -- the ledger order
              FROM wallet_transactions) ledger
        WHERE balance_after <> running
        """,
        "wallet transactions whose balance_after is not the running sum of their wallet's ledger",
        "the first offending row of each wallet is where the ledger broke: fix its amount or balance_after",
    ),
    Invariant(
        "transaction_user_mismatch",
        "wallet_transactions.user_id",
        """
        SELECT t.id, t.user_id AS actual, w.user_id AS expected
        FROM wallet_transactions t JOIN user_wallets w ON w.id = t.wallet_id
        WHERE t.user_id <> w.user_id
        """,
        "wallet transactions whose user is not their wallet's user",
        "set user_id to the wallet's user_id",
    ),
    Invariant(
        "lesson_unit_course_mismatch",
        "lessons.unit_id",
        """
        SELECT l.id, u.course_id AS actual, l.course_id AS expected
        FROM lessons l JOIN units u ON u.id = l.unit_id
        WHERE u.course_id <> l.course_id
        """,
        "lessons whose unit belongs to another course",
        "move the lesson to a unit of its course, or fix its course_id",
    ),
    Invariant(
        "unit_total_lessons_mismatch",
        "units.total_lessons",
        """
        SELECT u.id, u.total_lessons AS actual, coalesce(l.n, 0) AS expected
        FROM units u
        LEFT JOIN (SELECT unit_id, count(*) AS n FROM lessons WHERE unit_id IS NOT NULL GROUP BY unit_id) l ON l.unit_id = u.id
        WHERE u.total_lessons <> coalesce(l.n, 0)
        """,
        "units whose total_lessons is not their number of lessons",
        "UPDATE units u SET total_lessons = (SELECT count(*) FROM lessons l WHERE l.unit_id = u.id)",
    ),
    Invariant(
        "course_total_lessons_mismatch",
        "courses.total_lessons",
        """
        SELECT c.id, c.total_lessons AS actual, coalesce(l.n, 0) AS expected
        FROM courses c
        LEFT JOIN (SELECT course_id, count(*) AS n FROM lessons GROUP BY course_id) l ON l.course_id = c.id
        WHERE c.total_lessons <> coalesce(l.n, 0)
        """,
        "courses whose total_lessons is not their number of lessons",
        "UPDATE courses c SET total_lessons = (SELECT count(*) FROM lessons l WHERE l.course_id = c.id)",
    ),
    Invariant(
        "leaderboard_week_not_monday",
        "leaderboard_entries.week_start",
        """
        SELECT id, week_start AS actual, date_trunc('week', week_start)::date AS expected
        FROM leaderboard_entries WHERE extract(isodow FROM week_start) <> 1
        """,
        "leaderboard entries whose week_start is not a Monday",
        "weeks run Monday to Sunday (UTC): move the entry to the Monday of its week",
    ),
    Invariant(
        "leaderboard_xp_mismatch",
        "leaderboard_entries.xp_earned",
        """
        SELECT e.id, e.xp_earned AS actual, coalesce(a.xp, 0) AS expected
        FROM leaderboard_entries e
        LEFT JOIN (SELECT user_id, date_trunc('week', started_at AT TIME ZONE 'UTC')::date AS week_start, sum(xp_earned) AS xp
                   FROM lesson_attempts GROUP BY 1, 2) a ON a.user_id = e.user_id AND a.week_start = e.week_start
        WHERE e.xp_earned <> coalesce(a.xp, 0)
        """,
        "leaderboard entries whose xp_earned is not the XP of the user's lesson attempts started that week (UTC)",
        "recompute xp_earned from lesson_attempts, then the ranks",
    ),
    Invariant(
        "leaderboard_rank_gap",
        "leaderboard_entries.current_rank",
        # hash aggregates find the broken boards; only their rows are sorted to point at the culprits
        """
        WITH broken AS (
            SELECT week_start, league FROM leaderboard_entries GROUP BY week_start, league
            HAVING count(current_rank) > 0
               AND (count(current_rank) < count(*) OR min(current_rank) <> 1 OR max(current_rank) <> count(*))
            UNION
            SELECT week_start, league FROM leaderboard_entries WHERE current_rank IS NOT NULL
            GROUP BY week_start, league, current_rank HAVING count(*) > 1
        )
        SELECT id, current_rank AS actual, position AS expected
        FROM (SELECT e.id, e.current_rank,
                     row_number() OVER (PARTITION BY e.week_start, e.league ORDER BY e.current_rank NULLS LAST, e.id) AS position
              FROM leaderboard_entries e JOIN broken USING (week_start, league)) board
        WHERE current_rank IS DISTINCT FROM position
        """,
        "leaderboard entries whose rank breaks the sequence 1..n of their (week_start, league): a gap, a repeat or a missing rank",
        "re-rank the league: row_number() OVER (PARTITION BY week_start, league ORDER BY xp_earned DESC)",
    ),
    Invariant(
        "leaderboard_rank_order",
        "leaderboard_entries.xp_earned",
        # each entry against the one ranked just above it: a hash join, no sort
        """
        SELECT below.id, below.xp_earned AS actual, above.xp_earned AS expected
        FROM leaderboard_entries above
        JOIN leaderboard_entries below ON below.week_start = above.week_start AND below.league = above.league
                                       AND below.current_rank = above.current_rank + 1
        WHERE below.xp_earned > above.xp_earned
        """,
        "leaderboard entries with more XP than the entry ranked just above them",
        "re-rank the league by xp_earned, highest first",
        "xp_earned {actual} is more than the {expected} of the entry ranked above",
    ),
    Invariant(
        "league_week_rank_mismatch",
        "leaderboard_entries.current_rank",
        # a week is ranked by its close, which writes its league_weeks row in the same transaction: ranked iff closed
        """
        SELECT e.id, coalesce(e.current_rank::text, 'NULL') AS actual,
               CASE WHEN w.week_start IS NULL THEN 'not closed (no league_weeks row)' ELSE 'closed (league_weeks has it)' END AS expected
        FROM leaderboard_entries e LEFT JOIN league_weeks w ON w.week_start = e.week_start
        WHERE (e.current_rank IS NULL) = (w.week_start IS NOT NULL)
        """,
        "leaderboard entries ranked in a week that was not closed, or unranked in a closed one",
        "close the week: `langlearn leagues close-week --week <Monday>` ranks it and writes its league_weeks row "
        "(an entry added to a closed week: delete the week's league_weeks row first, so the close ranks it again)",
        "current_rank is {actual} in a week {expected}",
    ),
    Invariant(
        "user_total_xp_mismatch",
        "users.total_xp",
        """
        SELECT u.id, u.total_xp AS actual, coalesce(a.xp, 0) + coalesce(r.xp, 0) AS expected
        FROM users u
        LEFT JOIN (SELECT user_id, sum(xp_earned) AS xp FROM lesson_attempts GROUP BY user_id) a ON a.user_id = u.id
        LEFT JOIN (SELECT ua.user_id, sum(ach.xp_reward) AS xp
                   FROM user_achievements ua JOIN achievements ach ON ach.id = ua.achievement_id
                   WHERE ua.unlocked_at IS NOT NULL GROUP BY ua.user_id) r ON r.user_id = u.id
        WHERE u.total_xp <> coalesce(a.xp, 0) + coalesce(r.xp, 0)
        """,
        "users whose total_xp is not their lesson attempts' XP plus their unlocked achievements' xp_reward",
        "recompute total_xp from lesson_attempts and unlocked user_achievements",
    ),
    Invariant(
        "streak_freezes_mismatch",
        "streaks.freeze_count",
        """
        SELECT s.id, s.freeze_count AS actual, coalesce(h.held, 0) AS expected
        FROM streaks s
        LEFT JOIN (SELECT i.user_id, sum(i.quantity) AS held FROM user_inventory i JOIN shop_items si ON si.id = i.shop_item_id
                   WHERE si.item_type = 'streak_freeze' GROUP BY i.user_id) h ON h.user_id = s.user_id
        WHERE s.freeze_count <> coalesce(h.held, 0)
        """,
        "streaks whose freeze_count is not the number of streak freezes their user holds in the inventory",
        "a freeze bought or spent must change both: set freeze_count to the inventory's streak_freeze quantity",
    ),
    Invariant(
        "streak_in_future",
        "streaks.last_activity_date",
        f"""
        SELECT id, last_activity_date AS actual, {TODAY} AS expected
        FROM streaks WHERE last_activity_date > {TODAY}
        """,
        "streaks whose last_activity_date is after today (UTC)",
        "the writer used a local or wrong clock: store UTC calendar days",
        "{column} is {actual}, after {expected}",
    ),
    Invariant(
        "review_session_in_future",
        "daily_review_sessions.review_date",
        f"""
        SELECT id, greatest(review_date::timestamptz, started_at, completed_at) AS actual, {NOW} AS expected
        FROM daily_review_sessions
        WHERE review_date > {TODAY} OR started_at > {NOW} OR completed_at > {NOW}
        """,
        "daily review sessions dated in the future (review_date, started_at or completed_at)",
        "the writer used a local or wrong clock: store UTC days and timezone-aware UTC times",
        "dated {actual}, after {expected}",
    ),
    Invariant(
        "vocab_knowledge_in_future",
        "user_vocab_knowledge.last_review_date",
        f"""
        SELECT id, last_review_date AS actual, {NOW} AS expected
        FROM user_vocab_knowledge WHERE last_review_date > {NOW}
        """,
        "vocabulary knowledge rows last reviewed in the future",
        "the writer used a local or wrong clock: store timezone-aware UTC times",
        "{column} is {actual}, after {expected}",
    ),
)


async def check_invariants(connection: asyncpg.Connection) -> list[Finding]:
    """One finding per broken invariant, with the number of offending rows and up to five examples.

    All invariants read one snapshot (REPEATABLE READ, read only) unless the caller already holds a
    transaction; each runs in a savepoint, so one that cannot run (a table missing) spoils no other.
    """
    if connection.is_in_transaction():
        snapshot = connection.transaction()  # a savepoint in the caller's transaction
    else:
        snapshot = connection.transaction(isolation="repeatable_read", readonly=True)
    findings: list[Finding] = []
    await snapshot.start()
    try:
        # aggregates over whole tables: let them hash in memory rather than spill to disk
        await connection.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
        for invariant in INVARIANTS:
            try:
                async with connection.transaction():
                    row = await connection.fetchrow(invariant.query)
            except asyncpg.SyntaxOrAccessError as problem:  # a missing table or column, or no privilege
                findings.append(error(
                    CHECK, "invariant_not_checked", invariant.subject,
                    f"could not check {invariant.kind} ({type(problem).__name__}: {problem}); fix the schema findings first",
                    invariant=invariant.kind,
                ))
                continue
            if row["count"]:
                findings.append(_finding(invariant, row["count"], json.loads(row["examples"])))
        findings += await _unfinished_seed_runs(connection)
    finally:
        await snapshot.rollback()  # nothing was written; this also ends SET LOCAL in a caller's transaction
    return findings


def _finding(invariant: Invariant, count: int, examples: list[dict[str, Any]]) -> Finding:
    first = examples[0]
    example = invariant.example.format(column=invariant.subject.split(".")[-1], **first)
    return error(
        CHECK, invariant.kind, invariant.subject,
        f"{invariant.problem}: {count} (e.g. {first['id']}: {example}); {invariant.fix}",
        count=count,
        example_ids=[str(example["id"]) for example in examples],
        examples=examples,
    )


async def _unfinished_seed_runs(connection: asyncpg.Connection) -> list[Finding]:
    """A seed that was interrupted or failed leaves consistent data, but only part of what was asked."""
    try:
        async with connection.transaction():
            runs = await connection.fetch(
                # to_jsonb: `deferred` (migration 9) read the same way on a database that predates it
                "SELECT id, preset, seed, status::text AS status, steps_done, steps_total, "
                "coalesce(jsonb_array_length(nullif(to_jsonb(s) -> 'deferred', 'null')), 0) AS deferred "
                "FROM seed_runs s WHERE status <> 'completed' ORDER BY started_at"
            )
    except asyncpg.SyntaxOrAccessError:  # no seed_runs table: the schema findings say why
        return []
    return [
        warning(
            CHECK, "unfinished_seed_run", f"seed_runs.{run['id']}",
            f"a seed run (preset {run['preset']}, seed {run['seed']}) is {run['status']} after step {run['steps_done']} of "
            f"{run['steps_total']}: the data holds only part of it"
            + (f", and its bulk load took {run['deferred']} keys, indexes and foreign keys off the user tables that are not rebuilt yet"
               if run["deferred"] else "")
            + "; run `langlearn seed` with the same arguments to finish it",
            status=run["status"], steps_done=run["steps_done"], steps_total=run["steps_total"], deferred=run["deferred"],
        )
        for run in runs
    ]
