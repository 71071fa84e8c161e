"""The catalogue as the simulation reads it: the loaded content and a few lookups, refused early (naming the data
file and the field) when the simulation cannot use it; and how learners fare on each kind of exercise."""

from __future__ import annotations

from dataclasses import dataclass

from langlearn import rules
from langlearn.errors import ContentDataError
from langlearn.seed.content import AchievementInfo, Content, CourseInfo, ShopItemInfo, data_file
from langlearn.seed.simulation.rows import Uuid, uuid_text

COURSES = ("en-a1", "en-a2", "es-a1")  # what Vietnamese speakers enrol in
NEXT_COURSE = {"en-a1": "en-a2"}
LEVELS = ("A1", "A2", "B1", "B2", "C1", "C2")
SHOP_ITEMS_USED = ("Streak Freeze", "Double XP Boost", "Hint Pack", "Golden Avatar Frame", "Lotus Avatar Frame")
# a learner's median time on a first try at each kind of exercise, and how the difficulty moves the chance of a right answer
BASE_MS = {"multiple_choice": 6000, "fill_blank": 8000, "matching": 14000, "translation": 20000, "listening": 15000}
EASE = {"easy": 0.06, "medium": 0.0, "hard": -0.1}


@dataclass(frozen=True)
class Catalogue:
    """The loaded content (its facts carry ids as `Uuid` ints) and the lookups the simulation needs at hand."""

    courses: dict[str, CourseInfo]
    achievements: tuple[AchievementInfo, ...]
    achievements_by_type: dict[str, tuple[AchievementInfo, ...]]  # lowest threshold first
    shop: dict[str, ShopItemInfo]  # by name
    vocab_text: dict[Uuid, str]  # a word's id as daily_review_sessions.vocab_list spells it
    boost_minutes: int  # how long a Double XP Boost lasts


def build_catalogue(content: Content) -> Catalogue:
    """The simulation's view of `content`; raises ContentDataError for data it cannot use."""
    boost_minutes = _check(content)
    by_type: dict[str, tuple[AchievementInfo, ...]] = {}
    for achievement in sorted(content.achievements, key=lambda a: a.condition_value):
        by_type[achievement.condition_type] = by_type.get(achievement.condition_type, ()) + (achievement,)
    vocab_text = {word: uuid_text(word) for course in content.courses.values() for lesson in course.lessons
                  for word in lesson.vocab_ids}
    return Catalogue(content.courses, content.achievements, by_type, content.shop, vocab_text, boost_minutes)


def _check(content: Content) -> int:
    """Raise ContentDataError (naming the file and the field) for data the simulation cannot use: a course, shop item
    or achievement metric it does not know. Return the minutes a Double XP Boost lasts."""
    for key in (*COURSES, *NEXT_COURSE.values()):
        course = content.courses.get(key)
        if course is None or not course.lessons:
            problem = "is missing" if course is None else "has no lessons"
            raise ContentDataError(f"{data_file('courses', key + '.json')}: the course with key {key!r} {problem}; users enrol in it")
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
