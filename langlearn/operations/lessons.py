"""Complete a lesson: the attempt scored on the server, and everything it moves, in one transaction.

`complete_lesson` takes the client's answers (never its score), grades them against the lesson's
content with the rule book (`rules.grade_lesson`, `lesson_score`, `lesson_passes`, `lesson_xp`), and
writes: the attempt and its question attempts (one statement, whatever the number of questions), the
leaderboard entry of the attempt's Monday-Sunday week (upserted), `user_progress`, the streak (UTC
days; a missed day consumes a held streak freeze, from `streaks.freeze_count` and the inventory
alike), `users.total_xp`, achievement progress and unlocks with their XP and gem rewards, the daily
goal's gems (ledger entries, as `wallet.py` writes them; achievements through `achievements.py`), the words of
a lesson passed for the first time (into the learner's reviews, due now), the activity feed, and the result itself
(`lesson_attempts.outcome`), which a retry with the same idempotency key gets back: nothing is written twice.

Lock order (`wallet.py`'s, with the leaderboard entry first, as `leagues.close_week` locks entries before wallets):
    1. the leaderboard entry of the attempt's week (its upsert)
    2. the wallet row (FOR UPDATE): every later read of the user's totals sees what the user's
       previous completion committed, so two completions of one user at once serialise here
    3. user_progress, streak, inventory, users, user_achievements, the ledger: written after the lock
A retry racing its first request meets it at the unique index (user_id, idempotency_key): the second
insert waits for the first to commit, fails, and the retry returns the first result.

Open weeks are not ranked (`current_rank` stays NULL until `leagues.close_week` ranks the week), so a
completion never re-ranks a board; an open week ranked by an older seed is unranked once, here.

Round trips (BEGIN and COMMIT included), independent of the data and of the number of questions:
    9 (a user's first ledger use adds 2, an open week ranked by an older seed 2); a replay 3.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from langlearn import rules
from langlearn.models.enums import DeviceType
from langlearn.operations.achievements import AWARD_CTES, Awards, FeedEvent, Statement, catalogue_sql, plan_awards, read_catalogue
from langlearn.operations.errors import IdempotencyKeyReused, InvalidRequest, NotFound, WeekClosed
from langlearn.operations.wallet import check_key, lock_wallet

CLOCK_SKEW = timedelta(minutes=5)  # how far ahead of the server's clock a client's times may be
ANSWER_MAX, ANSWER_TIME_MAX_MS = 1000, 3_600_000
IDEMPOTENCY_INDEX = "idx_lesson_attempt_user_idempotency"
DAILY_GOAL_SOURCE = "daily_goal"  # the ledger's source, as the seed writes it
Row = dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """One answer as the client sent it, in the order given."""

    question_id: str
    answer: str
    time_spent_ms: int
    hint_used: bool


@dataclass(frozen=True)
class LessonCompleted:
    """What a completion reports (the body of `POST /me/lessons/{id}/attempts`); `replayed` for a retry's answer."""

    attempt_id: UUID
    score: int
    passed: bool
    xp_earned: int
    total_xp: int
    streak: int
    gems: int
    achievements_unlocked: tuple[str, ...]  # slugs
    replayed: bool = False


@dataclass(frozen=True)
class _Exercise:
    id: str
    type: str
    answer: str


@dataclass(frozen=True)
class _Scored:
    """The attempt as graded: what the attempt row and its question rows hold."""

    exercises: Mapping[str, _Exercise]
    grade: rules.LessonGrade
    score: int
    passed: bool
    perfect: bool
    xp: int
    finished_at: datetime | None


# --- SQL -------------------------------------------------------------------------------------------

# $1 user, $2 lesson, $3 key, $4 started_at, $5 the week's Monday. `board_ranked`: whether the board the attempt
# lands on is ranked (its top entry, read from idx_leaderboard_week_league_xp)
READ_CONTEXT = """
    SELECT l.content, l.xp_reward, l.pass_score, l.course_id, l.unit_id, l.title, lg.league,
           EXISTS (SELECT 1 FROM users WHERE id = $1) AS user_exists,
           (SELECT a.outcome FROM lesson_attempts a WHERE a.user_id = $1 AND a.idempotency_key = $3) AS replay,
           EXISTS (SELECT 1 FROM user_inventory i JOIN shop_items s ON s.id = i.shop_item_id
                   WHERE i.user_id = $1 AND s.item_type = 'double_xp' AND i.is_active
                     AND i.activated_at <= $4 AND i.expires_at > $4) AS boosted,
           coalesce((SELECT b.current_rank IS NOT NULL FROM leaderboard_entries b
                     WHERE b.week_start = $5 AND b.league = lg.league::league_type ORDER BY b.xp_earned DESC LIMIT 1), false) AS board_ranked
    FROM lessons l
    CROSS JOIN LATERAL (SELECT coalesce((SELECT e.league::text FROM leaderboard_entries e WHERE e.user_id = $1 AND e.week_start <= $5
                                         ORDER BY e.week_start DESC LIMIT 1), 'bronze') AS league) lg
    WHERE l.id = $2
"""
UNRANK_WEEK = "UPDATE leaderboard_entries SET current_rank = NULL WHERE week_start = $1 AND current_rank IS NOT NULL"
UNRANK_LOCK = "SELECT pg_advisory_xact_lock(hashtext('langlearn.lessons.unrank'))"
READ_REPLAY = "SELECT outcome FROM lesson_attempts WHERE user_id = $1 AND idempotency_key = $2"
INSERT_ATTEMPT = """
    WITH attempt AS (
        INSERT INTO lesson_attempts (user_id, lesson_id, started_at, finished_at, score, passed, xp_earned, total_questions,
                                     correct_answers, hints_used, lives_remaining, time_spent_ms, avg_response_time_ms,
                                     device_type, idempotency_key, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::device_type, $15, $3)
        RETURNING id
    ), questions AS (
        INSERT INTO question_attempts (lesson_attempt_id, question_id, question_type, user_answer, correct_answer, is_correct,
                                       time_spent_ms, hint_used, attempt_number)
        SELECT attempt.id, q.question_id, q.question_type, q.user_answer, q.correct_answer, q.is_correct, q.time_spent_ms,
               q.hint_used, q.attempt_number
        FROM attempt, unnest($16::text[], $17::text[], $18::text[], $19::text[], $20::bool[], $21::int[], $22::bool[], $23::int[])
             AS q(question_id, question_type, user_answer, correct_answer, is_correct, time_spent_ms, hint_used, attempt_number)
        RETURNING 1
    )
    SELECT id FROM attempt
"""
UPSERT_ENTRY = """
    INSERT INTO leaderboard_entries (user_id, week_start, week_end, league, xp_earned, lessons_completed)
    VALUES ($1, $2, $2::date + 6, $3::league_type, $4, $5)
    ON CONFLICT (user_id, week_start) DO UPDATE
    SET xp_earned = leaderboard_entries.xp_earned + EXCLUDED.xp_earned,
        lessons_completed = leaderboard_entries.lessons_completed + EXCLUDED.lessons_completed, updated_at = now()
    RETURNING current_rank
"""
# after the wallet lock: `before` is the committed status (the user's other completions are serialised by the lock)
UPSERT_PROGRESS = """
    WITH before AS (SELECT status::text AS status FROM user_progress WHERE user_id = $1 AND lesson_id = $2), progress AS (
        INSERT INTO user_progress (user_id, lesson_id, course_id, status, score, completed_at, time_spent_seconds, attempts)
        VALUES ($1, $2, $3, (CASE WHEN $5 THEN 'completed' ELSE 'in_progress' END)::progress_status, $4,
                CASE WHEN $5 THEN $6::timestamptz END, $7, 1)
        ON CONFLICT (user_id, lesson_id) DO UPDATE
        SET status = (CASE WHEN user_progress.status = 'completed' OR $5 THEN 'completed' ELSE 'in_progress' END)::progress_status,
            score = greatest(user_progress.score, EXCLUDED.score),
            completed_at = coalesce(user_progress.completed_at, EXCLUDED.completed_at),
            time_spent_seconds = user_progress.time_spent_seconds + EXCLUDED.time_spent_seconds,
            attempts = user_progress.attempts + 1, updated_at = now()
        RETURNING 1
    )
    SELECT (SELECT status FROM before) AS before FROM progress
"""
# $1 user, $2 wallet, $3 the attempt's UTC day (date), $4 course, $5 unit (or NULL)
READ_STATE = f"""
    SELECT u.total_xp, $4::uuid AS course_id, $5::uuid AS unit_id, s.current_streak, s.longest_streak, s.last_activity_date, s.total_days_active, s.freeze_count,
           a.lessons_passed, a.perfect_lessons, a.lesson_xp, a.passed_today,
           (SELECT count(*) FROM (SELECT 1 FROM user_progress p JOIN courses c ON c.id = p.course_id
                                  WHERE p.user_id = $1 AND p.status = 'completed'
                                  GROUP BY p.course_id, c.total_lessons HAVING c.total_lessons > 0 AND count(*) >= c.total_lessons) done
           ) AS courses_completed,
           (SELECT count(*) FROM user_progress p WHERE p.user_id = $1 AND p.course_id = $4 AND p.status = 'completed') AS course_done,
           (SELECT total_lessons FROM courses WHERE id = $4) AS course_lessons,
           (SELECT title FROM courses WHERE id = $4) AS course_title,
           (SELECT count(*) FROM user_progress p JOIN lessons l ON l.id = p.lesson_id
            WHERE p.user_id = $1 AND l.unit_id = $5 AND p.status = 'completed') AS unit_done,
           (SELECT total_lessons FROM units WHERE id = $5) AS unit_lessons,
           EXISTS (SELECT 1 FROM wallet_transactions t
                   WHERE t.wallet_id = $2 AND t.created_at >= $3::date::timestamp AT TIME ZONE 'UTC'
                     AND t.source = 'daily_goal' AND t.reference_id = $3::date::text) AS goal_paid,
           {catalogue_sql("$1")} AS catalogue,
           (SELECT i.shop_item_id FROM user_inventory i JOIN shop_items si ON si.id = i.shop_item_id
            WHERE i.user_id = $1 AND si.item_type = 'streak_freeze' AND i.quantity > 0
            ORDER BY i.quantity DESC, i.shop_item_id LIMIT 1) AS freeze_item
    FROM users u
    LEFT JOIN streaks s ON s.user_id = u.id
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE passed) AS lessons_passed,
               count(*) FILTER (WHERE passed AND correct_answers = total_questions) AS perfect_lessons,
               coalesce(sum(xp_earned), 0) AS lesson_xp,
               count(*) FILTER (WHERE passed AND started_at >= $3::date::timestamp AT TIME ZONE 'UTC'
                                  AND started_at < ($3::date + 1)::timestamp AT TIME ZONE 'UTC') AS passed_today
        FROM lesson_attempts WHERE user_id = u.id
    ) a
    WHERE u.id = $1
"""
# the lesson's own effects, then the awards (achievements.AWARD_CTES), then the result a retry gets back
WRITE_EFFECTS = Statement.of(f"""
    WITH streak AS (
        INSERT INTO streaks (user_id, current_streak, longest_streak, last_activity_date, total_days_active, freeze_count)
        VALUES (:user, :current, :longest, :last_active, :days_active, :freezes)
        ON CONFLICT (user_id) DO UPDATE
        SET current_streak = EXCLUDED.current_streak, longest_streak = EXCLUDED.longest_streak,
            last_activity_date = EXCLUDED.last_activity_date, total_days_active = EXCLUDED.total_days_active,
            freeze_count = EXCLUDED.freeze_count, updated_at = now()
        WHERE :streak_changed
        RETURNING 1
    ), freezes AS (  -- a freeze spent leaves the inventory too (freeze_count mirrors it)
        UPDATE user_inventory SET quantity = quantity - :freezes_used, is_active = quantity - :freezes_used > 0
        WHERE user_id = :user AND shop_item_id = :freeze_item AND :freezes_used > 0
        RETURNING 1
    ), words AS (  -- a lesson passed for the first time puts its words in the learner's reviews, due now
        INSERT INTO user_vocab_knowledge (user_id, vocab_id, next_review_date)
        SELECT :user, v.id, now() FROM vocabulary_items v WHERE v.lesson_id = :lesson AND :first_pass
        ON CONFLICT (user_id, vocab_id) DO NOTHING
        RETURNING 1
    ), {AWARD_CTES}
    UPDATE lesson_attempts SET outcome = :outcome::jsonb WHERE id = :attempt
""")


# --- the operation ---------------------------------------------------------------------------------

async def complete_lesson(
    user_id: UUID, lesson_id: UUID, answers: Sequence[Answer], started_at: datetime, finished_at: datetime,
    idempotency_key: str, *, device_type: str | None = None,
) -> LessonCompleted:
    """Record a played lesson and everything it earns; a retry with the same key returns the first result.

    Refusals (nothing written): `InvalidRequest` (times out of bounds, answers no play of the lesson
    produces, a bad device type or key), `NotFound` (user or lesson), `IdempotencyKeyReused` (the key's
    first completion was another request), `WeekClosed` (the attempt's week is already closed).
    """
    check_key(idempotency_key)
    _check_times(started_at, finished_at)
    if device_type is not None and device_type not in {d.value for d in DeviceType}:
        raise InvalidRequest(f"unknown device type {device_type!r}")
    request = _request_digest(lesson_id, answers, started_at, finished_at)
    day = rules.activity_day(started_at)
    week = rules.week_start(day)
    try:
        async with in_transaction() as conn:
            rows = await conn.execute_query_dict(READ_CONTEXT, [user_id, lesson_id, idempotency_key, started_at, week])
            if not rows or not rows[0]["user_exists"]:
                raise NotFound(f"no lesson {lesson_id}" if not rows else f"no user {user_id}")
            context = rows[0]
            if context["replay"] is not None:
                return _replayed(context["replay"], request, idempotency_key)
            scored = _score(_exercises(context["content"]), answers, context, finished_at)
            if context["board_ranked"]:
                await _unrank_open_week(conn, week)
            attempt_id = await _insert_attempt(conn, user_id, lesson_id, started_at, answers, scored, device_type, idempotency_key)
            entry = await conn.execute_query_dict(UPSERT_ENTRY, [user_id, week, context["league"], scored.xp, int(scored.passed)])
            if entry[0]["current_rank"] is not None:
                raise _week_closed(week)
            wallet_id, gems = await lock_wallet(conn, user_id)
            progress = await conn.execute_query_dict(UPSERT_PROGRESS, [
                user_id, lesson_id, context["course_id"], scored.score, scored.passed, finished_at,
                int((finished_at - started_at).total_seconds()),
            ])
            first_pass = scored.passed and progress[0]["before"] != "completed"
            state = (await conn.execute_query_dict(READ_STATE, [user_id, wallet_id, day, context["course_id"], context["unit_id"]]))[0]
            result = await _write_effects(conn, user_id, lesson_id, wallet_id, gems, attempt_id, day, scored, first_pass, state, request)
    except IntegrityError as error:
        if IDEMPOTENCY_INDEX not in str(error):
            raise
        # a retry that raced its first request: that one committed first, its result is the answer
        return await _replay_after_race(user_id, idempotency_key, request)
    return result


# --- steps -----------------------------------------------------------------------------------------

def _check_times(started_at: datetime, finished_at: datetime) -> None:
    if started_at.tzinfo is None or finished_at.tzinfo is None:
        raise InvalidRequest("started_at and finished_at need a time zone (UTC: a trailing Z)")
    now = datetime.now(timezone.utc)
    if finished_at < started_at:
        raise InvalidRequest("finished_at is before started_at")
    if finished_at > now + CLOCK_SKEW:
        raise InvalidRequest(f"finished_at {finished_at.isoformat()} is in the future")
    if started_at < now - rules.ATTEMPT_MAX_AGE:
        raise InvalidRequest(f"the attempt started more than {rules.ATTEMPT_MAX_AGE} ago; completions are accepted within that")


def _request_digest(lesson_id: UUID, answers: Sequence[Answer], started_at: datetime, finished_at: datetime) -> str:
    """What identifies a request, so that a key sent again with another request is told apart from a retry."""
    canonical = json.dumps([
        str(lesson_id), started_at.astimezone(timezone.utc).isoformat(), finished_at.astimezone(timezone.utc).isoformat(),
        [[a.question_id, a.answer, a.time_spent_ms, a.hint_used] for a in answers],
    ])
    return hashlib.sha256(canonical.encode()).hexdigest()


def _exercises(content: Any) -> dict[str, _Exercise]:
    if isinstance(content, str):  # asyncpg returns JSONB as text unless a codec is set
        content = json.loads(content)
    exercises = content.get("exercises") if isinstance(content, dict) else None
    if not isinstance(exercises, list) or not exercises:
        raise InvalidRequest("this lesson has no exercises to answer")
    return {str(e["id"]): _Exercise(str(e["id"]), str(e.get("type", "")), str(e.get("answer", ""))) for e in exercises}


def _score(exercises: Mapping[str, _Exercise], answers: Sequence[Answer], context: Row, finished_at: datetime) -> _Scored:
    """The attempt graded on the server from the lesson's content: the client's score is never asked for."""
    for answer in answers:
        if len(answer.answer) > ANSWER_MAX or not 0 <= answer.time_spent_ms <= ANSWER_TIME_MAX_MS:
            raise InvalidRequest(f"answer to {answer.question_id!r}: at most {ANSWER_MAX} characters and 0 to {ANSWER_TIME_MAX_MS} ms")
    marked = [(a.question_id, a.question_id in exercises and rules.is_correct_answer(exercises[a.question_id].answer, a.answer))
              for a in answers]
    try:
        grade = rules.grade_lesson(list(exercises), marked)
    except rules.ImpossibleAnswers as error:
        raise InvalidRequest(f"the answers are not a play of this lesson: {error}") from None
    score = rules.lesson_score(grade.first_correct, grade.questions, grade.finished)
    passed = rules.lesson_passes(score, context["pass_score"], grade.finished, grade.lives_left)
    perfect = rules.is_perfect(passed, grade.first_correct, grade.questions)
    xp = rules.lesson_xp(context["xp_reward"], passed, perfect, boosted=context["boosted"])
    return _Scored(exercises, grade, score, passed, perfect, xp, finished_at if grade.finished else None)


def _week_closed(week: date) -> WeekClosed:
    return WeekClosed(f"the week of {week} is closed; a completion arrives within {rules.ATTEMPT_MAX_AGE} of its start")


async def _unrank_open_week(conn: BaseDBAsyncClient, week: date) -> None:
    """Unrank an open week ranked by an older seed (ranks are written when a week closes); refuse a closed one. A week
    is open until `rules.week_closes_at` (Monday 02:00 UTC), not only until its Sunday ends: completions of it still arrive."""
    if datetime.now(timezone.utc) >= rules.week_closes_at(week):
        raise _week_closed(week)
    await conn.execute_query_dict(UNRANK_LOCK)  # one unranker at a time: two would lock the week's rows in two orders
    await conn.execute_query_dict(UNRANK_WEEK, [week])


async def _insert_attempt(
    conn: BaseDBAsyncClient, user_id: UUID, lesson_id: UUID, started_at: datetime, answers: Sequence[Answer],
    scored: _Scored, device_type: str | None, idempotency_key: str,
) -> UUID:
    grade, exercises = scored.grade, scored.exercises
    spent = sum(a.time_spent_ms for a in answers)
    rows = await conn.execute_query_dict(INSERT_ATTEMPT, [
        user_id, lesson_id, started_at, scored.finished_at, scored.score, scored.passed, scored.xp, grade.questions,
        grade.first_correct, sum(a.hint_used for a in answers), grade.lives_left,
        int(((scored.finished_at or started_at) - started_at).total_seconds() * 1000), spent // max(1, len(answers)),
        device_type, idempotency_key,
        [a.question_id for a in answers], [exercises[a.question_id].type for a in answers], [a.answer for a in answers],
        [exercises[a.question_id].answer for a in answers], [g.correct for g in grade.answers],
        [a.time_spent_ms for a in answers], [a.hint_used for a in answers], [g.attempt_number for g in grade.answers],
    ])
    attempt_id: UUID = rows[0]["id"]
    return attempt_id


async def _write_effects(
    conn: BaseDBAsyncClient, user_id: UUID, lesson_id: UUID, wallet_id: UUID, gems: int, attempt_id: UUID, day: date,
    scored: _Scored, first_pass: bool, state: Row, request: str,
) -> LessonCompleted:
    """Streak, totals, achievements, rewards, feed and the stored result, from the state read under the wallet lock."""
    before = rules.StreakState(
        state["current_streak"] or 0, state["longest_streak"] or 0, state["total_days_active"] or 0,
        state["last_activity_date"], state["freeze_count"] or 0,
    )
    streak = rules.streak_on_activity(before, day)
    awards = Awards(gems, xp=scored.xp)
    if streak.current != before.current and rules.is_streak_milestone(streak.current):
        awards.feed.append(FeedEvent("streak_milestone", {"streak": streak.current}, f"reached a {streak.current}-day streak"))
    if first_pass and state["unit_lessons"] and state["unit_done"] >= state["unit_lessons"]:
        awards.feed.append(FeedEvent("unit_completed", {"course_id": str(state["course_id"]), "unit_id": str(state["unit_id"])},
                                     f"finished a unit of {state['course_title']}"))
    if first_pass and state["course_lessons"] and state["course_done"] >= state["course_lessons"]:
        awards.feed.append(FeedEvent("course_completed", {"course_id": str(state["course_id"])}, f"completed the course {state['course_title']}"))
    if scored.passed and not state["goal_paid"] and rules.daily_goal_reached(state["passed_today"]):
        awards.pay("earn", rules.DAILY_GOAL_GEMS, DAILY_GOAL_SOURCE, day.isoformat(), f"{DAILY_GOAL_SOURCE}:{day.isoformat()}",
                   "Daily goal reached")
    plan_awards(awards, read_catalogue(state["catalogue"]), {
        "lesson_complete": state["lessons_passed"], "xp_earned": state["lesson_xp"], "perfect_score": state["perfect_lessons"],
        "reach_streak": streak.current, "course_complete": state["courses_completed"],
    })
    result = LessonCompleted(
        attempt_id, scored.score, scored.passed, scored.xp, state["total_xp"] + awards.xp, streak.current, awards.balance,
        tuple(a.slug for a in awards.unlocked),
    )
    await conn.execute_query_dict(WRITE_EFFECTS.sql, WRITE_EFFECTS.arguments({
        **awards.values(user_id, wallet_id),
        "current": streak.current, "longest": streak.longest, "last_active": streak.last_active, "days_active": streak.days_active,
        "freezes": streak.freezes, "streak_changed": streak != before, "freezes_used": before.freezes - streak.freezes,
        "freeze_item": state["freeze_item"], "lesson": lesson_id, "first_pass": first_pass,
        "outcome": json.dumps({**_body(result), "request": request}), "attempt": attempt_id,
    }))
    return result


def _body(result: LessonCompleted) -> dict[str, Any]:
    return {
        "attempt_id": str(result.attempt_id), "score": result.score, "passed": result.passed, "xp_earned": result.xp_earned,
        "total_xp": result.total_xp, "streak": result.streak, "gems": result.gems,
        "achievements_unlocked": list(result.achievements_unlocked),
    }


def _replayed(outcome: Any, request: str, idempotency_key: str) -> LessonCompleted:
    """The first completion's result for a retry; another request under the same key is refused."""
    stored = json.loads(outcome) if isinstance(outcome, str) else outcome
    if stored.get("request") != request:
        raise IdempotencyKeyReused(f"idempotency key {idempotency_key!r} was first used for another request")
    return LessonCompleted(
        UUID(stored["attempt_id"]), stored["score"], stored["passed"], stored["xp_earned"], stored["total_xp"],
        stored["streak"], stored["gems"], tuple(stored["achievements_unlocked"]), replayed=True,
    )


async def _replay_after_race(user_id: UUID, idempotency_key: str, request: str) -> LessonCompleted:
    async with in_transaction() as conn:
        rows = await conn.execute_query_dict(READ_REPLAY, [user_id, idempotency_key])
    if not rows or rows[0]["outcome"] is None:  # the first request rolled back after all: the client retries
        raise IdempotencyKeyReused(f"idempotency key {idempotency_key!r} is in use by a request still running")
    return _replayed(rows[0]["outcome"], request, idempotency_key)
