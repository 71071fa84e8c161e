"""Lesson completion's pure decision (`lessons.score_attempt`, `lessons.decide`), without a database: what a play earns
and moves, from a typed learner state, as the rule book says."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest

from langlearn import rules
from langlearn.operations.achievements import CatalogueEntry
from langlearn.operations.errors import InvalidRequest
from langlearn.operations.lessons import Answer, Arrival, Completion, Exercise, LearnerState, Lesson, decide, score_attempt

NOW = datetime(2026, 11, 20, 8, 30, tzinfo=timezone.utc)  # a Friday
COURSE, UNIT = uuid4(), uuid4()
LESSON = Lesson(uuid4(), {f"q{n}": Exercise(f"q{n}", "translation", f"answer {n}") for n in range(5)}, 10, 80, COURSE, UNIT,
                missing_prerequisite=None)
FIRST_LESSON_ACHIEVEMENT = CatalogueEntry(rules.AchievementRule(UUID(int=1), "lesson_complete", 1), "first-lesson", "First Lesson",
                                          "common", xp=10, gems=5, unlocked=False, progress=0)
NEW_LEARNER = LearnerState(
    wallet_id=uuid4(), gems=50, total_xp=0, streak=rules.StreakState(), completed_before=False, practised_today=False,
    perfected_before=False, lessons_passed=0, perfect_lessons=0, lesson_xp=0, passed_today=0, courses_completed=0, course_done=0,
    course_lessons=9, course_title="English A1", unit_done=0, unit_lessons=3, goal_paid=False, catalogue=(FIRST_LESSON_ACHIEVEMENT,),
    freeze_item=None,
)


def answers(ms: int = 3000, wrong: int = 0) -> list[Answer]:
    """Every exercise answered right, after `wrong` wrong answers to the first."""
    return [Answer("q0", "nope", ms, False)] * wrong + [Answer(e.id, e.answer, ms, False) for e in LESSON.exercises.values()]


def completion(played: list[Answer], started: datetime = NOW) -> Completion:
    times = rules.attempt_times(started, started + timedelta(minutes=2), started + timedelta(minutes=2), [a.time_spent_ms for a in played])
    return Completion(uuid4(), LESSON.id, tuple(played), times, "key", None, "digest", uuid4())


def play(learner: LearnerState, played: list[Answer] | None = None, boosted: bool = False, started: datetime = NOW):
    played = answers() if played is None else played
    return decide(completion(played, started), Arrival(LESSON, None, "bronze", False, boosted), score_attempt(LESSON, played), learner)


def test_a_first_pass_earns_the_lessons_xp_teaches_its_words_and_pays_the_day_and_the_first_achievement():
    effects = play(NEW_LEARNER)
    assert (effects.play, effects.xp, effects.first_pass) == (rules.Play.FIRST_PASS, 15, True)  # 10 + the perfect bonus
    assert effects.streak == rules.StreakState(1, 1, 1, date(2026, 11, 20), 0)
    assert [p.source for p in effects.awards.payments] == ["daily_goal", "achievement"]
    assert effects.result.total_xp == 15 + 10 and effects.result.gems == 50 + rules.DAILY_GOAL_GEMS + 5
    assert effects.result.achievements_unlocked == ("first-lesson",)


def test_a_replay_is_the_days_practice_then_a_repeat_and_moves_no_lesson_achievement():
    completed = replace(NEW_LEARNER, completed_before=True, lessons_passed=1, perfect_lessons=1, perfected_before=True,
                        passed_today=1, goal_paid=True, lesson_xp=15, total_xp=25,
                        catalogue=(replace(FIRST_LESSON_ACHIEVEMENT, rule=rules.AchievementRule(UUID(int=1), "lesson_complete", 2), progress=1),))
    practice = play(completed)
    assert (practice.play, practice.xp, practice.first_pass) == (rules.Play.PRACTICE, rules.PRACTICE_XP, False)
    assert practice.awards.payments == [] and practice.result.achievements_unlocked == ()
    assert [p.value for p in practice.awards.progress] == []  # lessons passed stays 1 (shown already): no progress towards 2
    boosted = play(completed, boosted=True)
    assert boosted.xp == 2 * rules.PRACTICE_XP
    repeat = play(replace(completed, practised_today=True), boosted=True)
    assert (repeat.play, repeat.xp, repeat.result.total_xp) == (rules.Play.REPEAT, 0, 25)


def test_the_last_lesson_of_a_unit_and_of_a_course_is_announced_once():
    last = replace(NEW_LEARNER, unit_done=2, course_done=8, lessons_passed=8)
    kinds = [event.kind for event in play(last).awards.feed]
    assert kinds.count("unit_completed") == kinds.count("course_completed") == 1
    replayed = replace(last, completed_before=True, unit_done=3, course_done=9, courses_completed=1)
    assert not {"unit_completed", "course_completed"} & {event.kind for event in play(replayed).awards.feed}


def test_a_failed_play_earns_nothing_but_keeps_the_streak():
    failed = play(NEW_LEARNER, played=[Answer("q0", "wrong", 2000, False)] * rules.LESSON_LIVES)
    assert (failed.result.passed, failed.xp, failed.first_pass, failed.awards.payments) == (False, 0, False, [])
    assert failed.streak.current == 1


def test_a_missed_day_spends_a_held_freeze():
    held = replace(NEW_LEARNER, streak=rules.StreakState(9, 9, 9, date(2026, 11, 18), 2))
    effects = play(held)
    assert (effects.streak.current, effects.streak.freezes) == (10, 1)


def test_zero_millisecond_answers_are_refused_before_anything_is_decided():
    with pytest.raises(InvalidRequest, match="time_spent_ms"):
        score_attempt(LESSON, answers(ms=0))
    assert score_attempt(LESSON, answers(ms=rules.MIN_ANSWER_MS)).passed


def test_the_day_and_the_week_are_the_clamped_starts():
    late_sunday = datetime(2026, 11, 22, 23, 59, tzinfo=timezone.utc)
    received = late_sunday + timedelta(hours=1)  # a Monday, 00:59: the client claims Sunday 23:59
    played = answers()
    times = rules.attempt_times(late_sunday, late_sunday + timedelta(minutes=1), received, [a.time_spent_ms for a in played])
    claimed = Completion(uuid4(), LESSON.id, tuple(played), times, "key", None, "digest", uuid4())
    assert (claimed.day, claimed.week) == (date(2026, 11, 23), date(2026, 11, 23))
