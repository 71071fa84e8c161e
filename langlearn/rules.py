"""The rule book: the numbers and pure functions of the game, shared by the seed's simulation and the live operations.

Everything here is pure (no I/O, no clock, no randomness), so the seed, which draws the learners'
choices at random, and the live operations, which take them from requests, score them alike:

- lessons: `is_correct_answer`, `grade_lesson` (hearts: `LESSON_LIVES`), `lesson_score`, `lesson_passes`, `is_perfect`,
  `play_kind` and `lesson_xp` (a first pass earns, a replay earns `PRACTICE_XP` once a day); what a play must look like:
  `MIN_ANSWER_MS` (`too_fast`); when it counts: `attempt_times` (the client's times clamped to the server's clock:
  `plausible_play`, `ATTEMPT_GRACE`), `ATTEMPT_MAX_AGE`;
- the day: `activity_day`, `daily_goal_reached` and its `DAILY_GOAL_GEMS`; `WELCOME_GEMS`, `HEART_REFILL_GEMS`;
- streaks: `StreakState`, `next_streak_day`, `streak_on_activity` (freezes: `MAX_FREEZES`), `is_streak_milestone`;
- achievements: `METRICS` (what `condition_type` counts), `achievement_unlocked`, `achievement_progress`,
  `achievements_reached`, `total_xp`;
- leagues: `LEAGUES`, `PROMOTE_AT`, `DEMOTE_BELOW`, `week_start`, `week_end`, `week_closes_at`, `close_week`, `promotion_gems`,
  `ranks`;
- spaced repetition (SM-2, through `supermemo2`): `MemoryState`, `review` (`schedule`), `is_mastered` (`mastered`),
  `mastery_level` (`mastery`), `memory_strength` (`strength`), `recalled`, `is_early`; intervals capped at
  `MAX_INTERVAL_DAYS`; the plain-number forms serve the seed.

What earns (the game pays for learning, not for volume):
- A lesson's first pass earns its `xp_reward` (plus `PERFECT_BONUS_XP`), doubled under a boost. A replay of a lesson
  already completed is practice, as Duolingo's practice is: its first pass in a UTC day earns `PRACTICE_XP`, later
  passes of it that day earn nothing. So fifteen replays of one lesson earn one practice reward, not fifteen lessons'
  XP (bronze's promotion line is 150 weekly XP). A replay pays no gems of its own and moves no lesson achievement
  (`lesson_complete` and `perfect_score` count distinct lessons); it still keeps the streak and the day's goal, which
  reward the day (paid once a day), not the lesson.
- A play is refused (nothing written) when its answers took less than `MIN_ANSWER_MS` each on average: no one reads and
  answers an exercise faster. An average, not a per-answer floor: one quick tap is plausible, a lesson of them is not.
- The client's times are claims: `attempt_times` clamps the start to no earlier than the server's receipt minus the
  answers' own time (each counted up to `MAX_COUNTED_ANSWER_MS`) and `ATTEMPT_GRACE`. The attempt's day and week, the
  streak and a Double XP Boost (active when the clamped start falls in its window) follow the clamped start: a
  client cannot date a lesson into a boost that expired, or into yesterday, beyond what its play's length allows.
  A completion more than `ATTEMPT_MAX_AGE` after its claimed start is refused; `week_closes_at` waits that long.
- A word is reviewed only once a lesson teaching it was passed (the operations refuse others). A review before the
  word is due (`is_early`) does not advance SM-2, as in Anki and SuperMemo: a recalled early review is counted (the
  review count, the last review time, the day's session, the history) but the schedule stays; a failed one is a
  lapse all the same (the word starts over). Four perfect reviews in a row no longer master a word in a minute.
- Intervals are capped at `MAX_INTERVAL_DAYS` (Anki's maximum interval, 100 years), so no state overflows the calendar.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from enum import Enum
from functools import cache
from typing import NamedTuple
from uuid import UUID

from supermemo2 import review as sm2_review

from langlearn.models.enums import LeagueType, MasteryLevel

# --- lessons -----------------------------------------------------------------------------------
LESSON_LIVES = 5  # hearts per lesson: each wrong answer costs one, the lesson fails at zero
PERFECT_BONUS_XP = 5  # for a passed lesson with every question right the first time
DOUBLE_XP_FACTOR = 2  # while a Double XP Boost is active (the attempt started before it expired)


ATTEMPT_MAX_AGE = timedelta(hours=2)  # a completion must arrive within this of the attempt's start (weeks close after it)


def is_correct_answer(expected: str, given: str) -> bool:
    """Whether an answer is right: the exercise's answer exactly, surrounding spaces aside (case and punctuation count)."""
    return given.strip() == expected.strip()


@dataclass(frozen=True)
class GradedAnswer:
    """One answer in the order given: right or wrong, and which try at its exercise it was (1 = first)."""

    question_id: str
    correct: bool
    attempt_number: int


@dataclass(frozen=True)
class LessonGrade:
    """A played lesson: `first_correct` exercises right the first time out of `questions`; `finished` unless
    abandoned (every exercise answered right, or every heart lost); `answers` in order."""

    questions: int
    first_correct: int
    lives_left: int
    finished: bool
    answers: tuple[GradedAnswer, ...]


class ImpossibleAnswers(ValueError):
    """An answer sequence no play of the lesson produces (an unknown exercise, an answer after the last heart...)."""


def grade_lesson(exercises: Sequence[str], answers: Sequence[tuple[str, bool]]) -> LessonGrade:
    """Replay `answers` ((exercise id, right?) in order) through the lesson's rules: each wrong answer costs a heart
    and the exercise comes back; an exercise answered right is done; the lesson ends with every exercise done or
    no heart left. Raises `ImpossibleAnswers` for a sequence that breaks these rules."""
    known = set(exercises)
    tries: dict[str, int] = {}
    done: set[str] = set()
    lives, first_correct, graded = LESSON_LIVES, 0, []
    for question_id, correct in answers:
        if question_id not in known:
            raise ImpossibleAnswers(f"{question_id!r} is not an exercise of this lesson")
        if question_id in done:
            raise ImpossibleAnswers(f"{question_id!r} was answered again after it was answered right")
        if lives == 0:
            raise ImpossibleAnswers("an answer came after the last heart was lost")
        tries[question_id] = number = tries.get(question_id, 0) + 1
        graded.append(GradedAnswer(question_id, correct, number))
        if correct:
            done.add(question_id)
            first_correct += number == 1
        else:
            lives -= 1
    finished = len(done) == len(known) or lives == 0
    return LessonGrade(len(known), first_correct, lives, finished, tuple(graded))


def lesson_score(first_correct: int, questions: int, finished: bool) -> int:
    """The score of an attempt, 0-100: the share of questions answered right the first time; 0 if abandoned."""
    return round(100 * first_correct / questions) if finished else 0


def lesson_passes(score: int, pass_score: int, finished: bool, lives_left: int) -> bool:
    """Whether an attempt passes: finished with a heart left and a score of at least the lesson's `pass_score`."""
    return finished and lives_left > 0 and score >= pass_score


def is_perfect(passed: bool, first_correct: int, questions: int) -> bool:
    """A perfect lesson: passed with every question right the first time."""
    return passed and first_correct == questions


PRACTICE_XP = 5  # a passed replay of a completed lesson, the first of that lesson in a UTC day (Duolingo's practice)


class Play(Enum):
    """What a passing attempt is to the learner: a lesson's first pass, its day's practice, or a repeat that day."""

    FIRST_PASS = "first_pass"
    PRACTICE = "practice"
    REPEAT = "repeat"


def play_kind(completed_before: bool, practised_today: bool) -> Play:
    """A play of a lesson not completed before is its first pass; of a completed one, the day's practice unless a replay
    of it already passed that UTC day."""
    if not completed_before:
        return Play.FIRST_PASS
    return Play.REPEAT if practised_today else Play.PRACTICE


def lesson_xp(xp_reward: int, passed: bool, perfect: bool, boosted: bool, play: Play = Play.FIRST_PASS) -> int:
    """The XP an attempt earns if it passed: a first pass the lesson's `xp_reward` (plus the perfect bonus), the day's
    practice `PRACTICE_XP`, a repeat nothing; doubled under a boost."""
    if not passed or play is Play.REPEAT:
        return 0
    xp = PRACTICE_XP if play is Play.PRACTICE else xp_reward + (PERFECT_BONUS_XP if perfect else 0)
    return xp * DOUBLE_XP_FACTOR if boosted else xp


# --- lessons: when a play happened, and whether it is one ----------------------------------------
MIN_ANSWER_MS = 1_000  # the least average time per answer of a play; faster ones are refused
MAX_COUNTED_ANSWER_MS = 120_000  # the most one answer adds to a play's plausible length (longer is an idle app)
ATTEMPT_GRACE = timedelta(minutes=5)  # a play's length beyond its answers: the introduction, pauses, the network


def too_fast(answer_ms: Sequence[int]) -> bool:
    """Whether answers came faster than anyone reads and answers: under `MIN_ANSWER_MS` each on average."""
    return sum(answer_ms) < len(answer_ms) * MIN_ANSWER_MS


def plausible_play(answer_ms: Sequence[int]) -> timedelta:
    """How long before the server received it a play may have started: its answers' time (each counted up to
    `MAX_COUNTED_ANSWER_MS`) plus `ATTEMPT_GRACE`, never more than `ATTEMPT_MAX_AGE`."""
    answering = timedelta(milliseconds=sum(min(ms, MAX_COUNTED_ANSWER_MS) for ms in answer_ms))
    return min(ATTEMPT_MAX_AGE, answering + ATTEMPT_GRACE)


@dataclass(frozen=True)
class AttemptTimes:
    """When an attempt counts as played: the client's times, clamped to the server's clock (`clamped` if moved)."""

    started: datetime
    finished: datetime
    clamped: bool


def attempt_times(started: datetime, finished: datetime, received: datetime, answer_ms: Sequence[int]) -> AttemptTimes:
    """The client's `started`/`finished` as the server counts them, given when it `received` the completion: the start no
    earlier than `received - plausible_play(answer_ms)`; a start moved later takes the finish along (at least the
    answers' time after it, never past `received`), so the attempt still ends after it starts."""
    earliest = received - plausible_play(answer_ms)
    if started >= earliest:
        return AttemptTimes(started, finished, clamped=False)
    answered = earliest + timedelta(milliseconds=sum(answer_ms))
    return AttemptTimes(earliest, max(finished, min(answered, received)), clamped=True)


# --- the day and its gems ----------------------------------------------------------------------
WELCOME_GEMS = 50  # paid once, at signup
DAILY_GOAL_LESSONS = 1  # lessons to pass in a UTC day to reach the daily goal
DAILY_GOAL_GEMS = 10  # paid once a day, when the goal is reached
HEART_REFILL_GEMS = 30  # the price of a refill after a failed lesson


def activity_day(when: datetime) -> date:
    """The day an event counts for: days are UTC days, whatever the learner's time zone."""
    return when.astimezone(timezone.utc).date()


def daily_goal_reached(lessons_passed_today: int) -> bool:
    """Whether the daily goal is met after passing `lessons_passed_today` lessons this UTC day."""
    return lessons_passed_today >= DAILY_GOAL_LESSONS


# --- streaks -----------------------------------------------------------------------------------
MAX_FREEZES = 2  # Streak Freezes a learner may hold; the shop sells no more beyond that
STREAK_MILESTONES = (7, 14, 21, 30, 50)  # streak lengths announced in the activity feed


@dataclass(frozen=True)
class StreakState:
    """A streak at the end of a day: the `streaks` row's numbers, and the freezes held."""

    current: int = 0
    longest: int = 0
    days_active: int = 0
    last_active: date | None = None
    freezes: int = 0


def next_streak_day(state: StreakState, day: date, active: bool) -> StreakState:
    """The streak after `day`: an active day (a lesson started that UTC day) extends it; a missed day
    consumes one freeze if one is held, and otherwise breaks the streak. Missed days without a streak change nothing."""
    if active:
        current = state.current + 1
        return StreakState(current, max(state.longest, current), state.days_active + 1, day, state.freezes)
    if not state.current:
        return state
    if state.freezes:
        return StreakState(state.current, state.longest, state.days_active, state.last_active, state.freezes - 1)
    return StreakState(0, state.longest, state.days_active, state.last_active, 0)


def streak_on_activity(state: StreakState, day: date) -> StreakState:
    """The streak after activity on `day`, the days missed since `last_active` applied first (`next_streak_day`).
    Activity on the day already counted, or on an earlier day (a late completion), changes nothing."""
    last = state.last_active
    if last is not None:
        if day <= last:
            return state
        missed = (day - last).days - 1
        # after the freezes and the break, a missed day changes nothing: the loop stops there
        for offset in range(1, min(missed, state.freezes + 1) + 1):
            state = next_streak_day(state, last + timedelta(days=offset), active=False)
    return next_streak_day(state, day, active=True)


def is_streak_milestone(current: int) -> bool:
    return current in STREAK_MILESTONES


# --- achievements ------------------------------------------------------------------------------
# what an achievement's `condition_type` counts; it unlocks when the count reaches `condition_value`
METRICS = {
    "lesson_complete": "lessons passed (each lesson once: replays are practice)",
    "reach_streak": "the current streak, in days",
    "vocab_mastered": "words mastered now (see is_mastered)",
    "xp_earned": "XP from lessons (achievement rewards excluded)",
    "perfect_score": "lessons passed perfectly (each lesson once)",
    "course_complete": "courses with every lesson passed",
    "reviews_completed": "daily review sessions finished",
    "follow_count": "users followed",
}


def achievement_unlocked(condition_value: int, value: int) -> bool:
    return value >= condition_value


def achievement_progress(condition_value: int, value: int) -> int:
    """The progress shown for an achievement: the metric, capped at the condition."""
    return min(value, condition_value)


@dataclass(frozen=True)
class AchievementRule:
    """What an achievement of the catalogue asks: `condition_type` (a key of `METRICS`) reaching `condition_value`."""

    id: UUID
    condition_type: str
    condition_value: int


def achievements_reached(catalogue: Iterable[AchievementRule], metrics: Mapping[str, int]) -> list[AchievementRule]:
    """The achievements whose metric (among `metrics`) has reached their condition, lowest condition first."""
    reached = [a for a in catalogue if a.condition_type in metrics and achievement_unlocked(a.condition_value, metrics[a.condition_type])]
    return sorted(reached, key=lambda a: (a.condition_type, a.condition_value, a.id))


def total_xp(lesson_xp_earned: Iterable[int], achievement_xp_rewards: Iterable[int]) -> int:
    """`users.total_xp`: the XP of every attempt plus the `xp_reward` of every unlocked achievement."""
    return sum(lesson_xp_earned) + sum(achievement_xp_rewards)


# --- leagues -----------------------------------------------------------------------------------
LEAGUES = tuple(league.value for league in LeagueType)  # lowest first; everyone starts in the first
PROMOTE_AT = {"bronze": 150, "silver": 250, "gold": 350, "platinum": 450}  # weekly XP to move up
DEMOTE_BELOW = {"silver": 40, "gold": 80, "platinum": 120, "diamond": 160}  # weekly XP under which one moves down
PROMOTION_GEMS, PROMOTION_GEMS_PER_LEAGUE = 20, 10  # promotion reward: base plus this per league left


def week_start(day: date) -> date:
    """The Monday of `day`'s week: leaderboard weeks run Monday to Sunday, in UTC days."""
    return day - timedelta(days=day.weekday())


def week_end(day: date) -> date:
    """The Sunday of `day`'s week."""
    return week_start(day) + timedelta(days=6)


def week_closes_at(day: date) -> datetime:
    """When `day`'s week may close: `ATTEMPT_MAX_AGE` after its Sunday ends (UTC), once no completion of it can still arrive.
    Until then (Monday 00:00 to 02:00 included) the week is open."""
    return datetime.combine(week_end(day) + timedelta(days=1), time(), timezone.utc) + ATTEMPT_MAX_AGE


@dataclass(frozen=True)
class WeekOutcome:
    """How a closed week ends for a learner in `league` (the week's league); `next_league` is where they play next."""

    league: str
    promoted: bool
    demoted: bool
    next_league: str


def close_week(league: str, weekly_xp: int) -> WeekOutcome:
    """Promote at `PROMOTE_AT` weekly XP or more, demote under `DEMOTE_BELOW`, else stay (promotion wins)."""
    promoted = league in PROMOTE_AT and weekly_xp >= PROMOTE_AT[league]
    demoted = not promoted and league in DEMOTE_BELOW and weekly_xp < DEMOTE_BELOW[league]
    step = 1 if promoted else -1 if demoted else 0
    return WeekOutcome(league, promoted, demoted, LEAGUES[LEAGUES.index(league) + step])


def promotion_gems(league: str) -> int:
    """The gems paid for a promotion out of `league` (more for the higher leagues)."""
    return PROMOTION_GEMS + PROMOTION_GEMS_PER_LEAGUE * LEAGUES.index(league)


def ranks(weekly_xp: Mapping[UUID, int]) -> dict[UUID, int]:
    """Ranks 1..n within one league and week: most XP first, ties broken by the lower user id."""
    order = sorted(weekly_xp, key=lambda user: (-weekly_xp[user], user))
    return {user: position for position, user in enumerate(order, start=1)}


# --- spaced repetition (SM-2) ------------------------------------------------------------------
INITIAL_EASINESS = 2.5
RECALL_QUALITY = 3  # qualities 0-5; from this one up the word counts as remembered
MASTERED_INTERVAL_DAYS, MASTERED_REPETITIONS = 21, 3
REVIEWING_AFTER_REVIEWS = 2  # reviews before a recalled word leaves "learning"
STRENGTH_DECAY = 0.9  # memory strength left after one interval without review


@dataclass(frozen=True)
class MemoryState:
    """What the scheduler knows of one word (the `user_vocab_knowledge` columns): SM-2's state and the review times."""

    easiness: float = INITIAL_EASINESS
    interval: int = 0  # days
    repetitions: int = 0  # recalls in a row
    reviews: int = 0  # reviews in all
    last_review: datetime | None = None
    due: datetime | None = None


class Schedule(NamedTuple):
    """SM-2's state after a review: what `review` keeps of `supermemo2`'s answer."""

    easiness: float
    interval: int  # days
    repetitions: int


_SM2_CLOCK = datetime(2000, 1, 1)  # supermemo2 also dates the next review; `review` does that itself


# The longest interval SM-2 may schedule: Anki's maximum interval, 100 years. SM-2 multiplies the interval by the
# easiness at every recall, without bound: about fifteen perfect reviews in a row would otherwise take the next
# review past the calendar's end (OverflowError, and every later review of the word failing with it).
MAX_INTERVAL_DAYS = 36_500


@cache
def schedule(quality: int, easiness: float, interval: int, repetitions: int) -> Schedule:
    """SM-2 (`supermemo2`) after a review of `quality` (0-5); easiness kept to 4 decimals, the interval at most
    `MAX_INTERVAL_DAYS`. The state space is small (easiness is rounded), so answers are remembered: the seed reviews
    millions of words."""
    # an interval that would reach the cap anyway is passed as the least that still does: supermemo2 dates the next
    # review from its clock, which a capped interval times a large easiness would still take past year 9999
    reaching_the_cap = max(1, math.ceil(MAX_INTERVAL_DAYS / easiness))
    result = sm2_review(quality, easiness, min(interval, reaching_the_cap), repetitions, _SM2_CLOCK)
    return Schedule(round(result["easiness"], 4), min(result["interval"], MAX_INTERVAL_DAYS), result["repetitions"])


def is_early(state: MemoryState, when: datetime) -> bool:
    """Whether a review at `when` comes before the word is due."""
    return state.due is not None and when < state.due


def review(state: MemoryState, quality: int, when: datetime) -> MemoryState:
    """The state after a review of `quality` (0-5) at `when`, scheduled by SM-2 (`schedule`). A recalled review before the
    word is due (`is_early`) leaves the schedule as it was (Anki's and SuperMemo's rule) and is only counted; a failed
    one is a lapse, early or not."""
    if recalled(quality) and is_early(state, when):
        return MemoryState(state.easiness, state.interval, state.repetitions, state.reviews + 1, when, state.due)
    easiness, interval, repetitions = schedule(quality, state.easiness, state.interval, state.repetitions)
    return MemoryState(easiness, interval, repetitions, state.reviews + 1, when, when + timedelta(days=interval))


def recalled(quality: int) -> bool:
    return quality >= RECALL_QUALITY


def is_mastered(state: MemoryState) -> bool:
    return mastered(state.interval, state.repetitions)


def mastered(interval: int, repetitions: int) -> bool:
    """A word is mastered while its interval is at least three weeks after at least three recalls in a row."""
    return interval >= MASTERED_INTERVAL_DAYS and repetitions >= MASTERED_REPETITIONS


def mastery_level(state: MemoryState) -> str:
    return mastery(state.interval, state.repetitions, state.reviews)


def mastery(interval: int, repetitions: int, reviews: int) -> str:
    """The `mastery_level` of a word: mastered, reviewing (reviewed twice and last recalled) or learning."""
    if mastered(interval, repetitions):
        return _MASTERED
    if reviews >= REVIEWING_AFTER_REVIEWS and repetitions >= 1:
        return _REVIEWING
    return _LEARNING


# read once: an enum member's `.value` costs a property lookup, and the seed asks millions of times
_MASTERED, _REVIEWING, _LEARNING = MasteryLevel.MASTERED.value, MasteryLevel.REVIEWING.value, MasteryLevel.LEARNING.value


def memory_strength(state: MemoryState, now: datetime) -> float:
    if state.last_review is None:
        return 0.0
    return strength((now - state.last_review).total_seconds() / 86400, state.interval)


def strength(days_since_review: float, interval: int) -> float:
    """How well a word is still known (0-1, 4 decimals): it decays by `STRENGTH_DECAY` per interval since the last review."""
    remaining: float = STRENGTH_DECAY ** (days_since_review / max(1, interval))
    return round(min(1.0, remaining), 4)
