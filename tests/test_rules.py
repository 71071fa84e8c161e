"""The rule book (`langlearn.rules`): its pure rules case by case, and its agreement with the seed.

The agreement test replays every demo learner's recorded history (attempts, purchases, days) through
the rule book and checks that it reproduces what the seed stored: each attempt's score, pass and XP,
`users.total_xp`, the leaderboard weeks with their leagues, promotions, demotions and ranks, the
streak, the daily-goal gems, the achievements counted from lessons, and each word's SM-2 state.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from uuid import UUID

import pytest

from langlearn import rules

NOW = datetime(2026, 11, 20, 8, 30, tzinfo=timezone.utc)


# --- lessons -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("first_correct", "questions", "finished", "score"), [
    (10, 10, True, 100), (7, 10, True, 70), (2, 3, True, 67), (0, 6, True, 0), (9, 10, False, 0),
])
def test_lesson_score(first_correct, questions, finished, score):
    assert rules.lesson_score(first_correct, questions, finished) == score


@pytest.mark.parametrize(("score", "pass_score", "finished", "lives", "passes"), [
    (80, 80, True, 1, True),  # the boundary passes
    (79, 80, True, 5, False),
    (100, 80, True, 0, False),  # out of hearts
    (100, 80, False, 5, False),  # abandoned
])
def test_lesson_passes_at_the_boundary(score, pass_score, finished, lives, passes):
    assert rules.lesson_passes(score, pass_score, finished, lives) is passes


@pytest.mark.parametrize(("passed", "perfect", "boosted", "xp"), [
    (False, False, False, 0), (False, False, True, 0), (True, False, False, 10), (True, True, False, 15),
    (True, False, True, 20), (True, True, True, 30),
])
def test_lesson_xp(passed, perfect, boosted, xp):
    assert rules.lesson_xp(10, passed, perfect, boosted) == xp


def test_a_perfect_lesson_passed_with_every_first_answer_right():
    assert rules.is_perfect(True, 8, 8) and not rules.is_perfect(True, 7, 8) and not rules.is_perfect(False, 8, 8)


def test_the_daily_goal_and_utc_days():
    assert not rules.daily_goal_reached(0) and rules.daily_goal_reached(1) and rules.daily_goal_reached(3)
    late_in_hanoi = datetime(2026, 11, 20, 23, 30, tzinfo=timezone(timedelta(hours=7)))
    assert rules.activity_day(late_in_hanoi) == date(2026, 11, 20)
    assert rules.activity_day(datetime(2026, 11, 20, 1, 0, tzinfo=timezone(timedelta(hours=7)))) == date(2026, 11, 19)


# --- weeks and leagues ---------------------------------------------------------------------------
@pytest.mark.parametrize("offset", range(7))
def test_week_start_is_the_monday_of_each_weekday(offset):
    day = date(2026, 11, 16) + timedelta(days=offset)  # Monday 16 .. Sunday 22 November 2026
    assert rules.week_start(day) == date(2026, 11, 16)
    assert rules.week_end(day) == date(2026, 11, 22)


@pytest.mark.parametrize("day", [date(2027, 12, 27), date(2027, 12, 31), date(2028, 1, 2)])  # a week across a year end
def test_a_week_closes_once_its_completions_are_in_at_two_on_the_monday_after(day):
    assert rules.week_closes_at(day) == datetime(2028, 1, 3, 2, tzinfo=timezone.utc) == datetime(2028, 1, 3, tzinfo=timezone.utc) + rules.ATTEMPT_MAX_AGE


@pytest.mark.parametrize(("league", "xp", "promoted", "demoted", "next_league"), [
    ("bronze", 150, True, False, "silver"), ("bronze", 149, False, False, "bronze"), ("bronze", 0, False, False, "bronze"),
    ("silver", 250, True, False, "gold"), ("silver", 40, False, False, "silver"), ("silver", 39, False, True, "bronze"),
    ("platinum", 450, True, False, "diamond"), ("platinum", 119, False, True, "gold"),
    ("diamond", 10_000, False, False, "diamond"), ("diamond", 159, False, True, "platinum"),
])
def test_close_week_promotes_and_demotes_at_the_thresholds(league, xp, promoted, demoted, next_league):
    assert rules.close_week(league, xp) == rules.WeekOutcome(league, promoted, demoted, next_league)


def test_promotion_gems_grow_with_the_league():
    assert [rules.promotion_gems(league) for league in rules.LEAGUES[:-1]] == [20, 30, 40, 50]


def test_ranks_order_by_xp_and_break_ties_by_user_id():
    low, high, other = UUID(int=1), UUID(int=2), UUID(int=3)
    assert rules.ranks({high: 50, low: 50, other: 70}) == {other: 1, low: 2, high: 3}
    assert rules.ranks({}) == {}


# --- streaks -------------------------------------------------------------------------------------
MONDAY = date(2026, 11, 16)


@pytest.mark.parametrize(("before", "active", "after"), [
    (rules.StreakState(), True, rules.StreakState(1, 1, 1, MONDAY, 0)),  # a first day
    (rules.StreakState(3, 3, 5, MONDAY - timedelta(days=1)), True, rules.StreakState(4, 4, 6, MONDAY)),  # continues
    (rules.StreakState(2, 9, 20, MONDAY - timedelta(days=1)), True, rules.StreakState(3, 9, 21, MONDAY)),  # longest kept
    (rules.StreakState(3, 3, 5, MONDAY - timedelta(days=1)), False, rules.StreakState(0, 3, 5, MONDAY - timedelta(days=1))),  # breaks
    (rules.StreakState(3, 3, 5, MONDAY - timedelta(days=1), 2), False, rules.StreakState(3, 3, 5, MONDAY - timedelta(days=1), 1)),  # frozen
    (rules.StreakState(0, 3, 5, MONDAY - timedelta(days=2), 2), False, rules.StreakState(0, 3, 5, MONDAY - timedelta(days=2), 2)),  # nothing to save
])
def test_next_streak_day(before, active, after):
    assert rules.next_streak_day(before, MONDAY, active) == after


def test_streak_milestones():
    assert [days for days in range(60) if rules.is_streak_milestone(days)] == [7, 14, 21, 30, 50]


# --- achievements --------------------------------------------------------------------------------
def test_achievements_unlock_at_their_condition_and_show_capped_progress():
    assert not rules.achievement_unlocked(10, 9) and rules.achievement_unlocked(10, 10) and rules.achievement_unlocked(10, 11)
    assert rules.achievement_progress(10, 4) == 4 and rules.achievement_progress(10, 25) == 10
    assert rules.total_xp([10, 0, 15], [50, 100]) == 175


# --- spaced repetition ---------------------------------------------------------------------------
@pytest.mark.parametrize(("quality", "interval", "repetitions", "easiness"), [
    (0, 1, 0, 1.7), (1, 1, 0, 1.96), (2, 1, 0, 2.18), (3, 6, 2, 2.36), (4, 6, 2, 2.5), (5, 6, 2, 2.6),
])
def test_sm2_second_review_for_each_quality(quality, interval, repetitions, easiness):
    """After a first recall (interval 1), the second review schedules 6 days on a recall and resets on a lapse."""
    first = rules.review(rules.MemoryState(), 4, NOW)
    assert (first.interval, first.repetitions, first.reviews) == (1, 1, 1)
    second = rules.review(first, quality, NOW + timedelta(days=1))
    assert (second.interval, second.repetitions, second.easiness, second.reviews) == (interval, repetitions, easiness, 2)
    assert second.due == NOW + timedelta(days=1 + interval) and second.last_review == NOW + timedelta(days=1)
    assert rules.recalled(quality) is (quality >= 3)


def test_sm2_intervals_grow_by_easiness_until_mastered():
    state, intervals = rules.MemoryState(), []
    for _ in range(4):  # each review when the word is due
        state = rules.review(state, 5, state.due or NOW)
        intervals.append(state.interval)
    assert intervals == [1, 6, 17, 48]  # 6 * 2.8 and 17 * 2.9, rounded up
    assert rules.is_mastered(state) and rules.mastery_level(state) == "mastered"
    assert rules.mastery_level(rules.review(rules.MemoryState(), 5, NOW)) == "learning"  # one review only
    assert rules.mastery_level(rules.review(rules.review(rules.MemoryState(), 5, NOW), 4, NOW)) == "reviewing"
    assert rules.memory_strength(state, state.last_review) == 1.0
    assert rules.memory_strength(state, state.last_review + timedelta(days=96)) == 0.81  # two intervals: 0.9 ** 2


def test_sm2_intervals_stop_at_the_maximum_however_many_perfect_reviews_follow():
    """Without the cap, the 14th perfect review in a row overflowed the calendar (OverflowError), and so did every later one."""
    state, intervals = rules.MemoryState(), []
    for _ in range(1000):  # easiness grows by 0.1 per perfect review: 102.5 at the end; each review when due
        state = rules.review(replace(state, due=None), 5, NOW)
        intervals.append(state.interval)
    assert intervals[:4] == [1, 6, 17, 48] and intervals[-1] == rules.MAX_INTERVAL_DAYS == 36_500
    assert max(intervals) == rules.MAX_INTERVAL_DAYS and intervals.index(rules.MAX_INTERVAL_DAYS) < 15
    assert state.due == NOW + timedelta(days=36_500) and state.repetitions == 1000 and state.easiness == 102.5
    lapse = rules.review(state, 0, NOW)  # a lapse still starts over
    assert (lapse.interval, lapse.repetitions) == (1, 0)


def test_a_recalled_review_before_the_word_is_due_is_counted_but_does_not_advance_the_schedule():
    """Four quality-5 reviews in 40 ms made a word "mastered" (and paid the vocabulary achievements): SM-2 took each one."""
    state = rules.review(rules.MemoryState(due=NOW), 5, NOW)  # taught, due now: the first review counts
    for ms in (10, 20, 30):
        state = rules.review(state, 5, NOW + timedelta(milliseconds=ms))
    assert (state.interval, state.repetitions, state.reviews, state.due) == (1, 1, 4, NOW + timedelta(days=1))
    assert state.last_review == NOW + timedelta(milliseconds=30) and not rules.is_mastered(state)
    assert rules.is_early(state, NOW + timedelta(hours=23)) and not rules.is_early(state, state.due)
    on_time = rules.review(state, 5, state.due)
    assert (on_time.interval, on_time.repetitions) == (6, 2)
    lapse = rules.review(on_time, 1, on_time.due - timedelta(days=3))  # a failed early review is a lapse all the same
    assert (lapse.interval, lapse.repetitions) == (1, 0)


def test_four_perfect_reviews_master_a_word_only_over_weeks():
    state, when = rules.MemoryState(due=NOW), NOW
    for _ in range(4):
        state = rules.review(state, 5, when)
        when = state.due
    assert rules.is_mastered(state) and state.last_review - NOW == timedelta(days=1 + 6 + 17)


# --- what earns ------------------------------------------------------------------------------------
def test_a_replay_is_practice_once_a_day_and_a_repeat_earns_nothing():
    assert rules.play_kind(completed_before=False, practised_today=False) is rules.Play.FIRST_PASS
    assert rules.play_kind(completed_before=False, practised_today=True) is rules.Play.FIRST_PASS
    assert rules.play_kind(completed_before=True, practised_today=False) is rules.Play.PRACTICE
    assert rules.play_kind(completed_before=True, practised_today=True) is rules.Play.REPEAT
    assert rules.lesson_xp(20, True, True, False, rules.Play.PRACTICE) == rules.PRACTICE_XP < 20
    assert rules.lesson_xp(20, True, True, True, rules.Play.PRACTICE) == 2 * rules.PRACTICE_XP
    assert rules.lesson_xp(20, True, True, True, rules.Play.REPEAT) == 0
    assert rules.lesson_xp(20, False, False, True, rules.Play.PRACTICE) == 0


@pytest.mark.parametrize("boosted", [False, True])
def test_fifteen_replays_of_a_lesson_stay_far_from_bronzes_promotion_line(boosted):
    """15 replays gave 15 lessons' XP each time: 225 weekly XP, past bronze's 150."""
    completed, practised, weekly = False, False, 0
    for _ in range(16):  # the first pass, then 15 replays the same day
        play = rules.play_kind(completed, practised)
        weekly += rules.lesson_xp(20, True, True, boosted, play)
        completed, practised = True, practised or play is rules.Play.PRACTICE
    assert weekly == (25 + rules.PRACTICE_XP) * (2 if boosted else 1) < rules.PROMOTE_AT["bronze"] // 2


def test_answers_faster_than_anyone_reads_are_no_play():
    assert rules.too_fast([0] * 5) and rules.too_fast([1] * 15)
    assert rules.too_fast([rules.MIN_ANSWER_MS - 1] * 5)
    assert not rules.too_fast([rules.MIN_ANSWER_MS] * 5)
    assert not rules.too_fast([300, 1700])  # one quick tap among plausible answers
    assert not rules.too_fast([])  # no answer: an abandoned attempt, which earns nothing anyway


def test_an_honest_clients_times_are_kept():
    received = NOW
    started, finished = received - timedelta(minutes=3), received - timedelta(seconds=2)
    assert rules.attempt_times(started, finished, received, [20_000] * 5) == rules.AttemptTimes(started, finished, clamped=False)


def test_a_start_older_than_the_play_allows_is_clamped_to_the_servers_clock():
    """A client's started_at could be 2 h old: it picked yesterday, last week, or a Double XP window already expired."""
    received = datetime(2026, 11, 23, 0, 20, tzinfo=timezone.utc)  # a Monday, 00:20
    answers = [3_000] * 5
    times = rules.attempt_times(received - timedelta(hours=1, minutes=59), received - timedelta(hours=1, minutes=58), received, answers)
    assert times.clamped and times.started == received - timedelta(seconds=15) - rules.ATTEMPT_GRACE
    assert rules.activity_day(times.started) == date(2026, 11, 23) and rules.week_start(rules.activity_day(times.started)) == date(2026, 11, 23)
    assert times.started + timedelta(seconds=15) == times.finished <= received  # it still ends after its answers
    boost_expired = received - timedelta(minutes=30)  # a boost active 2 h before, expired 30 min before the completion
    assert times.started > boost_expired


def test_answer_times_cannot_stretch_the_play_past_the_counted_maximum_or_the_attempt_age():
    received = NOW
    stretched = rules.attempt_times(received - rules.ATTEMPT_MAX_AGE, received, received, [3_600_000] * 5)
    assert stretched.started == received - 5 * timedelta(milliseconds=rules.MAX_COUNTED_ANSWER_MS) - rules.ATTEMPT_GRACE
    assert stretched.finished == received
    many = rules.attempt_times(received - rules.ATTEMPT_MAX_AGE, received, received, [rules.MAX_COUNTED_ANSWER_MS] * 200)
    assert many.started == received - rules.ATTEMPT_MAX_AGE  # what week_closes_at waits for
    assert rules.week_closes_at(date(2026, 11, 22)) - rules.ATTEMPT_MAX_AGE == datetime(2026, 11, 23, tzinfo=timezone.utc)


# --- agreement with the seed ---------------------------------------------------------------------
@pytest.mark.clock
async def test_replaying_the_demo_seed_through_the_rule_book_reproduces_its_totals(seeded_db, connect):
    db = await connect(seeded_db)
    anchor = (await db.fetchval("SELECT max(anchor_at) FROM seed_runs")).date()
    lessons = {r["id"]: r for r in await db.fetch("SELECT id, xp_reward, pass_score, prerequisite_lesson_id FROM lessons")}
    shop = {r["name"]: r for r in await db.fetch("SELECT id, name, effects FROM shop_items")}
    boost, freeze = shop["Double XP Boost"], shop["Streak Freeze"]
    boost_time = timedelta(minutes=json.loads(boost["effects"])["duration_minutes"])
    achievements = {r["id"]: r for r in await db.fetch("SELECT id, condition_type, condition_value, xp_reward FROM achievements")}
    users = await db.fetch("SELECT id, total_xp, created_at FROM users ORDER BY id")
    assert len(users) == 36

    def by_user(rows):
        grouped = defaultdict(list)
        for row in rows:
            grouped[row["user_id"]].append(row)
        return grouped

    attempts = by_user(await db.fetch("SELECT * FROM lesson_attempts ORDER BY started_at, id"))
    ledger = by_user(await db.fetch("SELECT * FROM wallet_transactions ORDER BY created_at, id"))
    weeks = by_user(await db.fetch("SELECT * FROM leaderboard_entries ORDER BY week_start"))
    unlocked = by_user(await db.fetch("SELECT * FROM user_achievements"))
    streaks = {r["user_id"]: r for r in await db.fetch("SELECT * FROM streaks")}
    checked = defaultdict(int)

    for user in users:
        uid, history = user["id"], attempts[user["id"]]
        # purchases that stood (a refund follows its purchase): boosts give windows of double XP, freezes guard the streak
        bought = defaultdict(list)
        for row in ledger[uid]:
            if row["transaction_type"] == "purchase":
                bought[row["reference_id"]].append(row["created_at"])
            elif row["transaction_type"] == "refund":
                bought[row["reference_id"]].pop()
        boosts = bought[str(boost["id"])]

        # each attempt: score, pass, XP (a first pass, the day's practice of a completed lesson or a repeat), and
        # every lesson played once its prerequisite was passed
        completed, practised = set(), {}
        for attempt in history:
            lesson = lessons[attempt["lesson_id"]]
            finished = attempt["finished_at"] is not None
            score = rules.lesson_score(attempt["correct_answers"], attempt["total_questions"], finished)
            passed = rules.lesson_passes(score, lesson["pass_score"], finished, attempt["lives_remaining"])
            perfect = rules.is_perfect(passed, attempt["correct_answers"], attempt["total_questions"])
            boosted = any(when < attempt["started_at"] <= when + boost_time + timedelta(seconds=5) for when in boosts)
            day = rules.activity_day(attempt["started_at"])
            play = rules.play_kind(lesson["id"] in completed, practised.get(lesson["id"]) == day)
            assert lesson["prerequisite_lesson_id"] is None or lesson["prerequisite_lesson_id"] in completed, attempt
            assert (attempt["score"], attempt["passed"]) == (score, passed), attempt
            assert attempt["xp_earned"] == rules.lesson_xp(lesson["xp_reward"], passed, perfect, boosted, play), attempt
            if passed:
                completed.add(lesson["id"])
                if play is rules.Play.PRACTICE:
                    practised[lesson["id"]] = day
                checked[play.value] += 1
            checked["attempts"] += 1
            checked["boosted"] += boosted and passed

        # users.total_xp: attempts plus unlocked achievements
        rewards = [achievements[a["achievement_id"]]["xp_reward"] for a in unlocked[uid] if a["unlocked_at"] is not None]
        assert user["total_xp"] == rules.total_xp((a["xp_earned"] for a in history), rewards)

        # achievements counted from lessons: unlocked when the running count reaches the condition, at that attempt's end;
        # lessons passed and lessons passed perfectly count each lesson once
        metrics = {"lesson_complete": [], "perfect_score": [], "xp_earned": []}  # (value, when) after each passed attempt
        xp, passes, perfects = 0, set(), set()
        for attempt in history:
            if attempt["passed"]:
                xp += attempt["xp_earned"]
                passes.add(attempt["lesson_id"])
                if attempt["correct_answers"] == attempt["total_questions"]:
                    perfects.add(attempt["lesson_id"])
                for name, value in (("lesson_complete", len(passes)), ("perfect_score", len(perfects)), ("xp_earned", xp)):
                    metrics[name].append((value, attempt["finished_at"]))
        for row in unlocked[uid]:
            achievement = achievements[row["achievement_id"]]
            series = metrics.get(achievement["condition_type"])
            if series is None:
                continue
            final = series[-1][0] if series else 0
            reached = next((when for value, when in series if rules.achievement_unlocked(achievement["condition_value"], value)), None)
            assert row["unlocked_at"] == reached, (row, achievement)
            assert row["progress"] == rules.achievement_progress(achievement["condition_value"], final)
            checked["achievements"] += 1

        # the daily goal: paid on every UTC day with a passed lesson
        days_passed = defaultdict(int)
        for attempt in history:
            days_passed[rules.activity_day(attempt["started_at"])] += attempt["passed"]
        goals = {row["reference_id"]: row["amount"] for row in ledger[uid] if row["source"] == "daily_goal"}
        assert goals == {day.isoformat(): rules.DAILY_GOAL_GEMS for day, count in days_passed.items() if rules.daily_goal_reached(count)}
        assert [row["amount"] for row in ledger[uid] if row["source"] == "welcome_bonus"] == [rules.WELCOME_GEMS]
        assert all(row["amount"] == -rules.HEART_REFILL_GEMS for row in ledger[uid] if row["source"] == "hearts")

        # leaderboard weeks: XP and lessons of the attempts started that week; leagues replayed from bronze
        week_xp, week_lessons = defaultdict(int), defaultdict(int)
        for attempt in history:
            start = rules.week_start(rules.activity_day(attempt["started_at"]))
            week_xp[start] += attempt["xp_earned"]
            week_lessons[start] += attempt["passed"]
        assert [w["week_start"] for w in weeks[uid]] == sorted(week_xp)
        promotions = [row["amount"] for row in ledger[uid] if row["source"] == "league_promotion"]
        league, paid = rules.LEAGUES[0], []
        for week in weeks[uid]:
            start = week["week_start"]
            assert (week["week_end"], week["xp_earned"], week["lessons_completed"]) == (rules.week_end(start), week_xp[start], week_lessons[start])
            assert week["league"] == league
            closed = start + timedelta(days=7) < anchor  # the history reached the next Monday
            outcome = rules.close_week(league, week["xp_earned"]) if closed else rules.WeekOutcome(league, False, False, league)
            assert (week["is_promoted"], week["is_demoted"]) == (outcome.promoted, outcome.demoted), week
            if outcome.promoted:
                paid.append(rules.promotion_gems(league))
            checked["promoted"] += outcome.promoted
            checked["stayed"] += closed and outcome.next_league == league  # (the demo seed demotes nobody)
            league = outcome.next_league
        assert promotions == paid

        # the streak: day by day from signup to the anchor, freezes bought that day held before it ends
        active_days = {rules.activity_day(a["started_at"]) for a in history}
        freezes_bought = defaultdict(int)
        for when in bought[str(freeze["id"])]:
            freezes_bought[rules.activity_day(when)] += 1
        state, day = rules.StreakState(), rules.activity_day(user["created_at"])
        while day < anchor:
            state = rules.next_streak_day(replace(state, freezes=state.freezes + freezes_bought[day]), day, day in active_days)
            day += timedelta(days=1)
        stored = streaks[uid]
        assert (stored["current_streak"], stored["longest_streak"], stored["total_days_active"], stored["last_activity_date"],
                stored["freeze_count"]) == (state.current, state.longest, state.days_active, state.last_active, state.freezes)
        checked["frozen days"] += sum(freezes_bought.values()) - state.freezes

    # ranks within each week and league, over every learner
    boards = defaultdict(dict)
    stored_ranks = {}
    for week in await db.fetch("SELECT user_id, week_start, league, xp_earned, current_rank FROM leaderboard_entries"):
        boards[week["week_start"], week["league"]][week["user_id"]] = week["xp_earned"]
        stored_ranks[week["week_start"], week["league"], week["user_id"]] = week["current_rank"]
    open_week = rules.week_start(anchor - timedelta(days=1))  # the week of the history's last day closes after it
    for (start, league), board in boards.items():
        expected = rules.ranks(board) if start < open_week else dict.fromkeys(board)  # an open week is ranked when it closes
        assert {user: stored_ranks[start, league, user] for user in board} == expected
    assert any(start == open_week for start, _ in boards)

    # every recorded attempt's answers, graded by the rule book, give its stored hearts, first-try answers and score
    exercises: dict = {}
    for lesson in await db.fetch("SELECT id, content FROM lessons"):
        exercises[lesson["id"]] = [e["id"] for e in json.loads(lesson["content"])["exercises"]]
    answers, answer_ms = defaultdict(list), defaultdict(list)
    for row in await db.fetch("SELECT lesson_attempt_id, question_id, is_correct, time_spent_ms FROM question_attempts "
                              "ORDER BY lesson_attempt_id, created_at, attempt_number"):
        answers[row["lesson_attempt_id"]].append((row["question_id"], row["is_correct"]))
        answer_ms[row["lesson_attempt_id"]].append(row["time_spent_ms"])
    for attempt in await db.fetch("SELECT id, lesson_id, score, correct_answers, lives_remaining, finished_at FROM lesson_attempts"):
        grade = rules.grade_lesson(exercises[attempt["lesson_id"]], answers[attempt["id"]])
        finished = attempt["finished_at"] is not None
        assert (grade.first_correct, grade.lives_left) == (attempt["correct_answers"], attempt["lives_remaining"])
        assert grade.finished or not finished  # an abandoned attempt stops before the end
        assert rules.lesson_score(grade.first_correct, grade.questions, finished) == attempt["score"]
        assert not rules.too_fast(answer_ms[attempt["id"]]), attempt  # every play took a plausible time
        checked["attempts graded"] += 1

    # SM-2: each word's recorded reviews replayed give its stored state; a word is reviewed only once a lesson teaching it
    # was passed, and never before it is due (the seed reviews what is due)
    taught = {(r["user_id"], r["vocab_id"]): r["taught"] for r in await db.fetch(
        "SELECT a.user_id, v.id AS vocab_id, min(a.finished_at) AS taught FROM lesson_attempts a "
        "JOIN vocabulary_items v ON v.lesson_id = a.lesson_id WHERE a.passed GROUP BY 1, 2")}
    for word in await db.fetch("SELECT * FROM user_vocab_knowledge"):
        state = rules.MemoryState()
        for entry in json.loads(word["review_history"]):
            at = datetime.fromisoformat(entry["at"])
            assert not rules.is_early(state, at) and at >= taught[word["user_id"], word["vocab_id"]].replace(microsecond=0), word
            state = rules.review(state, entry["quality"], at)
            assert state.interval == entry["interval"]
        state = replace(state, last_review=word["last_review_date"], due=word["last_review_date"] + timedelta(days=state.interval))
        # ease_factor and strength are stored as `real`: compare at the 4 decimals the rules keep
        assert (round(word["ease_factor"], 4), word["interval_days"], word["consecutive_correct"], word["review_count"], word["next_review_date"],
                word["mastery_level"]) == (state.easiness, state.interval, state.repetitions, state.reviews, state.due, rules.mastery_level(state))
        assert round(word["strength"], 4) == rules.memory_strength(state, datetime.combine(anchor, datetime.min.time(), timezone.utc))
        checked["words"] += 1

    # the replay exercised every rule, not only the trivial cases
    assert all(checked[name] > 0 for name in ("attempts", "attempts graded", "boosted", "achievements", "promoted", "stayed", "frozen days", "words",
                                              "first_pass", "practice", "repeat")), checked
