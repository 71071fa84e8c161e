"""Completing a lesson (langlearn.operations.lessons) on a real PostgreSQL: every row it writes, retries, races, round trips."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest
from tortoise import Tortoise

from langlearn import rules
from langlearn.operations import lessons, reviews
from langlearn.operations.errors import IdempotencyKeyReused, InvalidRequest, LessonLocked, NotFound, WeekClosed
from langlearn.operations.lessons import Answer
from langlearn.startup import database
from langlearn.verify import check_invariants
from tests.test_wallet_operations import pooled

pytestmark = [pytest.mark.slow, pytest.mark.clock]  # a seeded database per test module; times near now


async def new_learner(connection, name: str) -> UUID:
    """A user as `accounts.register` leaves one, without its welcome gems: a wallet and a streak row, nothing else."""
    user_id = await connection.fetchval(
        "INSERT INTO users (email, username, hashed_password) VALUES ($1, $2, '$argon2id$x') RETURNING id", f"{name}@example.com", name
    )
    await connection.execute("INSERT INTO user_wallets (user_id) VALUES ($1)", user_id)
    await connection.execute("INSERT INTO streaks (user_id) VALUES ($1)", user_id)
    return user_id


async def first_lesson(connection) -> dict:
    """The first lesson of the first course, with its exercises."""
    row = await connection.fetchrow(
        "SELECT l.id, l.content, l.xp_reward, l.pass_score, l.course_id, l.unit_id FROM lessons l "
        "JOIN courses c ON c.id = l.course_id ORDER BY c.title, l.order_index LIMIT 1"
    )
    return {**row, "exercises": json.loads(row["content"])["exercises"]}


async def last_lesson(connection, course_id: UUID) -> dict:
    """The last lesson of a course: its prerequisite is the one before, and so on back to the first."""
    row = await connection.fetchrow("SELECT id, content, prerequisite_lesson_id FROM lessons WHERE course_id = $1 ORDER BY order_index DESC LIMIT 1",
                                    course_id)
    return {**row, "exercises": json.loads(row["content"])["exercises"]}


def right_answers(lesson: dict, ms: int = 3000) -> list[Answer]:
    return [Answer(e["id"], e["answer"], ms, False) for e in lesson["exercises"]]


def times() -> tuple[datetime, datetime]:
    finished = datetime.now(timezone.utc) - timedelta(seconds=30)
    return finished - timedelta(minutes=3), finished


async def assert_consistent(connection) -> None:
    findings = await check_invariants(connection)
    assert findings == [], [f.message for f in findings]


async def test_a_perfect_first_lesson_writes_every_row_it_should(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_learner(connection, "first_lesson")
    lesson = await first_lesson(connection)
    started, finished = times()
    async with database(seeded_db, migrate="check", global_fallback=False):
        result = await lessons.complete_lesson(user, lesson["id"], right_answers(lesson), started, finished, "k1", device_type="ios")

    xp = rules.lesson_xp(lesson["xp_reward"], passed=True, perfect=True, boosted=False)
    expected = await connection.fetch(
        "SELECT slug, xp_reward, gems_reward FROM achievements WHERE (condition_type = 'lesson_complete' AND condition_value <= 1)"
        " OR (condition_type = 'perfect_score' AND condition_value <= 1) OR (condition_type = 'xp_earned' AND condition_value <= $1)"
        " OR (condition_type = 'reach_streak' AND condition_value <= 1) ORDER BY slug", xp,
    )
    assert (result.score, result.passed, result.xp_earned, result.streak, result.replayed) == (100, True, xp, 1, False)
    assert sorted(result.achievements_unlocked) == [row["slug"] for row in expected]
    assert result.total_xp == xp + sum(row["xp_reward"] for row in expected)
    assert result.gems == rules.DAILY_GOAL_GEMS + sum(row["gems_reward"] for row in expected)

    attempt = await connection.fetchrow("SELECT * FROM lesson_attempts WHERE id = $1", result.attempt_id)
    assert (attempt["user_id"], attempt["score"], attempt["passed"], attempt["xp_earned"], attempt["lives_remaining"]) == (user, 100, True, xp, 5)
    assert (attempt["total_questions"], attempt["correct_answers"], attempt["idempotency_key"]) == (len(lesson["exercises"]),) * 2 + ("k1",)
    assert (attempt["started_at"], attempt["finished_at"], attempt["device_type"]) == (started, finished, "ios")
    questions = await connection.fetch("SELECT * FROM question_attempts WHERE lesson_attempt_id = $1 ORDER BY question_id", result.attempt_id)
    assert [(q["question_id"], q["is_correct"], q["attempt_number"], q["correct_answer"]) for q in questions] == sorted(
        (e["id"], True, 1, e["answer"]) for e in lesson["exercises"])
    progress = await connection.fetchrow("SELECT status::text, score, attempts, completed_at FROM user_progress WHERE user_id = $1", user)
    assert tuple(progress) == ("completed", 100, 1, finished)
    assert await connection.fetchval("SELECT total_xp FROM users WHERE id = $1", user) == result.total_xp
    streak = await connection.fetchrow("SELECT current_streak, longest_streak, last_activity_date, total_days_active FROM streaks WHERE user_id = $1", user)
    assert tuple(streak) == (1, 1, rules.activity_day(started), 1)
    entry = await connection.fetchrow("SELECT week_start, league::text, xp_earned, lessons_completed, current_rank FROM leaderboard_entries WHERE user_id = $1", user)
    assert tuple(entry) == (rules.week_start(rules.activity_day(started)), "bronze", xp, 1, None)
    ledger = await connection.fetch("SELECT source, amount, balance_after FROM wallet_transactions WHERE user_id = $1 ORDER BY created_at, ledger_seq", user)
    assert ledger[0]["source"] == "daily_goal" and {row["source"] for row in ledger[1:]} <= {"achievement"}
    assert ledger[-1]["balance_after"] == result.gems == await connection.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", user)
    unlocked = await connection.fetchval("SELECT count(*) FROM user_achievements WHERE user_id = $1 AND unlocked_at IS NOT NULL", user)
    assert unlocked == len(expected)
    words = await connection.fetch("SELECT v.id FROM vocabulary_items v WHERE v.lesson_id = $1", lesson["id"])
    assert words, "the first lesson teaches words"
    learning = await connection.fetch("SELECT vocab_id AS id, review_count, next_review_date <= now() AS due FROM user_vocab_knowledge WHERE user_id = $1", user)
    assert sorted((row["id"], row["review_count"], row["due"]) for row in learning) == sorted((word["id"], 0, True) for word in words)
    feed = await connection.fetch("SELECT activity_type FROM activity_feeds WHERE user_id = $1", user)
    assert sorted(f["activity_type"] for f in feed) == ["achievement_unlocked"] * len(expected)
    await assert_consistent(connection)


async def test_a_retry_gets_the_first_result_and_writes_nothing(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_learner(connection, "retrier")
    lesson = await first_lesson(connection)
    started, finished = times()
    answers = right_answers(lesson)
    async with database(seeded_db, migrate="check", global_fallback=False):
        first = await lessons.complete_lesson(user, lesson["id"], answers, started, finished, "same")
        before = await connection.fetchval("SELECT count(*) FROM lesson_attempts") + await connection.fetchval("SELECT count(*) FROM wallet_transactions")
        again = await lessons.complete_lesson(user, lesson["id"], answers, started, finished, "same")
        with pytest.raises(IdempotencyKeyReused):
            await lessons.complete_lesson(user, lesson["id"], answers[:-1], started, finished, "same")
    after = await connection.fetchval("SELECT count(*) FROM lesson_attempts") + await connection.fetchval("SELECT count(*) FROM wallet_transactions")
    assert again == lessons.LessonCompleted(**{**first.__dict__, "replayed": True})
    assert after == before


async def test_wrong_answers_cost_hearts_and_a_lesson_out_of_hearts_fails(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_learner(connection, "struggler")
    lesson = await first_lesson(connection)
    exercise = lesson["exercises"][0]
    started, finished = times()
    wrong = [Answer(exercise["id"], "definitely wrong", 1000, True)] * rules.LESSON_LIVES
    one_miss = [Answer(exercise["id"], "nope", 900, False), *right_answers(lesson)]
    async with database(seeded_db, migrate="check", global_fallback=False):
        failed = await lessons.complete_lesson(user, lesson["id"], wrong, started, finished, "fail")
        missed = await lessons.complete_lesson(user, lesson["id"], one_miss, started, finished, "miss")
    assert (failed.score, failed.passed, failed.xp_earned) == (0, False, 0)
    row = await connection.fetchrow("SELECT lives_remaining, hints_used, finished_at FROM lesson_attempts WHERE id = $1", failed.attempt_id)
    assert tuple(row) == (0, rules.LESSON_LIVES, finished)
    total = len(lesson["exercises"])
    assert missed.score == rules.lesson_score(total - 1, total, True)
    assert missed.passed == (missed.score >= lesson["pass_score"])
    numbers = await connection.fetch("SELECT attempt_number FROM question_attempts WHERE lesson_attempt_id = $1 AND question_id = $2 ORDER BY attempt_number",
                                     missed.attempt_id, exercise["id"])
    assert [n["attempt_number"] for n in numbers] == [1, 2]
    await assert_consistent(connection)


async def test_a_missed_day_spends_a_streak_freeze_from_the_inventory_too(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_learner(connection, "freezer")
    lesson = await first_lesson(connection)
    started, finished = times()
    today = rules.activity_day(started)
    freeze = await connection.fetchval("SELECT id FROM shop_items WHERE item_type = 'streak_freeze' ORDER BY name LIMIT 1")
    await connection.execute("INSERT INTO user_inventory (user_id, shop_item_id, quantity, is_active) VALUES ($1, $2, 2, true)", user, freeze)
    await connection.execute(
        "UPDATE streaks SET current_streak = 9, longest_streak = 9, total_days_active = 9, freeze_count = 2, last_activity_date = $2 WHERE user_id = $1",
        user, today - timedelta(days=2),
    )
    async with database(seeded_db, migrate="check", global_fallback=False):
        result = await lessons.complete_lesson(user, lesson["id"], right_answers(lesson), started, finished, "saved")
    assert result.streak == 10
    assert await connection.fetchval("SELECT freeze_count FROM streaks WHERE user_id = $1", user) == 1
    assert await connection.fetchval("SELECT quantity FROM user_inventory WHERE user_id = $1", user) == 1
    await assert_consistent(connection)


def slow_play(lesson: dict) -> tuple[list[Answer], datetime, datetime, date]:
    """A slow play started as long ago as the server accepts unclamped, and its week: the week of its start, which early
    on a Monday (before the weekly close at 02:00 UTC) is last week."""
    answers = right_answers(lesson, ms=rules.MAX_COUNTED_ANSWER_MS)
    now = datetime.now(timezone.utc)
    started, finished = now - rules.plausible_play([a.time_spent_ms for a in answers]) + timedelta(minutes=1), now - timedelta(seconds=30)
    return answers, started, finished, rules.week_start(rules.activity_day(started))


WRITTEN = "SELECT (SELECT count(*) FROM lesson_attempts) + (SELECT count(*) FROM leaderboard_entries) + (SELECT count(*) FROM wallet_transactions)"


async def test_a_completion_of_a_closed_week_is_refused_by_its_marker_and_an_open_week_takes_it(seeded_db, connect):
    """The week's marker (`league_weeks`) decides, whatever the board: a learner with no entry in a closed week, whose
    league's board that week is not ranked, is refused and nothing is written; the week open again, the same request passes.
    (A week closes `rules.ATTEMPT_MAX_AGE` after its Sunday: its row is written here by hand, as no close may write it yet.)"""
    connection = await connect(seeded_db)
    lesson = await first_lesson(connection)
    learner = await new_learner(connection, "too_late")
    answers, started, finished, week = slow_play(lesson)
    await connection.execute("INSERT INTO league_weeks (week_start) VALUES ($1)", week)
    try:
        before = await connection.fetchval(WRITTEN)
        async with database(seeded_db, migrate="check", global_fallback=False):
            with pytest.raises(WeekClosed, match=f"the week of {week} is closed"):
                await lessons.complete_lesson(learner, lesson["id"], answers, started, finished, "closed")
            assert await connection.fetchval(WRITTEN) == before
            await connection.execute("DELETE FROM league_weeks WHERE week_start = $1", week)
            result = await lessons.complete_lesson(learner, lesson["id"], answers, started, finished, "closed")
    finally:
        await connection.execute("DELETE FROM league_weeks WHERE week_start = $1", week)
    assert result.passed
    assert await connection.fetchval("SELECT current_rank FROM leaderboard_entries WHERE user_id = $1", learner) is None
    await assert_consistent(connection)


async def test_a_close_committed_while_a_completion_waits_for_its_entry_refuses_it(seeded_db, connect):
    """The marker is read before any lock; a close that commits while the completion waits for its entry (which the close
    locked and ranked) is seen in the entry: refused, nothing written."""
    connection, closer = await connect(seeded_db), await connect(seeded_db)
    lesson = await first_lesson(connection)
    learner = await new_learner(connection, "caught_by_the_close")
    answers, started, finished, week = slow_play(lesson)
    async with database(seeded_db, migrate="check", global_fallback=False):
        await lessons.complete_lesson(learner, lesson["id"], answers, started, finished, "before")
        before = await connection.fetchval(WRITTEN)
        closing = closer.transaction()
        await closing.start()
        try:  # a close in miniature: the entry locked and ranked, the marker written, then the commit
            await closer.execute("SELECT 1 FROM leaderboard_entries WHERE user_id = $1 AND week_start = $2 FOR UPDATE", learner, week)
            completing = asyncio.create_task(
                lessons.complete_lesson(learner, lesson["id"], answers, started, finished, "during"))
            for _ in range(500):  # until the completion waits for the entry
                if await connection.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                             "AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO leaderboard_entries%'"):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the completion never waited for its entry")
            await closer.execute("UPDATE leaderboard_entries SET current_rank = 1 WHERE user_id = $1 AND week_start = $2", learner, week)
            await closer.execute("INSERT INTO league_weeks (week_start) VALUES ($1)", week)
            await closing.commit()
            with pytest.raises(WeekClosed):
                await completing
            assert await connection.fetchval(WRITTEN) == before
        finally:  # the shared database's week open again
            await connection.execute("DELETE FROM league_weeks WHERE week_start = $1", week)
            await connection.execute("UPDATE leaderboard_entries SET current_rank = NULL WHERE user_id = $1", learner)
    await assert_consistent(connection)


async def test_bad_requests_are_refused_and_write_nothing(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_learner(connection, "refused")
    lesson = await first_lesson(connection)
    started, finished = times()
    good = right_answers(lesson)
    before = await connection.fetchval(WRITTEN)
    async with database(seeded_db, migrate="check", global_fallback=False):
        cases = [
            (InvalidRequest, (user, lesson["id"], [Answer("no.such.exercise", "x", 1, False)], started, finished, "a")),
            (InvalidRequest, (user, lesson["id"], good + good[:1], started, finished, "b")),  # answered again after right
            (InvalidRequest, (user, lesson["id"], good, finished, started, "c")),  # finished before it started
            (InvalidRequest, (user, lesson["id"], good, started - timedelta(days=1), finished, "d")),  # too late
            (InvalidRequest, (user, lesson["id"], good, started.replace(tzinfo=None), finished, "e")),
            (NotFound, (user, uuid4(), good, started, finished, "f")),
            (NotFound, (uuid4(), lesson["id"], good, started, finished, "g")),
            (InvalidRequest, (user, lesson["id"], right_answers(lesson, ms=0), started, finished, "h")),  # 0 ms: no play
        ]
        for error, args in cases:
            with pytest.raises(error):
                await lessons.complete_lesson(*args)
    assert await connection.fetchval(WRITTEN) == before


async def test_sixteen_completions_of_one_user_at_once_add_up_exactly(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_learner(connection, "busy_learner")
    lesson = await first_lesson(connection)
    started, finished = times()
    async with database(pooled(seeded_db), migrate="check", global_fallback=False):
        results = await asyncio.gather(*(
            lessons.complete_lesson(user, lesson["id"], right_answers(lesson), started, finished, f"device-{n}") for n in range(16)
        ))
    xp = sum(r.xp_earned for r in results)
    # serialised on the wallet: one first pass, one practice of the day, fourteen repeats that earn nothing
    first_xp = rules.lesson_xp(lesson["xp_reward"], True, True, False)
    assert sorted(r.xp_earned for r in results) == [0] * 14 + [rules.PRACTICE_XP, first_xp]
    achievement_xp = await connection.fetchval(
        "SELECT coalesce(sum(a.xp_reward), 0) FROM user_achievements ua JOIN achievements a ON a.id = ua.achievement_id "
        "WHERE ua.user_id = $1 AND ua.unlocked_at IS NOT NULL", user)
    assert await connection.fetchval("SELECT total_xp FROM users WHERE id = $1", user) == xp + achievement_xp == max(r.total_xp for r in results)
    assert await connection.fetchval("SELECT xp_earned FROM leaderboard_entries WHERE user_id = $1", user) == xp
    assert await connection.fetchval("SELECT attempts FROM user_progress WHERE user_id = $1", user) == 16
    unlocked = [slug for r in results for slug in r.achievements_unlocked]
    assert len(unlocked) == len(set(unlocked))  # each achievement unlocked (and paid) by exactly one completion
    goal = await connection.fetchval("SELECT count(*) FROM wallet_transactions WHERE user_id = $1 AND source = 'daily_goal'", user)
    assert goal == 1
    assert await connection.fetchval("SELECT count(*) FROM user_vocab_knowledge WHERE user_id = $1", user) == await connection.fetchval(
        "SELECT count(*) FROM vocabulary_items WHERE lesson_id = $1", lesson["id"])  # taught once
    await assert_consistent(connection)


async def test_one_key_sent_twenty_times_at_once_records_one_attempt(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_learner(connection, "impatient")
    lesson = await first_lesson(connection)
    started, finished = times()
    async with database(pooled(seeded_db), migrate="check", global_fallback=False):
        results = await asyncio.gather(*(
            lessons.complete_lesson(user, lesson["id"], right_answers(lesson), started, finished, "tap-tap-tap") for _ in range(20)
        ))
    assert await connection.fetchval("SELECT count(*) FROM lesson_attempts WHERE user_id = $1", user) == 1
    assert len({(r.attempt_id, r.total_xp, r.gems, r.achievements_unlocked) for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    await assert_consistent(connection)


async def test_round_trips_do_not_grow_with_the_number_of_questions(seeded_db, connect):
    """A lesson of 20 exercises costs the round trips of one of 2: the question attempts are one statement."""
    connection = await connect(seeded_db)
    lesson = await first_lesson(connection)
    sizes = {}
    for size in (2, 20):
        exercises = [{"id": f"big.{size}.{n}", "type": "translation", "answer": f"answer {n}"} for n in range(size)]
        lesson_id = await connection.fetchval(
            "INSERT INTO lessons (title, order_index, content, course_id, unit_id) VALUES ($1, 900 + $2, $3::jsonb, $4, NULL) RETURNING id",
            f"{size} exercises", size, json.dumps({"exercises": exercises}), lesson["course_id"])
        sizes[size] = (lesson_id, [Answer(e["id"], e["answer"], 3000, False) for e in exercises])
    await connection.execute("UPDATE courses c SET total_lessons = (SELECT count(*) FROM lessons l WHERE l.course_id = c.id)")
    counted = {}
    async with database(f"{seeded_db}{'&' if '?' in seeded_db else '?'}minsize=1&maxsize=1", migrate="check", global_fallback=False):
        client = Tortoise.get_connection("default")
        await client.execute_query("SELECT 1")  # the pool is made on first use
        async with client._pool.acquire() as raw:  # its one connection: every statement of the operation goes through it
            sent: list[str] = []
            raw.add_query_logger(lambda record: sent.append(record.query))
        for size, (lesson_id, answers) in sizes.items():
            user = await new_learner(connection, f"counted_{size}")
            started, finished = times()
            await lessons.complete_lesson(user, lesson_id, answers, started, finished, "warm")  # the user's first ledger use
            sent.clear()
            await lessons.complete_lesson(user, lesson_id, answers, started, finished, "counted")
            counted[size] = len(sent)
            sent.clear()
            await lessons.complete_lesson(user, lesson_id, answers, started, finished, "counted")
            counted[f"replay {size}"] = len(sent)
    assert "pg_advisory_unlock_all" in sent[-1], sent[-1]
    # + 1: the pool resets the connection when the operation hands it back (asyncpg's reset query)
    assert counted == {2: 7 + 1, 20: 7 + 1, "replay 2": 3 + 1, "replay 20": 3 + 1}, (counted, sent)


# --- what earns (issue 21, finding 4) ----------------------------------------------------------------

async def weekly_xp(connection, user: UUID) -> int:
    return await connection.fetchval("SELECT coalesce(sum(xp_earned), 0) FROM leaderboard_entries WHERE user_id = $1", user)


async def test_fifteen_replays_of_a_passed_lesson_no_longer_reach_bronzes_promotion_line(seeded_db, connect):
    """15 replays in 0.1 s gave 225 weekly XP (bronze promotes at 150): now 0-ms plays are refused, and plausible
    replays are practice, rewarded once a day."""
    connection = await connect(seeded_db)
    user = await new_learner(connection, "replayer")
    lesson = await first_lesson(connection)
    started, finished = times()
    async with database(seeded_db, migrate="check", global_fallback=False):
        first = await lessons.complete_lesson(user, lesson["id"], right_answers(lesson), started, finished, "first")
        for n in range(15):
            with pytest.raises(InvalidRequest, match="time_spent_ms"):
                await lessons.complete_lesson(user, lesson["id"], right_answers(lesson, ms=0), started, finished, f"instant-{n}")
        assert await weekly_xp(connection, user) == first.xp_earned
        replays = [await lessons.complete_lesson(user, lesson["id"], right_answers(lesson), started, finished, f"replay-{n}") for n in range(15)]
    assert [r.xp_earned for r in replays] == [rules.PRACTICE_XP] + [0] * 14
    assert all(r.passed for r in replays) and not any(r.achievements_unlocked for r in replays)
    weekly = await weekly_xp(connection, user)
    assert weekly == first.xp_earned + rules.PRACTICE_XP < rules.PROMOTE_AT["bronze"]
    lesson_complete = await connection.fetchval(
        "SELECT count(*) FROM user_achievements ua JOIN achievements a ON a.id = ua.achievement_id "
        "WHERE ua.user_id = $1 AND a.condition_type = 'lesson_complete' AND ua.unlocked_at IS NOT NULL AND a.condition_value > 1", user)
    assert lesson_complete == 0  # replays are not lessons passed
    print(f"weekly XP after a first pass and 15 replays: {weekly} (bronze promotes at {rules.PROMOTE_AT['bronze']})")
    await assert_consistent(connection)


async def test_a_lesson_needs_its_prerequisite_and_a_published_course(seeded_db, connect):
    """A new account passed a course's last lesson first."""
    connection = await connect(seeded_db)
    user = await new_learner(connection, "skipper")
    first = await first_lesson(connection)
    last = await last_lesson(connection, first["course_id"])
    started, finished = times()
    count = "SELECT (SELECT count(*) FROM lesson_attempts WHERE user_id = $1) + (SELECT count(*) FROM leaderboard_entries WHERE user_id = $1)"
    async with database(seeded_db, migrate="check", global_fallback=False):
        with pytest.raises(LessonLocked, match="first: it is this lesson's prerequisite"):
            await lessons.complete_lesson(user, last["id"], right_answers(last), started, finished, "skip")
        assert await connection.fetchval(count, user) == 0
        chain = await connection.fetch("SELECT id, content FROM lessons WHERE course_id = $1 ORDER BY order_index", first["course_id"])
        for position, row in enumerate(chain):
            lesson = {"exercises": json.loads(row["content"])["exercises"]}
            result = await lessons.complete_lesson(user, row["id"], right_answers(lesson), started, finished, f"chain-{position}")
            assert result.passed
        await connection.execute("UPDATE courses SET is_published = false WHERE id = $1", first["course_id"])
        with pytest.raises(NotFound):
            await lessons.complete_lesson(user, first["id"], right_answers(first), started, finished, "unpublished")
    feed = await connection.fetch("SELECT activity_type FROM activity_feeds WHERE user_id = $1 AND activity_type = 'course_completed'", user)
    assert len(feed) == 1
    await connection.execute("UPDATE courses SET is_published = true WHERE id = $1", first["course_id"])
    await assert_consistent(connection)


async def test_a_client_cannot_date_its_attempt_into_an_expired_boost_or_an_earlier_day(seeded_db, connect):
    """A client's started_at could be 2 h old: it chose its day, its week and a Double XP window already expired."""
    connection = await connect(seeded_db)
    user, honest = await new_learner(connection, "backdater"), await new_learner(connection, "honest")
    lesson = await first_lesson(connection)
    now = datetime.now(timezone.utc)
    boost = await connection.fetchval("SELECT id FROM shop_items WHERE item_type = 'double_xp' LIMIT 1")
    for learner, activated in ((user, now - timedelta(hours=2)), (honest, now - timedelta(minutes=4))):
        await connection.execute(
            "INSERT INTO user_inventory (user_id, shop_item_id, quantity, is_active, activated_at, expires_at) VALUES ($1, $2, 0, true, $3, $4)",
            learner, boost, activated, activated + timedelta(minutes=15))
    answers = right_answers(lesson)  # 15 s of answers
    claimed = now - timedelta(hours=2) + timedelta(minutes=1)  # inside the boost's window, an hour and three quarters ago
    async with database(seeded_db, migrate="check", global_fallback=False):
        backdated = await lessons.complete_lesson(user, lesson["id"], answers, claimed, claimed + timedelta(minutes=2), "backdated")
        played = await lessons.complete_lesson(honest, lesson["id"], answers, now - timedelta(minutes=3), now - timedelta(seconds=5), "now")
    plain = rules.lesson_xp(lesson["xp_reward"], True, True, False)
    assert (backdated.xp_earned, played.xp_earned) == (plain, 2 * plain)  # only the boost active now doubles
    started = await connection.fetchval("SELECT started_at FROM lesson_attempts WHERE id = $1", backdated.attempt_id)
    assert started >= now - timedelta(seconds=15) - rules.ATTEMPT_GRACE  # clamped to what the play's length allows
    await assert_consistent(connection)


async def test_a_word_is_reviewed_once_its_lesson_is_passed_and_quick_reviews_do_not_master_it(seeded_db, connect):
    """`POST /me/reviews` took any word at any time: four quality-5 reviews in 40 ms made a word "mastered"."""
    connection = await connect(seeded_db)
    user = await new_learner(connection, "crammer")
    lesson = await first_lesson(connection)
    word = await connection.fetchval("SELECT id FROM vocabulary_items WHERE lesson_id = $1 ORDER BY id LIMIT 1", lesson["id"])
    started, finished = times()
    async with database(seeded_db, migrate="check", global_fallback=False):
        with pytest.raises(NotFound, match="not among the learner's words"):
            await reviews.review_word(user, word, 5)
        await lessons.complete_lesson(user, lesson["id"], right_answers(lesson), started, finished, "teach")
        results = [await reviews.review_word(user, word, 5) for _ in range(4)]
    assert [r.mastery_level for r in results] == ["learning", "reviewing", "reviewing", "reviewing"]
    assert len({(r.interval_days, r.next_review_date) for r in results}) == 1  # the early ones left the schedule as it was
    row = await connection.fetchrow("SELECT review_count, interval_days, consecutive_correct FROM user_vocab_knowledge WHERE user_id = $1 AND vocab_id = $2",
                                    user, word)
    assert tuple(row) == (4, 1, 1)
    mastered = await connection.fetchval(
        "SELECT count(*) FROM user_achievements ua JOIN achievements a ON a.id = ua.achievement_id "
        "WHERE ua.user_id = $1 AND a.condition_type = 'vocab_mastered' AND ua.unlocked_at IS NOT NULL", user)
    assert mastered == 0
    print(f"after 4 quick quality-5 reviews: {results[-1].mastery_level}, interval {results[-1].interval_days} day(s)")
    await assert_consistent(connection)
