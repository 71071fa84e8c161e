"""Time as the simulation keeps it: integers (`rows.Millis`, `rows.Day`), with the few conversions it needs.

Millions of events are placed in time; adding integers is several times cheaper than adding
`timedelta`s to `datetime`s, and the loader hands integers to PostgreSQL as they are.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import cache

from langlearn import rules
from langlearn.seed.simulation.rows import Day, Millis

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_CLOSED_AFTER_MS = 5 * MINUTE_MS  # the simulation closes a week at 00:05 UTC on the Monday after it
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_UNIX_EPOCH_DAY = UNIX_EPOCH.date()
# "HH:MM:SS" for every second of a day, built on first use: formatting a time is then a list lookup
_CLOCK_TEXT: list[str] = []


def millis(when: datetime) -> Millis:
    """An aware datetime as milliseconds since the epoch (sub-millisecond parts dropped)."""
    return (when - UNIX_EPOCH) // timedelta(milliseconds=1)


def day_of(when: Millis) -> Day:
    """The UTC day of an instant: days are UTC days, as `rules.activity_day` has it."""
    return when // DAY_MS


@cache
def to_date(day: Day) -> date:
    return _UNIX_EPOCH_DAY + timedelta(days=day)


def from_date(day: date) -> Day:
    return (day - _UNIX_EPOCH_DAY).days


@cache
def week_of(day: Day) -> Day:
    """The Monday of the day's leaderboard week (`rules.week_start`)."""
    return from_date(rules.week_start(to_date(day)))


@cache
def is_weekend(day: Day) -> bool:
    return to_date(day).weekday() >= 5


def at(day: Day, hours: float) -> Millis:
    """The instant `hours` after midnight UTC of `day`, to the millisecond."""
    return day * DAY_MS + round(hours * HOUR_MS)


@cache
def _date_text(day: Day) -> str:
    return to_date(day).isoformat()


def iso_seconds(when: Millis) -> str:
    """`instant(when).isoformat(timespec="seconds")`, made without a datetime (review histories hold millions)."""
    if not _CLOCK_TEXT:
        _CLOCK_TEXT.extend(f"{h:02}:{m:02}:{s:02}" for h in range(24) for m in range(60) for s in range(60))
    day, rest = divmod(when, DAY_MS)
    return f"{_date_text(day)}T{_CLOCK_TEXT[rest // SECOND_MS]}+00:00"
