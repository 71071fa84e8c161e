"""Complete a lesson: the attempt scored on the server, and everything it moves, in one transaction.

`complete_lesson` takes the client's answers (never its score) and has the shape of a domain model and its handler:
1. read: the lesson and the request's context (`Arrival`, before any lock), then, under the user's locks, the
   learner's state (`LearnerState`, one statement: totals, streak, this lesson's history, the day, the catalogue);
2. decide: `score_attempt` grades the answers against the lesson's content with the rule book (`rules.grade_lesson`,
   `lesson_score`, `lesson_passes`), and `decide` turns grade and state into the effects (`Effects`: the XP by
   `rules.play_kind` and `lesson_xp`, the streak, achievements, the daily goal, the words taught, the feed, the
   result). Both are pure: no I/O, no clock;
3. write: `write_effects` writes them all in one statement: the attempt (with its result, which a retry with the same
   idempotency key gets back: nothing is written twice) and its question attempts, the leaderboard entry of the
   attempt's Monday-Sunday week, `user_progress`, the streak (UTC days; a missed day consumes a held streak freeze,
   from `streaks.freeze_count` and the inventory alike), `users.total_xp`, achievement progress and unlocks with
   their XP and gem rewards, the daily goal's gems (ledger entries, as `wallet.py` writes them; achievements through
   `achievements.py`), the words of a lesson passed for the first time (into the learner's reviews, due now, the only
   way a word becomes reviewable), and the activity feed.

The rule book decides what earns (see `rules`): a first pass its XP, a replay practice XP once a day; answers faster
than `rules.MIN_ANSWER_MS` on average are refused; the client's times are clamped to the server's clock
(`rules.attempt_times`), and the day, the week and a Double XP Boost follow the clamped start. A lesson of an
unpublished course is not found; one whose prerequisite the learner has not passed is refused (`LessonLocked`).

Lock order (`wallet.py`'s, with the leaderboard entry first, as `leagues.close_week` locks entries before wallets):
    1. the leaderboard entry of the attempt's week (upserted without a change: the XP is decided under the next lock)
    2. the wallet row (FOR UPDATE): the learner's state is read after it, so it sees what the user's previous
       completion committed, and two completions of one user at once serialise here (one is the first pass)
    3. the attempt, user_progress, streak, inventory, users, user_achievements, the ledger: written after the lock
A retry racing its first request meets it at the unique index (user_id, idempotency_key): the second
insert waits for the first to commit, fails, and the retry returns the first result.

Open weeks are not ranked (`current_rank` stays NULL until `leagues.close_week` ranks the week), so a
completion never re-ranks a board. A completion of a closed week is refused (`WeekClosed`, nothing written): the
first read asks the week's marker (`league_weeks`, one row by its unique week_start, written by the close), never another
learner's entry; a close that commits while the completion waits for its entry is seen in the entry itself, which
the close ranked. (A learner's first entry of the week, inserted by a completion the close could not see, would stay
unranked in a closed week: the close runs after `rules.ATTEMPT_MAX_AGE`, when no completion of the week is still
arriving, and `langlearn verify` would report such an entry, `league_week_rank_mismatch`.)

Round trips (BEGIN and COMMIT included), independent of the data and of the number of questions:
    7 (a user's first ledger use adds 2); a replay 3.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from langlearn import rules
from langlearn.models.enums import DeviceType
from langlearn.operations.achievements import AWARD_CTES, Awards, CatalogueEntry, FeedEvent, Statement, catalogue_sql, plan_awards, read_catalogue
from langlearn.operations.errors import IdempotencyKeyReused, InvalidRequest, LessonLocked, NotFound, WeekClosed
from langlearn.operations.retry import retried_on_failover
from langlearn.operations.wallet import check_key, lock_wallet, server_key
from langlearn.routing import PRIMARY, write_operation

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
    lsn: str | None = field(default=None, compare=False)  # read-your-writes token (langlearn.routing), with standbys


# --- the domain: what is read, and what the rule book decides from it ------------------------------

@dataclass(frozen=True)
class Completion:
    """The request as the server takes it: the answers, the times clamped to its clock, the key and the request's digest
    (what tells a retry from another request under the same key), and the id the attempt will have."""

    user_id: UUID
    lesson_id: UUID
    answers: tuple[Answer, ...]
    times: rules.AttemptTimes
    idempotency_key: str
    device_type: str | None
    digest: str
    attempt_id: UUID

    @property
    def day(self) -> date:
        return rules.activity_day(self.times.started)

    @property
    def week(self) -> date:
        return rules.week_start(self.day)


@dataclass(frozen=True)
class Exercise:
    id: str
    type: str
    answer: str


@dataclass(frozen=True)
class Lesson:
    """The lesson played (of a published course), as the first read finds it."""

    id: UUID
    exercises: Mapping[str, Exercise]
    xp_reward: int
    pass_score: int
    course_id: UUID
    unit_id: UUID | None
    missing_prerequisite: str | None  # the title of a prerequisite the learner has not passed


@dataclass(frozen=True)
class Arrival:
    """What the request finds before any lock: the lesson, a stored result for its key, the week's state."""

    lesson: Lesson
    replay: Any  # the stored result of the key's first completion (JSON), or None
    league: str  # the league the attempt's week is played in
    week_closed: bool  # the attempt's week has its marker: `leagues.close_week` closed it
    boosted: bool  # a Double XP Boost was active at the attempt's (clamped) start


@dataclass(frozen=True)
class LearnerState:
    """The learner as the wallet lock leaves them, before this attempt: one read (`READ_STATE`)."""

    wallet_id: UUID
    gems: int
    total_xp: int
    streak: rules.StreakState
    completed_before: bool  # this lesson
    practised_today: bool  # a replay of this lesson passed this UTC day
    perfected_before: bool  # this lesson passed with every first answer right
    lessons_passed: int  # distinct lessons
    perfect_lessons: int  # distinct lessons
    lesson_xp: int
    passed_today: int
    courses_completed: int
    course_done: int
    course_lessons: int
    course_title: str
    unit_done: int
    unit_lessons: int
    goal_paid: bool
    catalogue: tuple[CatalogueEntry, ...]
    freeze_item: UUID | None


@dataclass(frozen=True)
class Scored:
    """The attempt as graded from its answers: what the attempt row and its question rows hold (XP aside)."""

    grade: rules.LessonGrade
    score: int
    passed: bool
    perfect: bool


@dataclass(frozen=True)
class Effects:
    """What the attempt moves: decided by `decide`, written by `write_effects`."""

    scored: Scored
    play: rules.Play
    xp: int
    first_pass: bool  # the lesson's words are taught
    streak: rules.StreakState
    awards: Awards  # XP and gems added, achievements, ledger entries, feed
    result: LessonCompleted


def score_attempt(lesson: Lesson, answers: Sequence[Answer]) -> Scored:
    """The attempt graded from the lesson's content (the client's score is never asked for). Raises `InvalidRequest`
    for answers out of bounds, answered too fast (`rules.too_fast`) or no play of the lesson produces."""
    for answer in answers:
        if len(answer.answer) > ANSWER_MAX or not 0 <= answer.time_spent_ms <= ANSWER_TIME_MAX_MS:
            raise InvalidRequest(f"answer to {answer.question_id!r}: at most {ANSWER_MAX} characters and 0 to {ANSWER_TIME_MAX_MS} ms")
    if rules.too_fast([a.time_spent_ms for a in answers]):
        raise InvalidRequest(f"answers took less than {rules.MIN_ANSWER_MS} ms each on average (time_spent_ms): that is no play of a lesson")
    exercises = lesson.exercises
    marked = [(a.question_id, a.question_id in exercises and rules.is_correct_answer(exercises[a.question_id].answer, a.answer))
              for a in answers]
    try:
        grade = rules.grade_lesson(list(exercises), marked)
    except rules.ImpossibleAnswers as error:
        raise InvalidRequest(f"the answers are not a play of this lesson: {error}") from None
    score = rules.lesson_score(grade.first_correct, grade.questions, grade.finished)
    passed = rules.lesson_passes(score, lesson.pass_score, grade.finished, grade.lives_left)
    perfect = rules.is_perfect(passed, grade.first_correct, grade.questions)
    return Scored(grade, score, passed, perfect)


def decide(completion: Completion, arrival: Arrival, scored: Scored, learner: LearnerState) -> Effects:
    """Everything the attempt earns and moves, from the rule book: pure, so it is tested without a database."""
    lesson, passed, day = arrival.lesson, scored.passed, completion.day
    play = rules.play_kind(learner.completed_before, learner.practised_today)
    first_pass = passed and play is rules.Play.FIRST_PASS
    xp = rules.lesson_xp(lesson.xp_reward, passed, scored.perfect, arrival.boosted, play)
    streak = rules.streak_on_activity(learner.streak, day)
    awards = Awards(learner.gems, xp=xp)
    if streak.current != learner.streak.current and rules.is_streak_milestone(streak.current):
        awards.feed.append(FeedEvent("streak_milestone", {"streak": streak.current}, f"reached a {streak.current}-day streak"))
    unit_done, course_done = learner.unit_done + first_pass, learner.course_done + first_pass
    if first_pass and learner.unit_lessons and unit_done >= learner.unit_lessons:
        awards.feed.append(FeedEvent("unit_completed", {"course_id": str(lesson.course_id), "unit_id": str(lesson.unit_id)},
                                     f"finished a unit of {learner.course_title}"))
    completes_course = first_pass and 0 < learner.course_lessons <= course_done and learner.course_done < learner.course_lessons
    if completes_course:
        awards.feed.append(FeedEvent("course_completed", {"course_id": str(lesson.course_id)}, f"completed the course {learner.course_title}"))
    if passed and not learner.goal_paid and rules.daily_goal_reached(learner.passed_today + 1):
        awards.pay("earn", rules.DAILY_GOAL_GEMS, DAILY_GOAL_SOURCE, day.isoformat(), server_key(DAILY_GOAL_SOURCE, day.isoformat()),
                   "Daily goal reached")
    newly_perfect = scored.perfect and not learner.perfected_before
    plan_awards(awards, learner.catalogue, {
        "lesson_complete": learner.lessons_passed + first_pass, "xp_earned": learner.lesson_xp + xp,
        "perfect_score": learner.perfect_lessons + newly_perfect, "reach_streak": streak.current,
        "course_complete": learner.courses_completed + completes_course,
    })
    result = LessonCompleted(completion.attempt_id, scored.score, passed, xp, learner.total_xp + awards.xp, streak.current, awards.balance,
                             tuple(a.slug for a in awards.unlocked))
    return Effects(scored, play, xp, first_pass, streak, awards, result)


# --- SQL -------------------------------------------------------------------------------------------

# $1 user, $2 lesson, $3 key, $4 the attempt's (clamped) start, $5 the week's Monday. `week_closed`: the week's marker, by key
READ_ARRIVAL = """
    SELECT l.content, l.xp_reward, l.pass_score, l.course_id, l.unit_id, coalesce(c.is_published, false) AS published, lg.league,
           EXISTS (SELECT 1 FROM users WHERE id = $1) AS user_exists,
           (SELECT a.outcome FROM lesson_attempts a WHERE a.user_id = $1 AND a.idempotency_key = $3) AS replay,
           (SELECT p.title FROM lessons p WHERE p.id = l.prerequisite_lesson_id
              AND NOT EXISTS (SELECT 1 FROM user_progress up WHERE up.user_id = $1 AND up.lesson_id = p.id AND up.status = 'completed')
           ) AS missing_prerequisite,
           EXISTS (SELECT 1 FROM user_inventory i JOIN shop_items s ON s.id = i.shop_item_id
                   WHERE i.user_id = $1 AND s.item_type = 'double_xp' AND i.is_active
                     AND i.activated_at <= $4 AND i.expires_at > $4) AS boosted,
           EXISTS (SELECT 1 FROM league_weeks w WHERE w.week_start = $5) AS week_closed
    FROM lessons l
    LEFT JOIN courses c ON c.id = l.course_id
    CROSS JOIN LATERAL (SELECT coalesce((SELECT e.league::text FROM leaderboard_entries e WHERE e.user_id = $1 AND e.week_start <= $5
                                         ORDER BY e.week_start DESC LIMIT 1), 'bronze') AS league) lg
    WHERE l.id = $2
"""
READ_REPLAY = "SELECT outcome FROM lesson_attempts WHERE user_id = $1 AND idempotency_key = $2"
# the entry locked first (lock order), unchanged: its XP is added by WRITE_EFFECTS once decided under the wallet lock. Its
# rank is set only by a close, which commits first when the completion waited for the entry: the week closed meanwhile
LOCK_ENTRY = """
    INSERT INTO leaderboard_entries (user_id, week_start, week_end, league, xp_earned, lessons_completed)
    VALUES ($1, $2, $2::date + 6, $3::league_type, 0, 0)
    ON CONFLICT (user_id, week_start) DO UPDATE SET xp_earned = leaderboard_entries.xp_earned
    RETURNING current_rank
"""
_DAY = "started_at >= $4::date::timestamp AT TIME ZONE 'UTC' AND started_at < ($4::date + 1)::timestamp AT TIME ZONE 'UTC'"
# $1 user, $2 wallet, $3 lesson, $4 the attempt's UTC day (date), $5 course, $6 unit (or NULL); after the wallet lock
READ_STATE = f"""
    SELECT u.total_xp, s.current_streak, s.longest_streak, s.last_activity_date, s.total_days_active, s.freeze_count,
           a.lessons_passed, a.perfect_lessons, a.lesson_xp, a.passed_today, a.perfected_before,
           coalesce(a.lesson_passes_today > (a.lesson_first_pass >= $4::date::timestamp AT TIME ZONE 'UTC')::int, false) AS practised_today,
           EXISTS (SELECT 1 FROM user_progress p WHERE p.user_id = $1 AND p.lesson_id = $3 AND p.status = 'completed') AS completed_before,
           (SELECT count(*) FROM (SELECT 1 FROM user_progress p JOIN courses c ON c.id = p.course_id
                                  WHERE p.user_id = $1 AND p.status = 'completed'
                                  GROUP BY p.course_id, c.total_lessons HAVING c.total_lessons > 0 AND count(*) >= c.total_lessons) done
           ) AS courses_completed,
           (SELECT count(*) FROM user_progress p WHERE p.user_id = $1 AND p.course_id = $5 AND p.status = 'completed') AS course_done,
           (SELECT total_lessons FROM courses WHERE id = $5) AS course_lessons,
           (SELECT title FROM courses WHERE id = $5) AS course_title,
           (SELECT count(*) FROM user_progress p JOIN lessons l ON l.id = p.lesson_id
            WHERE p.user_id = $1 AND l.unit_id = $6 AND p.status = 'completed') AS unit_done,
           (SELECT total_lessons FROM units WHERE id = $6) AS unit_lessons,
           EXISTS (SELECT 1 FROM wallet_transactions t
                   WHERE t.wallet_id = $2 AND t.created_at >= $4::date::timestamp AT TIME ZONE 'UTC'
                     AND t.source = 'daily_goal' AND t.reference_id = $4::date::text) AS goal_paid,
           {catalogue_sql("$1")} AS catalogue,
           (SELECT i.shop_item_id FROM user_inventory i JOIN shop_items si ON si.id = i.shop_item_id
            WHERE i.user_id = $1 AND si.item_type = 'streak_freeze' AND i.quantity > 0
            ORDER BY i.quantity DESC, i.shop_item_id LIMIT 1) AS freeze_item
    FROM users u
    LEFT JOIN streaks s ON s.user_id = u.id
    CROSS JOIN LATERAL (
        SELECT count(DISTINCT lesson_id) FILTER (WHERE passed) AS lessons_passed,
               count(DISTINCT lesson_id) FILTER (WHERE passed AND correct_answers = total_questions) AS perfect_lessons,
               coalesce(sum(xp_earned), 0) AS lesson_xp,
               count(*) FILTER (WHERE passed AND {_DAY}) AS passed_today,
               count(*) FILTER (WHERE passed AND lesson_id = $3 AND correct_answers = total_questions) > 0 AS perfected_before,
               count(*) FILTER (WHERE passed AND lesson_id = $3 AND {_DAY}) AS lesson_passes_today,
               min(started_at) FILTER (WHERE passed AND lesson_id = $3) AS lesson_first_pass
        FROM lesson_attempts WHERE user_id = u.id
    ) a
    WHERE u.id = $1
"""
# everything the attempt moves, in one statement: the attempt with its result (what a retry gets back) and its questions,
# the week's entry, the progress, the streak, a freeze spent, the words taught, then the awards (achievements.AWARD_CTES)
WRITE_EFFECTS = Statement.of(f"""
    WITH attempt AS (
        INSERT INTO lesson_attempts (id, user_id, lesson_id, started_at, finished_at, score, passed, xp_earned, total_questions,
                                     correct_answers, hints_used, lives_remaining, time_spent_ms, avg_response_time_ms,
                                     device_type, idempotency_key, outcome, created_at)
        VALUES (:attempt, :user, :lesson, :started, :finished, :score, :passed, :xp, :questions, :first_correct, :hints,
                :lives, :elapsed_ms, :average_ms, :device::device_type, :key, :outcome::jsonb, :started)
        RETURNING id
    ), questions AS (
        INSERT INTO question_attempts (lesson_attempt_id, question_id, question_type, user_answer, correct_answer, is_correct,
                                       time_spent_ms, hint_used, attempt_number)
        SELECT attempt.id, q.question_id, q.question_type, q.user_answer, q.correct_answer, q.is_correct, q.time_spent_ms,
               q.hint_used, q.attempt_number
        FROM attempt, unnest(:question_ids::text[], :question_types::text[], :given::text[], :expected::text[],
                             :correct::bool[], :answer_ms::int[], :hinted::bool[], :tries::int[])
             AS q(question_id, question_type, user_answer, correct_answer, is_correct, time_spent_ms, hint_used, attempt_number)
        RETURNING 1
    ), entry AS (
        UPDATE leaderboard_entries SET xp_earned = xp_earned + :xp, lessons_completed = lessons_completed + :passed::int,
                                       updated_at = now()
        WHERE user_id = :user AND week_start = :week
        RETURNING 1
    ), progress AS (
        INSERT INTO user_progress (user_id, lesson_id, course_id, status, score, completed_at, time_spent_seconds, attempts)
        VALUES (:user, :lesson, :course, (CASE WHEN :passed THEN 'completed' ELSE 'in_progress' END)::progress_status, :score,
                CASE WHEN :passed THEN :finished::timestamptz END, :elapsed_seconds, 1)
        ON CONFLICT (user_id, lesson_id) DO UPDATE
        SET status = (CASE WHEN user_progress.status = 'completed' OR :passed THEN 'completed' ELSE 'in_progress' END)::progress_status,
            score = greatest(user_progress.score, EXCLUDED.score),
            completed_at = coalesce(user_progress.completed_at, EXCLUDED.completed_at),
            time_spent_seconds = user_progress.time_spent_seconds + EXCLUDED.time_spent_seconds,
            attempts = user_progress.attempts + 1, updated_at = now()
        RETURNING 1
    ), streak AS (
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
    SELECT 1
""")


# --- the operation ---------------------------------------------------------------------------------

@retried_on_failover
@write_operation
async def complete_lesson(
    user_id: UUID, lesson_id: UUID, answers: Sequence[Answer], started_at: datetime, finished_at: datetime,
    idempotency_key: str, *, device_type: str | None = None,
) -> LessonCompleted:
    """Record a played lesson and everything it earns; a retry with the same key returns the first result.

    Refusals (nothing written): `InvalidRequest` (times out of bounds, answers too fast or no play of the lesson
    produces, a bad device type or key), `NotFound` (user, or lesson of a published course), `LessonLocked` (its
    prerequisite not passed), `IdempotencyKeyReused` (the key's first completion was another request), `WeekClosed`
    (the attempt's week is already closed).
    """
    check_key(idempotency_key)
    received = datetime.now(timezone.utc)
    _check_times(started_at, finished_at, received)
    if device_type is not None and device_type not in {d.value for d in DeviceType}:
        raise InvalidRequest(f"unknown device type {device_type!r}")
    completion = Completion(
        user_id, lesson_id, tuple(answers), rules.attempt_times(started_at, finished_at, received, [a.time_spent_ms for a in answers]),
        idempotency_key, device_type, _request_digest(lesson_id, answers, started_at, finished_at), uuid4(),
    )
    try:
        async with in_transaction(PRIMARY) as conn:
            arrival = await _read_arrival(conn, completion)
            if arrival.replay is not None:
                return _replayed(arrival.replay, completion)
            lesson = arrival.lesson
            if lesson.missing_prerequisite is not None:
                raise LessonLocked(f"pass the lesson {lesson.missing_prerequisite!r} first: it is this lesson's prerequisite")
            scored = score_attempt(lesson, answers)
            if arrival.week_closed:
                raise _week_closed(completion.week)
            entry = await conn.execute_query_dict(LOCK_ENTRY, [user_id, completion.week, arrival.league])
            if entry[0]["current_rank"] is not None:
                raise _week_closed(completion.week)
            learner = await _read_learner(conn, completion, lesson)
            effects = decide(completion, arrival, scored, learner)
            await write_effects(conn, completion, lesson, learner, effects)
    except IntegrityError as error:
        if getattr(error.__cause__, "constraint_name", None) != IDEMPOTENCY_INDEX:  # the name, not the message's wording
            raise
        # a retry that raced its first request: that one committed first, its result is the answer
        return await _replay_after_race(completion)
    return effects.result


# --- reads -----------------------------------------------------------------------------------------

def _check_times(started_at: datetime, finished_at: datetime, received: datetime) -> None:
    if started_at.tzinfo is None or finished_at.tzinfo is None:
        raise InvalidRequest("started_at and finished_at need a time zone (UTC: a trailing Z)")
    if finished_at < started_at:
        raise InvalidRequest("finished_at is before started_at")
    if finished_at > received + CLOCK_SKEW:
        raise InvalidRequest(f"finished_at {finished_at.isoformat()} is in the future")
    if started_at < received - rules.ATTEMPT_MAX_AGE:
        raise InvalidRequest(f"the attempt started more than {rules.ATTEMPT_MAX_AGE} ago; completions are accepted within that")


def _request_digest(lesson_id: UUID, answers: Sequence[Answer], started_at: datetime, finished_at: datetime) -> str:
    """What identifies a request, so that a key sent again with another request is told apart from a retry."""
    canonical = json.dumps([
        str(lesson_id), started_at.astimezone(timezone.utc).isoformat(), finished_at.astimezone(timezone.utc).isoformat(),
        [[a.question_id, a.answer, a.time_spent_ms, a.hint_used] for a in answers],
    ])
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _read_arrival(conn: BaseDBAsyncClient, completion: Completion) -> Arrival:
    """The lesson (of a published course: others are not offered) and the request's context, before any lock."""
    rows = await conn.execute_query_dict(READ_ARRIVAL, [
        completion.user_id, completion.lesson_id, completion.idempotency_key, completion.times.started, completion.week,
    ])
    if not rows or not rows[0]["published"]:
        raise NotFound(f"no lesson {completion.lesson_id}")
    row = rows[0]
    if not row["user_exists"]:
        raise NotFound(f"no user {completion.user_id}")
    lesson = Lesson(completion.lesson_id, _exercises(row["content"]), row["xp_reward"], row["pass_score"], row["course_id"], row["unit_id"],
                    row["missing_prerequisite"])
    return Arrival(lesson, row["replay"], row["league"], row["week_closed"], row["boosted"])


def _exercises(content: Any) -> dict[str, Exercise]:
    if isinstance(content, str):  # asyncpg returns JSONB as text unless a codec is set
        content = json.loads(content)
    exercises = content.get("exercises") if isinstance(content, dict) else None
    if not isinstance(exercises, list) or not exercises:
        raise InvalidRequest("this lesson has no exercises to answer")
    return {str(e["id"]): Exercise(str(e["id"]), str(e.get("type", "")), str(e.get("answer", ""))) for e in exercises}


async def _read_learner(conn: BaseDBAsyncClient, completion: Completion, lesson: Lesson) -> LearnerState:
    """Lock the wallet, then read the learner's state in one statement: every number `decide` needs."""
    wallet_id, gems = await lock_wallet(conn, completion.user_id)
    row = (await conn.execute_query_dict(READ_STATE, [
        completion.user_id, wallet_id, lesson.id, completion.day, lesson.course_id, lesson.unit_id,
    ]))[0]
    streak = rules.StreakState(row["current_streak"] or 0, row["longest_streak"] or 0, row["total_days_active"] or 0,
                               row["last_activity_date"], row["freeze_count"] or 0)
    return LearnerState(
        wallet_id, gems, row["total_xp"], streak, row["completed_before"], row["practised_today"], row["perfected_before"],
        row["lessons_passed"], row["perfect_lessons"], row["lesson_xp"], row["passed_today"], row["courses_completed"],
        row["course_done"], row["course_lessons"] or 0, row["course_title"] or "", row["unit_done"], row["unit_lessons"] or 0,
        row["goal_paid"], tuple(read_catalogue(row["catalogue"])), row["freeze_item"],
    )


def _week_closed(week: date) -> WeekClosed:
    return WeekClosed(f"the week of {week} is closed; a completion arrives within {rules.ATTEMPT_MAX_AGE} of its start")


# --- the write -------------------------------------------------------------------------------------

async def write_effects(conn: BaseDBAsyncClient, completion: Completion, lesson: Lesson, learner: LearnerState, effects: Effects) -> None:
    """Write what `decide` decided, in one statement (`WRITE_EFFECTS`)."""
    answers, scored, times, exercises = completion.answers, effects.scored, completion.times, lesson.exercises
    grade, streak, before = scored.grade, effects.streak, learner.streak
    finished = times.finished if grade.finished else None  # an abandoned attempt has no end
    elapsed = (finished or times.started) - times.started
    await conn.execute_query_dict(WRITE_EFFECTS.sql, WRITE_EFFECTS.arguments({
        **effects.awards.values(completion.user_id, learner.wallet_id),
        "attempt": completion.attempt_id, "lesson": lesson.id, "course": lesson.course_id, "week": completion.week,
        "started": times.started, "finished": finished, "score": scored.score, "passed": scored.passed, "xp": effects.xp,
        "questions": grade.questions, "first_correct": grade.first_correct, "hints": sum(a.hint_used for a in answers),
        "lives": grade.lives_left, "elapsed_ms": int(elapsed.total_seconds() * 1000), "elapsed_seconds": int(elapsed.total_seconds()),
        "average_ms": sum(a.time_spent_ms for a in answers) // max(1, len(answers)), "device": completion.device_type,
        "key": completion.idempotency_key, "outcome": json.dumps({**_body(effects.result), "request": completion.digest}),
        "question_ids": [a.question_id for a in answers], "question_types": [exercises[a.question_id].type for a in answers],
        "given": [a.answer for a in answers], "expected": [exercises[a.question_id].answer for a in answers],
        "correct": [g.correct for g in grade.answers], "answer_ms": [a.time_spent_ms for a in answers],
        "hinted": [a.hint_used for a in answers], "tries": [g.attempt_number for g in grade.answers],
        "current": streak.current, "longest": streak.longest, "last_active": streak.last_active, "days_active": streak.days_active,
        "freezes": streak.freezes, "streak_changed": streak != before, "freezes_used": before.freezes - streak.freezes,
        "freeze_item": learner.freeze_item, "first_pass": effects.first_pass,
    }))


def _body(result: LessonCompleted) -> dict[str, Any]:
    return {
        "attempt_id": str(result.attempt_id), "score": result.score, "passed": result.passed, "xp_earned": result.xp_earned,
        "total_xp": result.total_xp, "streak": result.streak, "gems": result.gems,
        "achievements_unlocked": list(result.achievements_unlocked),
    }


def _replayed(outcome: Any, completion: Completion) -> LessonCompleted:
    """The first completion's result for a retry; another request under the same key is refused."""
    stored = json.loads(outcome) if isinstance(outcome, str) else outcome
    if stored.get("request") != completion.digest:
        raise IdempotencyKeyReused(f"idempotency key {completion.idempotency_key!r} was first used for another request")
    return LessonCompleted(
        UUID(stored["attempt_id"]), stored["score"], stored["passed"], stored["xp_earned"], stored["total_xp"],
        stored["streak"], stored["gems"], tuple(stored["achievements_unlocked"]), replayed=True,
    )


async def _replay_after_race(completion: Completion) -> LessonCompleted:
    async with in_transaction(PRIMARY) as conn:
        rows = await conn.execute_query_dict(READ_REPLAY, [completion.user_id, completion.idempotency_key])
    if not rows or rows[0]["outcome"] is None:  # the first request rolled back after all: the client retries
        raise IdempotencyKeyReused(f"idempotency key {completion.idempotency_key!r} is in use by a request still running")
    return _replayed(rows[0]["outcome"], completion)
