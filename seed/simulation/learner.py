"""One learner's eight weeks, lived day by day: sessions (shop, review, lessons), streaks, league weeks and follows."""

from __future__ import annotations

from dataclasses import dataclass

from langlearn import rules
from langlearn.seed.simulation.achievements import Achievements
from langlearn.seed.simulation.clock import DAY_MS, MINUTE_MS, SECOND_MS, WEEK_CLOSED_AFTER_MS, at, day_of, is_weekend, to_date, week_of
from langlearn.seed.simulation.context import BATCH_USERS, RunContext
from langlearn.seed.simulation.journal import BatchRows, Journal
from langlearn.seed.simulation.lessons import Lessons
from langlearn.seed.simulation.profiles import HISTORY_DAYS, Profile
from langlearn.seed.simulation.rows import Day, Millis, Uuid
from langlearn.seed.simulation.vocabulary import Vocabulary
from langlearn.seed.simulation.wallet import Wallet

# UTC hours learners in Vietnam (UTC+7) open the app: before work, lunch, evening
SESSION_HOURS = (0.5, 5.0, 11.5, 12.5, 13.5, 14.5)
HEART_REFILL_CHANCE = 0.25  # after a failed lesson, with the gems for it


@dataclass(frozen=True)
class Device:
    index: int
    type: str  # ios, android or web
    name: str


@dataclass(frozen=True)
class Follow:
    whom: Uuid
    when: Millis


@dataclass(frozen=True)
class Session:
    start: Millis
    device: int  # the index of the device used


class Learner:
    def __init__(self, ctx: RunContext, profile: Profile, follows: list[Follow], rows: BatchRows) -> None:
        self.ctx = ctx
        self.profile = profile
        self.rng = rng = profile.rng
        self.journal = journal = Journal(profile.id, rng, rows, profile.signup)
        catalogue = ctx.catalogue
        persona = profile.persona
        skill = rng.uniform(*persona.skill)
        self.hour = rng.choice(SESSION_HOURS)
        self.wallet = Wallet(journal, catalogue, persona.shopping, profile.index // BATCH_USERS)
        self.achievements = Achievements(journal, self.wallet, catalogue)
        self.vocabulary = Vocabulary(journal, self.achievements, catalogue, skill, persona.reviews)
        self.lessons = Lessons(journal, self.achievements, self.vocabulary, catalogue, profile.course, skill)
        self.follows = sorted(follows, key=lambda follow: follow.when)
        self.streak = rules.StreakState()
        self.streak_touched = profile.signup
        self.league = rules.LEAGUES[0]  # everyone starts in the first league
        self.sessions: list[Session] = []
        self.churn_day = rng.randint(7, HISTORY_DAYS - 7) if persona.name == "churned" else None

    def live(self, devices: list[Device]) -> None:
        p, rng = self.profile, self.rng
        self.wallet.post("earn", rules.WELCOME_GEMS, p.signup + SECOND_MS, "welcome_bonus", None, "Welcome gems")
        self.journal.feed("joined", p.signup, "joined LangLearn", {"course": p.course})
        signup_day = day_of(p.signup)
        first = self.ctx.first_day
        for day_index in range(HISTORY_DAYS):
            day = first + day_index
            if day < signup_day:
                continue
            if week_of(day) == day and day > signup_day:  # a Monday: last week closes
                self._close_week(day - 7, at(day, 0) + WEEK_CLOSED_AFTER_MS)
            start = at(day, self.hour + rng.uniform(-0.5, 1.0))
            if day == signup_day:
                start = max(start, p.signup + 2 * MINUTE_MS)
            self._followed(start)
            active = (day == signup_day or self._practises(day, day_index)) and start < at(day, 23.0)
            if active:
                self._session(day, start, devices)
            self._followed(at(day + 1, 0))
            self._streak_day(day, active)

    def _practises(self, day: Day, day_index: int) -> bool:
        if self.churn_day is not None and day_index >= self.churn_day:
            return False
        return self.rng.random() < self.profile.persona.active * (0.8 if is_weekend(day) else 1.0)

    def _session(self, day: Day, start: Millis, devices: list[Device]) -> None:
        rng, wallet = self.rng, self.wallet
        device = 0 if len(devices) == 1 or rng.random() < 0.8 else rng.randrange(1, len(devices))
        self.sessions.append(Session(start, device))
        clock = wallet.shop(start + int(rng.uniform(5, 40) * SECOND_MS))
        clock = self.vocabulary.daily_review(day, clock)
        limit = at(day, 23.5)  # sessions end before midnight, so days and weeks stay whole
        goal_paid, passed_today = False, 0
        for _ in range(rng.randint(*self.profile.persona.lessons)):
            if clock >= limit:
                break
            boosted = wallet.boost_until is not None and clock <= wallet.boost_until
            end, passed = self.lessons.attempt(self.lessons.next_lesson(), clock, devices[device].type, boosted)
            if not passed and end < limit and wallet.gems >= rules.HEART_REFILL_GEMS and rng.random() < HEART_REFILL_CHANCE:
                end = wallet.post("spend", -rules.HEART_REFILL_GEMS, end + 3 * SECOND_MS, "hearts", None, "Refilled hearts with gems")
            passed_today += passed
            if passed and not goal_paid and rules.daily_goal_reached(passed_today):
                goal_paid = True
                wallet.post("earn", rules.DAILY_GOAL_GEMS, end + SECOND_MS, "daily_goal", to_date(day).isoformat(), "Daily goal reached")
            clock = end + int(rng.uniform(10, 240) * SECOND_MS)
        wallet.boost_until = None

    def _streak_day(self, day: Day, active: bool) -> None:
        freezes = self.wallet.freezes()
        before = self.streak
        held = rules.StreakState(before.current, before.longest, before.days_active, before.last_active, freezes.quantity)
        self.streak = streak = rules.next_streak_day(held, to_date(day), active)
        if active:
            when = self.streak_touched = self.journal.last_event
            if rules.is_streak_milestone(streak.current):
                self.journal.feed("streak_milestone", when, f"reached a {streak.current}-day streak", {"streak": streak.current})
            self.achievements.reach("reach_streak", streak.current, when)
        elif before.current:
            if streak.freezes < freezes.quantity:  # a freeze saved the day
                freezes.quantity = streak.freezes
                freezes.active = streak.freezes > 0
            self.streak_touched = (day + 1) * DAY_MS

    def _close_week(self, week_start: Day, when: Millis) -> None:
        """At Monday 00:00, decide last week's promotion or demotion and pay the reward."""
        week = self.lessons.weeks.get(week_start)
        if week is None:
            return
        week.outcome = outcome = rules.close_week(self.league, week.xp)
        self.league = outcome.next_league
        if outcome.promoted:
            monday = to_date(week_start).isoformat()
            league = self.league.title()
            self.wallet.post("reward", rules.promotion_gems(outcome.league), when, "league_promotion", monday,
                             f"Promoted to the {league} league")
            self.journal.feed("league_promoted", when, f"was promoted to the {league} league",
                              {"league": self.league, "week_start": monday})

    def _followed(self, until: Millis) -> None:
        """Count the follows made before `until` (kept in time order with the rest of the day)."""
        follows = self.follows
        while follows and follows[0].when < until:
            self.achievements.count("follow_count", follows.pop(0).when)
