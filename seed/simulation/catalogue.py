"""The catalogue as the simulation reads it: the loaded content with ids as `rows.Uuid` ints and what each
exercise needs at hand, refused early (naming the data file and field) when the simulation cannot use it."""

from __future__ import annotations

from dataclasses import dataclass

from langlearn import rules
from langlearn.errors import ContentDataError
from langlearn.seed.content import Content, data_file
from langlearn.seed.simulation.rows import Uuid

COURSES = ("en-a1", "en-a2", "es-a1")  # what Vietnamese speakers enrol in
NEXT_COURSE = {"en-a1": "en-a2"}
LEVELS = ("A1", "A2", "B1", "B2", "C1", "C2")
SHOP_ITEMS_USED = ("Streak Freeze", "Double XP Boost", "Hint Pack", "Golden Avatar Frame", "Lotus Avatar Frame")
# a learner's seconds on a first try at each kind of exercise, and how the difficulty moves the chance of a right answer
BASE_SECONDS = {"multiple_choice": 6.0, "fill_blank": 8.0, "matching": 14.0, "translation": 20.0, "listening": 15.0}
EASE = {"easy": 0.06, "medium": 0.0, "hard": -0.1}


@dataclass(frozen=True)
class Exercise:
    question_id: str
    type: str
    answer: str
    wrong_answers: tuple[str, ...]
    difficulty: str
    base_ms: float  # the median time of a first try
    ease: float  # added to the learner's chance of a right answer


@dataclass(frozen=True)
class Lesson:
    id: Uuid
    course_key: str
    course_id: Uuid
    position: int
    xp_reward: int
    pass_score: int
    exercises: tuple[Exercise, ...]
    vocab_ids: tuple[Uuid, ...]


@dataclass(frozen=True)
class Course:
    id: Uuid
    key: str
    title: str
    language: str
    level: str
    lessons: tuple[Lesson, ...]


@dataclass(frozen=True)
class Achievement:
    id: Uuid
    reference: str  # the id as wallet_transactions.reference_id spells it
    slug: str
    name: str
    condition_type: str
    condition_value: int
    xp_reward: int
    gems_reward: int
    rarity: str


@dataclass(frozen=True)
class ShopItem:
    id: Uuid
    reference: str
    name: str
    item_type: str
    price_gems: int


@dataclass(frozen=True)
class Catalogue:
    courses: dict[str, Course]
    achievements: tuple[Achievement, ...]
    achievements_by_type: dict[str, tuple[Achievement, ...]]  # lowest threshold first
    shop: dict[str, ShopItem]  # by name
    vocab_text: dict[Uuid, str]  # a word's id as daily_review_sessions.vocab_list spells it
    boost_minutes: int  # how long a Double XP Boost lasts


def build_catalogue(content: Content) -> Catalogue:
    """The simulation's view of `content`; raises ContentDataError for data it cannot use."""
    boost_minutes = _check(content)
    courses = {
        key: Course(info.id.int, key, info.title, info.language, info.level, tuple(
            Lesson(lesson.id.int, key, info.id.int, lesson.position, lesson.xp_reward, lesson.pass_score, tuple(
                Exercise(e.id, e.type, e.answer, e.wrong_answers, e.difficulty, BASE_SECONDS[e.type] * 1000, EASE[e.difficulty])
                for e in lesson.exercises), tuple(v.int for v in lesson.vocab_ids))
            for lesson in info.lessons))
        for key, info in content.courses.items()
    }
    achievements = tuple(
        Achievement(a.id.int, str(a.id), a.slug, a.name, a.condition_type, a.condition_value, a.xp_reward, a.gems_reward, a.rarity)
        for a in content.achievements)
    by_type: dict[str, tuple[Achievement, ...]] = {}
    for achievement in sorted(achievements, key=lambda a: a.condition_value):
        by_type[achievement.condition_type] = by_type.get(achievement.condition_type, ()) + (achievement,)
    shop = {name: ShopItem(item.id.int, str(item.id), name, item.item_type, item.price_gems) for name, item in content.shop.items()}
    vocab_text = {word.int: str(word) for course in content.courses.values() for lesson in course.lessons
                  for word in lesson.vocab_ids}
    return Catalogue(courses, achievements, by_type, shop, vocab_text, boost_minutes)


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
