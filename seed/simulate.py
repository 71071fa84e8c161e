"""Users and their history, simulated day by day so that every derived number agrees with its source.

Each user lives through the eight weeks before the anchor: signs up, opens sessions on devices,
plays lessons (question by question), reviews vocabulary with SM-2, keeps or loses a streak, earns
and spends gems, buys from the shop, unlocks achievements and climbs leagues. Every stored total is
computed from those events as they happen: XP from attempts, `users.total_xp` from attempts plus
unlocked achievements, leaderboard XP from the attempts started in each Monday-Sunday week, the
wallet from its ledger, the inventory from purchases less what was used, the streak from active
days. Ranks need every user of a league and week at once, so `seed.run` sets them in SQL at the end.

Users are generated in batches of `BATCH_USERS`; a user's data depends only on the seed and the
user's index (and follows only on its batch), so any batch can be regenerated alone, which is what
makes a killed run resumable. Nothing lies after the anchor except what is future by nature
(token expiry, the next review due date).

The game's rules (XP, passing, streaks and freezes, the daily goal, achievements, leagues, SM-2) come
from `langlearn.rules`, shared with the live operations; only the learners' random choices live here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import random
import secrets
from bisect import insort
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from functools import cached_property
from typing import TypedDict
from uuid import UUID

from langlearn import rules
from langlearn.errors import ContentDataError
from langlearn.seed.content import (
    AchievementInfo,
    Content,
    CourseInfo,
    LessonInfo,
    Row,
    ShopItemInfo,
    data_file,
    dumps,
    new_uuid,
    uuid4_from,
)
from langlearn.seed.tables import USER_TABLES

HISTORY_DAYS = 56  # eight weeks
BATCH_USERS = 100
DAY = timedelta(days=1)
LEVELS = ("A1", "A2", "B1", "B2", "C1", "C2")
COURSES = ("en-a1", "en-a2", "es-a1")  # what Vietnamese speakers enrol in
NEXT_COURSE = {"en-a1": "en-a2"}
TOKEN_LIFETIME = timedelta(days=30)
TOKEN_ROTATION = timedelta(days=14)
BASE_SECONDS = {"multiple_choice": 6.0, "fill_blank": 8.0, "matching": 14.0, "translation": 20.0, "listening": 15.0}
EASE = {"easy": 0.06, "medium": 0.0, "hard": -0.1}
# UTC hours learners in Vietnam (UTC+7) open the app: before work, lunch, evening
SESSION_HOURS = (0.5, 5.0, 11.5, 12.5, 13.5, 14.5)
SHOP_ITEMS_USED = ("Streak Freeze", "Double XP Boost", "Hint Pack", "Golden Avatar Frame", "Lotus Avatar Frame")


@dataclass(frozen=True)
class Persona:
    name: str
    share: float
    active: float  # chance of practising on a given day
    lessons: tuple[int, int]
    skill: tuple[float, float]
    reviews: int  # words per daily review
    shopping: float


PERSONAS = (
    Persona("dedicated", 0.15, 0.93, (2, 5), (0.86, 0.96), 20, 0.5),
    Persona("regular", 0.40, 0.70, (1, 3), (0.78, 0.92), 15, 0.35),
    Persona("casual", 0.30, 0.35, (1, 2), (0.70, 0.88), 10, 0.2),
    Persona("churned", 0.15, 0.65, (1, 3), (0.70, 0.90), 12, 0.25),
)
PERSONA_BY_NAME = {p.name: p for p in PERSONAS}


@dataclass
class RunContext:
    """What every batch of one run shares: the catalogue, the anchor and how secrets are made."""

    seed: int
    users: int
    anchor: datetime
    content: Content
    password_for: Callable[[int], str]
    demo_accounts: int  # leading users that are the documented demo accounts
    unpredictable: bool  # secrets from the OS instead of the seed (forced runs)
    boost_minutes: int = field(init=False)  # how long a Double XP Boost lasts

    def __post_init__(self) -> None:
        """Refuse data files the simulation cannot use before anything is written."""
        self.boost_minutes = check_content(self.content)

    @property
    def batches(self) -> int:
        return math.ceil(self.users / BATCH_USERS)

    @property
    def first_day(self) -> date:
        return self.anchor.date() - timedelta(days=HISTORY_DAYS)

    @cached_property
    def achievements_by_type(self) -> dict[str, tuple[AchievementInfo, ...]]:
        """Achievements per condition, lowest threshold first."""
        grouped: dict[str, tuple[AchievementInfo, ...]] = {}
        for achievement in sorted(self.content.achievements, key=lambda a: a.condition_value):
            grouped[achievement.condition_type] = grouped.get(achievement.condition_type, ()) + (achievement,)
        return grouped


def user_uuid(seed: int, index: int) -> UUID:
    """A user's id, derived from the seed and the user's index alone."""
    return uuid4_from(hashlib.blake2b(f"{seed}:user:{index}".encode(), digest_size=16).digest())


def at(day: date, hours: float) -> datetime:
    """The instant `hours` after midnight UTC of `day`, to the millisecond."""
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(milliseconds=round(hours * 3_600_000))


def check_content(content: Content) -> int:
    """Raise ContentDataError (naming the file and the field) for data the simulation cannot use: a course,
    shop item, persona or achievement metric it does not know. Return the minutes a Double XP Boost lasts."""
    for key in (*COURSES, *NEXT_COURSE.values()):
        course = content.courses.get(key)
        if course is None or not course.lessons:
            problem = "is missing" if course is None else "has no lessons"
            raise ContentDataError(f"{data_file('courses', key + '.json')}: the course with key {key!r} {problem}; users enrol in it")
    for number, account in enumerate(content.demo["accounts"], start=1):
        where = f"{data_file('demo_accounts.json')}: account {number}"
        if account["persona"] not in PERSONA_BY_NAME:
            raise ContentDataError(f"{where}: field 'persona' is {account['persona']!r}; expected one of {', '.join(PERSONA_BY_NAME)}")
        if account["course"] not in content.courses:
            raise ContentDataError(f"{where}: field 'course' is {account['course']!r}, the key of no course file")
    for achievement in content.achievements:
        if achievement.condition_type not in rules.METRICS:
            raise ContentDataError(f"{data_file('achievements.csv')}: achievement {achievement.slug!r}: field 'condition_type' is "
                                   f"{achievement.condition_type!r}; expected one of {', '.join(rules.METRICS)}")
    for name in SHOP_ITEMS_USED:
        if name not in content.shop:
            raise ContentDataError(f"{data_file('shop.json')}: no item has the name {name!r}; users buy it")
    minutes = content.shop["Double XP Boost"].effects.get("duration_minutes")
    if not isinstance(minutes, int) or isinstance(minutes, bool):
        raise ContentDataError(f"{data_file('shop.json')}: item 'Double XP Boost': field 'effects.duration_minutes' "
                               f"must be a whole number, not {minutes!r}")
    return minutes


@dataclass
class Profile:
    """Who a user is, drawn before the history so that batch-mates can follow each other."""

    index: int
    id: UUID
    rng: random.Random
    persona: Persona
    signup: datetime
    course: str
    native: str
    names: tuple[str, str]  # display name, username
    email: str


@dataclass
class Knowledge:
    id: UUID
    vocab_id: UUID
    created_at: datetime
    memory: rules.MemoryState = field(default_factory=rules.MemoryState)
    history: list[ReviewEntry] = field(default_factory=list)


class ReviewEntry(TypedDict):
    at: str
    quality: int
    interval: int


class Holding(TypedDict):
    """How many of one shop item a user holds, and whether one is active."""

    item: ShopItemInfo
    quantity: int
    active: bool
    activated: datetime | None
    expires: datetime | None
    first: datetime | None  # the first purchase


@dataclass
class Progress:
    """A user's progress on one lesson."""

    lesson: LessonInfo
    status: str
    score: int
    completed: datetime | None
    seconds: int
    attempts: int
    first: datetime
    last: datetime


@dataclass
class Week:
    """A user's week on the leaderboard, from Monday."""

    xp: int
    lessons: int
    first: datetime
    last: datetime
    outcome: rules.WeekOutcome | None = None  # set when the week is closed


Device = tuple[int, str, str]  # index, device type, name
Follow = tuple[UUID, datetime]  # whom, when


@dataclass
class Batch:
    """The rows of one batch of users, per table, in `USER_TABLES` column order."""

    index: int
    rows: dict[str, list[Row]]

    @property
    def counts(self) -> dict[str, int]:
        return {table: len(rows) for table, rows in self.rows.items()}


def _profile(ctx: RunContext, index: int) -> Profile:
    rng = random.Random(f"{ctx.seed}:history:{index}")
    people = ctx.content.people
    first = ctx.first_day
    if index < ctx.demo_accounts:
        account = ctx.content.demo["accounts"][index]
        persona = PERSONA_BY_NAME[account["persona"]]
        signup = at(first, 1.0 + index)
        return Profile(index, user_uuid(ctx.seed, index), rng, persona, signup, account["course"], "vi",
                       (account["display_name"], account["username"]), account["email"])
    roll, persona = rng.random(), PERSONAS[-1]
    for candidate in PERSONAS:
        roll -= candidate.share
        if roll < 0:
            persona = candidate
            break
    # more early adopters than late joiners; everyone joined inside the history window
    offset_days = int(HISTORY_DAYS * rng.random() ** 1.7)
    signup = at(first + timedelta(days=offset_days), rng.uniform(0.0, 15.0))
    if rng.random() < 0.06:
        native, names = "en", people["en"]
        family, given = rng.choice(names["family"]), rng.choice(names["given"])
        display, slug = f"{given[0]} {family[0]}", f"{given[1]}.{family[1]}{index}"
        course = "es-a1"
    else:
        native, names = "vi", people["vi"]
        family, given = rng.choice(names["family"]), rng.choice(names["given"])
        display = f"{family[0]} {rng.choice(names['middle'])} {given[0]}"
        slug = f"{given[1]}.{family[1]}{index}"
        course = rng.choices(COURSES, weights=(0.55, 0.25, 0.20))[0]
    email = f"{slug}@{rng.choice(people['email_domains'])}".lower()
    return Profile(index, user_uuid(ctx.seed, index), rng, persona, signup, course, native, (display, slug), email)


class UserHistory:
    """One user's eight weeks, accumulated into rows as events happen in time order."""

    def __init__(self, ctx: RunContext, profile: Profile, follows: list[Follow], rows: dict[str, list[Row]]) -> None:
        self.ctx, self.p, self.rng, self.rows = ctx, profile, profile.rng, rows
        self.content = ctx.content
        self.uid = profile.id
        self.anchor = ctx.anchor
        self.follows = follows
        self.skill = self.rng.uniform(*profile.persona.skill)
        self.hour = self.rng.choice(SESSION_HOURS)
        self.course: CourseInfo = self.content.courses[profile.course]
        self.level = self.course.level
        self.passed: dict[str, set[int]] = {}
        self.completed_courses: set[str] = set()
        self.xp = 0
        self.bonus_xp = 0
        self.metrics = dict.fromkeys(rules.METRICS, 0)
        self.unlocked: dict[UUID, datetime] = {}
        self.streak = rules.StreakState()
        self.streak_touched = profile.signup
        self.gems = self.earned = self.spent = 0
        self.ledger_seq = 0
        self.last_ledger: datetime | None = None
        self.wallet_id = new_uuid(self.rng)
        self.inventory: dict[UUID, Holding] = {}
        self.knowledge: dict[UUID, Knowledge] = {}
        self.mastered = 0  # words mastered now (rules.is_mastered), kept as reviews change them
        self.due: list[tuple[datetime, int, UUID]] = []  # (due, order, vocab) kept sorted
        self.progress: dict[UUID, Progress] = {}
        self.weeks: dict[date, Week] = {}  # by week_start
        self.league = "bronze"
        self.boost_until: datetime | None = None
        self.sessions: list[tuple[datetime, int]] = []  # (start, device index)
        self.last_event = profile.signup
        self.churn_day = (
            self.rng.randint(7, HISTORY_DAYS - 7) if profile.persona.name == "churned" else None
        )

    # --- bookkeeping -------------------------------------------------------------------------
    def _id(self) -> UUID:
        return new_uuid(self.rng)

    def _touch(self, when: datetime) -> None:
        if when > self.last_event:
            self.last_event = when

    def _feed(self, kind: str, when: datetime, message: str, data: dict[str, object]) -> None:
        public = self.rng.random() < 0.9
        self.rows["activity_feeds"].append((self._id(), self.uid, kind, dumps(data), message, public, when))

    def _ledger(self, kind: str, amount: int, when: datetime, source: str, reference: UUID | str | None, description: str) -> datetime:
        if self.last_ledger is not None and when <= self.last_ledger:
            when = self.last_ledger + timedelta(milliseconds=1)  # balance_after needs a strict time order
        self.last_ledger = when
        self.gems += amount
        if amount > 0:
            self.earned += amount
        else:
            self.spent -= amount
        self.ledger_seq += 1
        self.rows["wallet_transactions"].append((
            self._id(), self.wallet_id, self.uid, kind, amount, self.gems, source,
            None if reference is None else str(reference), f"{source}:{self.ledger_seq}", description, when,
        ))
        self._touch(when)
        return when

    def _metric(self, name: str, value: int, when: datetime) -> None:
        if value <= self.metrics[name]:
            return
        self.metrics[name] = value
        for achievement in self.ctx.achievements_by_type.get(name, ()):
            if rules.achievement_unlocked(achievement.condition_value, value) and achievement.id not in self.unlocked:
                self._unlock(achievement, when)

    def _unlock(self, achievement: AchievementInfo, when: datetime) -> None:
        self.unlocked[achievement.id] = when
        self.bonus_xp += achievement.xp_reward
        if achievement.gems_reward:
            self._ledger("reward", achievement.gems_reward, when, "achievement", achievement.id,
                         f"Achievement unlocked: {achievement.name}")
        self._feed("achievement_unlocked", when, f"unlocked the {achievement.name} achievement",
                   {"achievement": achievement.slug, "rarity": achievement.rarity})

    # --- shop ----------------------------------------------------------------------------------
    def _held(self, item: ShopItemInfo) -> Holding:
        return self.inventory.setdefault(item.id, {
            "item": item, "quantity": 0, "active": False, "activated": None, "expires": None, "first": None,
        })

    def _buy(self, item: ShopItemInfo, when: datetime) -> datetime | None:
        if self.gems < item.price_gems:
            return None
        when = self._ledger("purchase", -item.price_gems, when, "shop", item.id, f"Bought {item.name}")
        if item.item_type == "double_xp" and self.rng.random() < 0.05:
            # bought by mistake and refunded before use
            self._ledger("refund", item.price_gems, when + timedelta(minutes=2), "shop_refund", item.id,
                         f"Refund: {item.name}")
            return None
        held = self._held(item)
        held["quantity"] += 1
        held["first"] = held["first"] or when
        return when

    def _shop(self, when: datetime) -> datetime:
        shop, rng, appetite = self.content.shop, self.rng, self.p.persona.shopping
        freeze = shop["Streak Freeze"]
        if self._held(freeze)["quantity"] < rules.MAX_FREEZES and rng.random() < appetite * 0.4:
            if bought := self._buy(freeze, when):
                held = self._held(freeze)
                held["active"], held["activated"] = True, bought
                when = bought + timedelta(seconds=20)
        if rng.random() < appetite * 0.12:
            boost = shop["Double XP Boost"]
            if bought := self._buy(boost, when):
                held = self._held(boost)
                held["quantity"] -= 1  # used at once
                held["activated"] = activated = bought + timedelta(seconds=5)
                held["expires"] = self.boost_until = activated + timedelta(minutes=self.ctx.boost_minutes)
                when = bought + timedelta(seconds=20)
        if rng.random() < appetite * 0.05:
            if bought := self._buy(shop["Hint Pack"], when):
                when = bought + timedelta(seconds=20)
        if rng.random() < appetite * 0.02:
            frame = shop[rng.choice(("Golden Avatar Frame", "Lotus Avatar Frame"))]
            if frame.id not in self.inventory and (bought := self._buy(frame, when)):
                for other in self.inventory.values():
                    if other["item"].item_type == "avatar_frame":
                        other["active"] = False
                held = self._held(frame)
                held["active"], held["activated"] = True, bought
                when = bought + timedelta(seconds=20)
        return when

    # --- learning ------------------------------------------------------------------------------
    def _next_lesson(self) -> LessonInfo:
        course, rng = self.course, self.rng
        passed = self.passed.setdefault(course.key, set())
        if len(passed) == len(course.lessons):
            follow_up = NEXT_COURSE.get(course.key)
            if follow_up and rng.random() < 0.7:
                self.course = course = self.content.courses[follow_up]
                passed = self.passed.setdefault(course.key, set())
            else:
                return rng.choice(course.lessons)
        if passed and rng.random() < 0.2:  # practise something already learnt
            return course.lessons[rng.choice(sorted(passed))]
        return course.lessons[min(set(range(len(course.lessons))) - passed)]

    def _attempt(self, lesson: LessonInfo, start: datetime, device: str) -> tuple[datetime, bool]:
        rng, rows = self.rng, self.rows
        attempt_id = self._id()
        repeat = lesson.position in self.passed.get(lesson.course_key, ())
        skill = self.skill + (0.05 if repeat else 0.0)
        abandon_after = rng.randrange(1, len(lesson.exercises)) if rng.random() < 0.03 else None
        questions, queue = [], [(exercise, 1) for exercise in lesson.exercises]
        clock = start + timedelta(seconds=rng.uniform(3, 8))  # the lesson's introduction
        lives, first_correct, hints, spent_ms = rules.LESSON_LIVES, 0, 0, 0
        position = 0
        while queue and lives > 0:
            exercise, number = queue.pop(0)
            position += 1
            if abandon_after is not None and position > abandon_after:
                break
            hint = rng.random() < 0.08
            chance = skill + EASE[exercise.difficulty] + (0.15 if hint else 0.0) + (0.2 if number > 1 else 0.0)
            correct = rng.random() < chance
            ms = int(rng.lognormvariate(0, 0.35) * BASE_SECONDS[exercise.type] * 1000 / (1.3 if number > 1 else 1))
            answer = exercise.answer if correct else rng.choice(exercise.wrong_answers)
            clock += timedelta(milliseconds=ms + 400)
            questions.append((
                self._id(), attempt_id, exercise.id, exercise.type, answer, exercise.answer, correct, ms, hint, number,
                round(rng.uniform(0.55, 1.0) if correct else rng.uniform(0.1, 0.7), 2), exercise.difficulty, clock,
            ))
            hints += hint
            spent_ms += ms
            if number == 1 and correct:
                first_correct += 1
            if not correct:
                lives -= 1
                queue.append((exercise, number + 1))
        total = len(lesson.exercises)
        finished = abandon_after is None
        score = rules.lesson_score(first_correct, total, finished)
        passed = rules.lesson_passes(score, lesson.pass_score, finished, lives)
        perfect = rules.is_perfect(passed, first_correct, total)
        xp = rules.lesson_xp(lesson.xp_reward, passed, perfect, boosted=self.boost_until is not None and start <= self.boost_until)
        elapsed_ms = int((clock - start).total_seconds() * 1000)
        end = clock + timedelta(seconds=2)
        rows["lesson_attempts"].append((
            attempt_id, self.uid, lesson.id, start, end if finished else None, score, passed, xp, total, first_correct,
            hints, lives, elapsed_ms, spent_ms // max(1, len(questions)), device, start,
        ))
        rows["question_attempts"].extend(questions)
        self._record_progress(lesson, start, end, score, passed, elapsed_ms)
        week = self.weeks.setdefault(rules.week_start(rules.activity_day(start)), Week(0, 0, start, start))
        week.xp += xp
        week.last = end
        self._touch(end)
        if passed:
            week.lessons += 1
            self.xp += xp
            first_pass = not repeat
            self.passed.setdefault(lesson.course_key, set()).add(lesson.position)
            self._metric("lesson_complete", self.metrics["lesson_complete"] + 1, end)
            self._metric("xp_earned", self.xp, end)
            if perfect:
                self._metric("perfect_score", self.metrics["perfect_score"] + 1, end)
            if first_pass:
                self._learn(lesson, end)
                self._course_milestones(lesson, end)
        return end, passed

    def _record_progress(self, lesson: LessonInfo, start: datetime, end: datetime, score: int, passed: bool,
                         elapsed_ms: int) -> None:
        row = self.progress.get(lesson.id)
        if row is None:
            row = self.progress[lesson.id] = Progress(lesson, "in_progress", 0, None, 0, 0, start, end)
        row.status = "completed" if passed or row.status == "completed" else "in_progress"
        row.score = max(row.score, score)
        if passed and row.completed is None:
            row.completed = end
        row.seconds += elapsed_ms // 1000
        row.attempts += 1
        row.last = end

    def _course_milestones(self, lesson: LessonInfo, when: datetime) -> None:
        course = self.content.courses[lesson.course_key]
        passed = self.passed[course.key]
        if len(passed) == len(course.lessons) and course.key not in self.completed_courses:
            self.completed_courses.add(course.key)
            self._feed("course_completed", when, f"completed the course {course.title}", {"course_id": str(course.id)})
            self._metric("course_complete", len(self.completed_courses), when)
            following = LEVELS[min(len(LEVELS) - 1, LEVELS.index(course.level) + 1)]
            if LEVELS.index(following) > LEVELS.index(self.level):
                self.level = following
        elif (lesson.position + 1) % 3 == 0 and all(p in passed for p in range(lesson.position - 2, lesson.position + 1)):
            self._feed("unit_completed", when, f"finished a unit of {course.title}",
                       {"course_id": str(course.id), "lesson_id": str(lesson.id)})

    def _grade(self, item: Knowledge, when: datetime) -> int:
        due = item.memory.due
        overdue = 0.0 if due is None else max(0.0, (when - due).total_seconds() / 86400)
        chance = self.skill - 0.04 * min(overdue, 5) + 0.02 * min(item.memory.repetitions, 4)
        if self.rng.random() < chance:
            return self.rng.choice((3, 4, 4, 5, 5))
        return self.rng.choice((0, 1, 2, 2))

    def _review(self, item: Knowledge, when: datetime, order: int) -> bool:
        quality = self._grade(item, when)
        was_mastered = rules.is_mastered(item.memory)
        item.memory = memory = rules.review(item.memory, quality, when)
        assert memory.due is not None  # set by every review
        item.history.append({"at": when.isoformat(timespec="seconds"), "quality": quality, "interval": memory.interval})
        insort(self.due, (memory.due, order, item.vocab_id))
        mastered = rules.is_mastered(memory)
        self.mastered += mastered - was_mastered
        if mastered and not was_mastered:
            self._metric("vocab_mastered", self.mastered, when)
        return rules.recalled(quality)

    def _learn(self, lesson: LessonInfo, when: datetime) -> None:
        for offset, vocab_id in enumerate(lesson.vocab_ids):
            if vocab_id in self.knowledge:
                continue
            item = self.knowledge[vocab_id] = Knowledge(self._id(), vocab_id, when)
            self._review(item, when + timedelta(seconds=offset), len(self.knowledge))

    def _daily_review(self, day: date, start: datetime) -> datetime:
        limit = self.p.persona.reviews
        due: list[Knowledge] = []
        while self.due and len(due) < limit and self.due[0][0] <= start:
            entry = self.due.pop(0)
            item = self.knowledge[entry[2]]
            if item.memory.due == entry[0]:  # skip stale entries superseded by a later review
                due.append(item)
        if not due:
            return start
        rng = self.rng
        finished = rng.random() > 0.05
        done = due if finished else due[: rng.randrange(1, len(due) + 1)]
        clock, correct = start, 0
        order = len(self.knowledge) + self.metrics["reviews_completed"] * 100
        for position, item in enumerate(done):
            clock += timedelta(seconds=rng.uniform(4, 12))
            correct += self._review(item, clock, order + position)
        for item in due[len(done):]:
            assert item.memory.due is not None  # every queued word has been reviewed
            insort(self.due, (item.memory.due, 0, item.vocab_id))
        finished = finished and len(done) == len(due)
        self.rows["daily_review_sessions"].append((
            self._id(), self.uid, day, len(due), len(done), correct, start, clock if finished else None, finished,
            dumps([str(item.vocab_id) for item in due]), start,
        ))
        if finished:
            self._metric("reviews_completed", self.metrics["reviews_completed"] + 1, clock)
        self._touch(clock)
        return clock + timedelta(seconds=30)

    # --- days ----------------------------------------------------------------------------------
    def _close_week(self, week_start: date, when: datetime) -> None:
        """At Monday 00:00, decide last week's promotion or demotion and pay the reward."""
        week = self.weeks.get(week_start)
        if week is None:
            return
        week.outcome = outcome = rules.close_week(self.league, week.xp)
        self.league = outcome.next_league
        if outcome.promoted:
            self._ledger("reward", rules.promotion_gems(outcome.league), when, "league_promotion", week_start.isoformat(),
                         f"Promoted to the {self.league.title()} league")
            self._feed("league_promoted", when, f"was promoted to the {self.league.title()} league",
                       {"league": self.league, "week_start": week_start.isoformat()})

    def _practise(self, day: date, day_index: int) -> bool:
        persona, rng = self.p.persona, self.rng
        if self.churn_day is not None and day_index >= self.churn_day:
            return False
        chance = persona.active * (0.8 if day.weekday() >= 5 else 1.0)
        return rng.random() < chance

    def _session(self, day: date, start: datetime, devices: list[Device]) -> None:
        rng = self.rng
        device_index = 0 if len(devices) == 1 or rng.random() < 0.8 else rng.randrange(1, len(devices))
        device_type = devices[device_index][1]
        self.sessions.append((start, device_index))
        clock = self._shop(start + timedelta(seconds=rng.uniform(5, 40)))
        clock = self._daily_review(day, clock)
        limit = at(day, 23.5)  # sessions end before midnight, so days and weeks stay whole
        goal_paid, passed_today = False, 0
        for _ in range(rng.randint(*self.p.persona.lessons)):
            if clock >= limit:
                break
            end, passed = self._attempt(self._next_lesson(), clock, device_type)
            if not passed and end < limit and self.gems >= rules.HEART_REFILL_GEMS and rng.random() < 0.25:
                end = self._ledger("spend", -rules.HEART_REFILL_GEMS, end + timedelta(seconds=3), "hearts", None,
                                   "Refilled hearts with gems")
            passed_today += passed
            if passed and not goal_paid and rules.daily_goal_reached(passed_today):
                goal_paid = True
                self._ledger("earn", rules.DAILY_GOAL_GEMS, end + timedelta(seconds=1), "daily_goal", day.isoformat(),
                             "Daily goal reached")
            clock = end + timedelta(seconds=rng.uniform(10, 240))
        self.boost_until = None

    def _streak_day(self, day: date, active: bool) -> None:
        freeze = self._held(self.content.shop["Streak Freeze"])
        before = self.streak
        self.streak = streak = rules.next_streak_day(replace(before, freezes=freeze["quantity"]), day, active)
        if active:
            self.streak_touched = self.last_event
            if rules.is_streak_milestone(streak.current):
                self._feed("streak_milestone", self.last_event, f"reached a {streak.current}-day streak",
                           {"streak": streak.current})
            self._metric("reach_streak", streak.current, self.last_event)
        elif before.current:
            if streak.freezes < freeze["quantity"]:  # a freeze saved the day
                freeze["quantity"] = streak.freezes
                freeze["active"] = streak.freezes > 0
            self.streak_touched = at(day + DAY, 0)

    def simulate(self, devices: list[Device]) -> None:
        p, rng = self.p, self.rng
        self._ledger("earn", rules.WELCOME_GEMS, p.signup + timedelta(seconds=1), "welcome_bonus", None, "Welcome gems")
        self._feed("joined", p.signup, "joined LangLearn", {"course": p.course})
        follows = sorted(self.follows, key=lambda f: f[1])
        signup_day = p.signup.date()
        first = self.ctx.first_day
        for day_index in range(HISTORY_DAYS):
            day = first + timedelta(days=day_index)
            if day < signup_day:
                continue
            if day.weekday() == 0 and day > signup_day:
                self._close_week(day - timedelta(days=7), at(day, 0) + timedelta(minutes=5))
            start = at(day, self.hour + rng.uniform(-0.5, 1.0))
            if day == signup_day:
                start = max(start, p.signup + timedelta(minutes=2))
            self._followed(follows, start)
            active = (day == signup_day or self._practise(day, day_index)) and start < at(day, 23.0)
            if active:
                self._session(day, start, devices)
            self._followed(follows, at(day + DAY, 0))
            self._streak_day(day, active)

    def _followed(self, follows: list[Follow], until: datetime) -> None:
        """Count the follows made before `until` (kept in time order with the rest of the day)."""
        while follows and follows[0][1] < until:
            _, when = follows.pop(0)
            self._metric("follow_count", self.metrics["follow_count"] + 1, when)


def _devices(history: UserHistory) -> list[Device]:
    """The user's devices: a phone (or a browser) first, sometimes a second one."""
    rng, people = history.rng, history.content.people
    kinds = [rng.choices(("android", "ios", "web"), weights=(0.6, 0.3, 0.1))[0]]
    if rng.random() < 0.3:
        kinds.append(rng.choice(("web", "android", "ios")))
    return [(index, kind, rng.choice(people["devices"][kind])) for index, kind in enumerate(kinds)]


def _secret(history: UserHistory) -> bytes:
    return secrets.token_bytes(32) if history.ctx.unpredictable else history.rng.randbytes(32)


def _ip(rng: random.Random) -> str:
    """An address from the documentation ranges (RFC 5737 / RFC 3849): realistic shape, nobody's address."""
    if rng.random() < 0.15:
        return str(ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(64)))
    network = rng.choice(("192.0.2.", "198.51.100.", "203.0.113."))
    return network + str(rng.randrange(1, 255))


def _emit_user(history: UserHistory, devices: list[Device]) -> None:
    """Turn the simulated state into the rows that summarise it."""
    ctx, p, rng, rows, uid = history.ctx, history.p, history.rng, history.rows, history.uid
    anchor = ctx.anchor
    last_login = history.sessions[-1][0] if history.sessions else p.signup
    updated = max(history.last_event, last_login)
    rows["users"].append((
        uid, p.email, p.names[1], ctx.password_for(p.index), p.names[0],
        f"https://cdn.langlearn.example/avatars/{p.names[1]}.png" if rng.random() < 0.7 else None,
        p.native, history.course.language, history.level, rules.total_xp((history.xp,), (history.bonus_xp,)),
        rng.random() > 0.02, p.index < ctx.demo_accounts or rng.random() < 0.85, last_login,
        "local" if p.index < ctx.demo_accounts else rng.choices(("local", "google", "facebook", "apple"), (60, 30, 5, 5))[0],
        _ip(rng), p.signup, updated,
    ))

    for index, kind, name in devices:
        device_id = new_uuid(rng)
        used = [start for start, device in history.sessions if device == index] or [p.signup]
        token = None if kind == "web" else _secret(history).hex()
        rows["user_devices"].append((
            device_id, uid, str(new_uuid(rng)).upper() if kind == "ios" else rng.randbytes(8).hex(), token, kind,
            name, used[-1], used[0],
        ))
        issued = [used[0]]
        for start in used[1:]:
            if start - issued[-1] >= TOKEN_ROTATION:
                issued.append(start)
        for position, when in enumerate(issued):
            latest = position == len(issued) - 1
            revoked = latest and rng.random() < 0.1
            revoked_at = min(used[-1] + timedelta(hours=rng.uniform(1, 12)), anchor - timedelta(minutes=1)) if revoked else None
            rows["refresh_tokens"].append((
                new_uuid(rng), uid, device_id, hashlib.sha256(_secret(history)).hexdigest(), revoked, not latest,
                when + TOKEN_LIFETIME, revoked_at, when,
            ))

    for progress in history.progress.values():
        lesson = progress.lesson
        rows["user_progress"].append((
            new_uuid(rng), uid, lesson.id, lesson.course_id, progress.status, progress.score, progress.completed,
            progress.seconds, progress.attempts, progress.first, progress.last,
        ))

    for item in history.knowledge.values():
        memory = item.memory
        assert memory.last_review is not None  # every known word has been reviewed once
        rows["user_vocab_knowledge"].append((
            item.id, uid, item.vocab_id, rules.memory_strength(memory, anchor), memory.easiness, memory.interval,
            memory.last_review, memory.due, memory.reviews, memory.repetitions, dumps(item.history), rules.mastery_level(memory),
            item.created_at, memory.last_review,
        ))

    rows["streaks"].append((
        new_uuid(rng), uid, history.streak.current, history.streak.longest, history.streak.last_active, history.streak.days_active,
        history._held(history.content.shop["Streak Freeze"])["quantity"], p.signup,
        max(history.streak_touched, p.signup),
    ))

    unlocked_by_rarity = sorted(
        (a for a in ctx.content.achievements if a.id in history.unlocked),
        key=lambda a: (-RARITY_RANK[a.rarity], history.unlocked[a.id]),
    )
    showcased = {a.id for a in unlocked_by_rarity[:3]}
    for achievement in ctx.content.achievements:
        value = history.metrics[achievement.condition_type]
        unlocked = history.unlocked.get(achievement.id)
        if unlocked is None and value == 0:
            continue
        if unlocked is None and any(
            other.condition_type == achievement.condition_type and other.id not in history.unlocked
            and other.condition_value < achievement.condition_value for other in ctx.content.achievements
        ):
            continue  # only the next tier of each kind shows progress
        rows["user_achievements"].append((
            new_uuid(rng), uid, achievement.id, rules.achievement_progress(achievement.condition_value, value), unlocked,
            achievement.id in showcased, unlocked or p.signup,
        ))

    rows["user_wallets"].append((
        history.wallet_id, uid, history.gems, history.earned, history.spent, p.signup, history.last_ledger or p.signup,
    ))

    for week_start, week in sorted(history.weeks.items()):
        outcome = week.outcome or rules.WeekOutcome(history.league, False, False, history.league)
        league, promoted, demoted = outcome.league, outcome.promoted, outcome.demoted
        rows["leaderboard_entries"].append((
            new_uuid(rng), uid, week_start, week_start + timedelta(days=6), league, week.xp, week.lessons, None,
            promoted, demoted, week.first, week.last,
        ))

    for held in history.inventory.values():
        if held["first"] is None:
            continue
        rows["user_inventory"].append((
            new_uuid(rng), uid, held["item"].id, held["quantity"], held["active"], held["activated"], held["expires"],
            held["first"], held["first"],
        ))


RARITY_RANK = {"common": 0, "rare": 1, "epic": 2, "legendary": 3}


def _follows(ctx: RunContext, batch: int, profiles: list[Profile], rows: dict[str, list[Row]]) -> dict[int, list[Follow]]:
    """A follow graph inside the batch (friends who joined around the same time): no self-follow, no duplicates."""
    rng = random.Random(f"{ctx.seed}:follows:{batch}")
    by_user: dict[int, list[Follow]] = {p.index: [] for p in profiles}
    if len(profiles) < 2:
        return by_user
    horizon = ctx.anchor - timedelta(minutes=5)
    for follower in profiles:
        count = min(len(profiles) - 1, int(rng.expovariate(1 / 4)))
        for followed in rng.sample([p for p in profiles if p.index != follower.index], count):
            earliest = max(follower.signup, followed.signup) + timedelta(minutes=10)
            if earliest >= horizon:
                continue
            when = earliest + (horizon - earliest) * rng.random() ** 3
            when = when.replace(microsecond=when.microsecond // 1000 * 1000)
            rows["user_following"].append((new_uuid(rng), follower.id, followed.id, when))
            by_user[follower.index].append((followed.id, when))
    return by_user


def generate_batch(ctx: RunContext, batch: int) -> Batch:
    """Every row of users `batch * BATCH_USERS` up to the next batch, for all user tables."""
    rows: dict[str, list[Row]] = {table: [] for table in USER_TABLES}
    first = batch * BATCH_USERS
    profiles = [_profile(ctx, index) for index in range(first, min(ctx.users, first + BATCH_USERS))]
    follows = _follows(ctx, batch, profiles, rows)
    for profile in profiles:
        history = UserHistory(ctx, profile, follows[profile.index], rows)
        devices = _devices(history)
        history.simulate(devices)
        _emit_user(history, devices)
    return Batch(batch, rows)
