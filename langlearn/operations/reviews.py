"""Vocabulary reviews: one graded recall of a word, scheduled by the rule book's SM-2 (`rules.review`).

Only a word the learner was taught is reviewed: its `user_vocab_knowledge` row is created when a lesson teaching
it is first passed (`lessons.py`); a review of any other word is refused (`NotFound`: the learner has no such word
to review), so reviews cannot be spent on words no lesson taught. A review before the word is due does not
advance SM-2 (`rules.review`, Anki's and SuperMemo's rule): a recalled early review is counted (review count, last
review time, history, the day's session) with the schedule unchanged; a failed one is a lapse all the same.

A review is one transaction of raw SQL. The next state is computed in Python (the rule book is pure
Python), so it is a read-modify-write, made race-free by the row lock: two reviews of one word at once
serialise on `SELECT … FOR UPDATE` of its `user_vocab_knowledge` row, and the second computes from the
state the first committed (under READ COMMITTED a FOR UPDATE that waited returns the newest row version).

Lock order, which every writer of these rows must follow:
    1. the wallet row:     `wallet.lock_wallet`, as every writer of the user's rewards (a review may unlock an
                           achievement, and `lessons.py` adds a lesson's words to the reviews under that lock)
    2. the knowledge row:  SELECT … FROM user_vocab_knowledge WHERE user_id = $1 AND vocab_id = $2 FOR UPDATE
    3. the day's session:  the upsert of daily_review_sessions on idx_daily_review_user_date
Reviews of different words by one user meet only at the session row, whose upsert is a single
statement: its counts are incremented on the newest row version, never lost.

The day's session (one row per user and UTC day of the review) holds the words reviewed that day: a word
joins `vocab_list` at its first review of the day, adding one to total_words and completed_words and, if
recalled, to correct_count; reviewing it again that day changes the word's schedule but not the counts.
Every word listed has been reviewed, so a session written here is always completed (completed_at is the
latest review, started_at the first).

Achievements: after the review, the words mastered and the sessions finished are counted and
`achievements.plan_awards` unlocks what they reach (XP, gems, feed) and shows the next tiers' progress.

Round trips per call (BEGIN and COMMIT included), independent of the data:
    review_word   6: wallet, knowledge, knowledge + session (one statement), the metrics; +1 when achievements
                  move (+2 for the user's first ledger use)
A refusal (unknown user or word, a word not taught) reads one row more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from langlearn import rules
from langlearn.operations.achievements import WRITE_AWARDS, Awards, catalogue_sql, plan_awards, read_catalogue
from langlearn.operations.errors import InvalidRequest, NotFound
from langlearn.operations.wallet import lock_wallet
from langlearn.routing import PRIMARY, write_operation

QUALITY_MIN, QUALITY_MAX = 0, 5  # SM-2's grades: 0 forgotten … 5 perfect recall
EASINESS_DECIMALS = 4  # `rules.review` keeps easiness to 4 decimals; ease_factor is a REAL

Row = dict[str, Any]


@dataclass(frozen=True)
class ReviewResult:
    """The word's schedule after the review (the body of `POST /me/reviews`)."""

    next_review_date: datetime
    interval_days: int
    ease_factor: float
    mastery_level: str
    lsn: str | None = field(default=None, compare=False)  # read-your-writes token (langlearn.routing), with standbys


# --- SQL -------------------------------------------------------------------------------------------

_STATE = "id, ease_factor, interval_days, consecutive_correct, review_count, last_review_date, next_review_date"
LOCK_KNOWLEDGE = f"SELECT {_STATE} FROM user_vocab_knowledge WHERE user_id = $1 AND vocab_id = $2 FOR UPDATE"
WHAT_EXISTS = "SELECT EXISTS (SELECT FROM users WHERE id = $1) AS user, EXISTS (SELECT FROM vocabulary_items WHERE id = $2) AS word"
# $2 the word's id as text (as vocab_list holds it), $3 the review time, $4 its UTC day, $5 1 if recalled else 0
_NEW_TODAY = "CASE WHEN s.vocab_list @> jsonb_build_array($2::text) THEN 0 ELSE 1 END"
WRITE_REVIEW = f"""
    WITH knowledge AS (
        UPDATE user_vocab_knowledge
        SET strength = $7, ease_factor = $8, interval_days = $9, last_review_date = $3, next_review_date = $10,
            review_count = $11, consecutive_correct = $12, review_history = review_history || $13::jsonb,
            mastery_level = $14::mastery_level, updated_at = now()
        WHERE id = $6
        RETURNING next_review_date, interval_days, ease_factor, mastery_level::text AS mastery_level
    ), session AS (
        INSERT INTO daily_review_sessions AS s (user_id, review_date, total_words, completed_words, correct_count,
                                                started_at, completed_at, is_completed, vocab_list)
        VALUES ($1, $4, 1, 1, $5, $3, $3, true, jsonb_build_array($2::text))
        ON CONFLICT (user_id, review_date) DO UPDATE
        SET total_words = s.total_words + {_NEW_TODAY},
            completed_words = s.completed_words + {_NEW_TODAY},
            correct_count = s.correct_count + {_NEW_TODAY} * $5,
            vocab_list = CASE WHEN s.vocab_list @> jsonb_build_array($2::text) THEN s.vocab_list
                              ELSE s.vocab_list || jsonb_build_array($2::text) END,
            started_at = LEAST(s.started_at, $3),
            -- a session the seed left unfinished (words listed but not reviewed) stays so
            completed_at = CASE WHEN s.completed_words = s.total_words THEN GREATEST(s.completed_at, $3) ELSE s.completed_at END,
            is_completed = s.completed_words = s.total_words
        RETURNING id
    )
    SELECT knowledge.*, session.id AS session_id FROM knowledge, session
"""


READ_METRICS = f"""
    SELECT (SELECT count(*) FROM user_vocab_knowledge WHERE user_id = $1 AND mastery_level = 'mastered') AS vocab_mastered,
           (SELECT count(*) FROM daily_review_sessions WHERE user_id = $1 AND is_completed) AS reviews_completed,
           {catalogue_sql("$1")} AS catalogue
"""


# --- operations ------------------------------------------------------------------------------------

@write_operation
async def review_word(user_id: UUID, vocab_id: UUID, quality: int, *, when: datetime | None = None) -> ReviewResult:
    """Record a review of `quality` (0-5) of the word `vocab_id` at `when` (default: now, taken once the
    word is locked): its `user_vocab_knowledge` row (created when a lesson taught the word) rescheduled by
    `rules.review` (an early review leaves the schedule), and the review counted in the user's session of that UTC day.

    Refusals (nothing written): `InvalidRequest` (quality out of 0-5, `when` naive, in the future or
    before the word's last review), `NotFound` (unknown user or word, or a word no lesson taught the user).
    Not idempotent: each call is one more review.
    """
    if isinstance(quality, bool) or not isinstance(quality, int) or not QUALITY_MIN <= quality <= QUALITY_MAX:
        raise InvalidRequest(f"a review's quality is {QUALITY_MIN} to {QUALITY_MAX}, not {quality!r}")
    if when is not None:
        if when.tzinfo is None:
            raise InvalidRequest("a review time must be timezone-aware")
        if when > datetime.now(timezone.utc):  # the data never points into the future
            raise InvalidRequest(f"a review cannot be in the future ({when.isoformat()})")
    async with in_transaction(PRIMARY) as conn:
        wallet_id, gems = await lock_wallet(conn, user_id)
        row = await _lock_knowledge(conn, user_id, vocab_id)
        before = _state(row)
        # the clock read after the lock: never before the review that held it
        at = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
        if before.last_review is not None and at < before.last_review:
            raise InvalidRequest(f"a review at {at.isoformat()} precedes the word's last review ({before.last_review.isoformat()})")
        after = rules.review(before, quality, at)
        entry = {"at": at.isoformat(timespec="seconds"), "quality": quality, "interval": after.interval}  # the seed's format
        written = await conn.execute_query_dict(WRITE_REVIEW, [
            user_id, str(vocab_id), at, rules.activity_day(at), int(rules.recalled(quality)), row["id"],
            rules.memory_strength(after, at), after.easiness, after.interval, after.due, after.reviews, after.repetitions,
            json.dumps([entry]), rules.mastery_level(after),
        ])
        metrics = (await conn.execute_query_dict(READ_METRICS, [user_id]))[0]
        awards = plan_awards(Awards(gems), read_catalogue(metrics["catalogue"]), {
            "vocab_mastered": metrics["vocab_mastered"], "reviews_completed": metrics["reviews_completed"],
        })
        if awards.changes_anything:
            await conn.execute_query_dict(WRITE_AWARDS.sql, WRITE_AWARDS.arguments(awards.values(user_id, wallet_id)))
    result = written[0]
    return ReviewResult(result["next_review_date"], result["interval_days"], round(result["ease_factor"], EASINESS_DECIMALS),
                        result["mastery_level"])


# --- helpers ---------------------------------------------------------------------------------------

async def _lock_knowledge(conn: BaseDBAsyncClient, user_id: UUID, vocab_id: UUID) -> Row:
    """Lock the user's knowledge row of the word: a lesson teaching the word created it."""
    rows = await conn.execute_query_dict(LOCK_KNOWLEDGE, [user_id, vocab_id])
    if not rows:
        found = (await conn.execute_query_dict(WHAT_EXISTS, [user_id, vocab_id]))[0]
        if not found["user"]:
            raise NotFound(f"no user {user_id}")
        if not found["word"]:
            raise NotFound(f"no vocabulary item {vocab_id}")
        raise NotFound(f"vocabulary item {vocab_id} is not among the learner's words: a word is reviewed once a lesson teaching it is passed")
    return rows[0]


def _state(row: Row) -> rules.MemoryState:
    """The rule book's state of a knowledge row. ease_factor is a REAL: read back as a double it is not the
    4-decimal number written (2.36 → 2.3599998950958252), so it is rounded back to what the rule book produced."""
    return rules.MemoryState(
        easiness=round(row["ease_factor"], EASINESS_DECIMALS), interval=row["interval_days"], repetitions=row["consecutive_correct"],
        reviews=row["review_count"], last_review=row["last_review_date"], due=row["next_review_date"],
    )
