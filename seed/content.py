"""The catalogue the seed loads from `seed/data/`: courses, units, lessons, vocabulary, media,
achievements and the shop, as rows ready for COPY plus the facts the simulation of users needs.

Everything here is derived from the data files and the seed alone (ids from a seeded RNG), so
every run with one seed builds the same catalogue, row for row.
"""

from __future__ import annotations

import csv
import json
import random
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from asyncpg.pgproto.pgproto import UUID

from langlearn.errors import ContentDataError
from langlearn.settings import package_folder

DATA_DIR = package_folder("langlearn.seed", "data")
CDN = "https://cdn.langlearn.example/"
CONTENT_AGE = timedelta(days=120)  # the catalogue predates the simulated history
EXERCISE_TYPES = ("multiple_choice", "fill_blank", "matching", "translation", "listening")
DIFFICULTY = {"multiple_choice": "easy", "matching": "easy", "fill_blank": "medium", "listening": "medium", "translation": "hard"}


_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_BITS = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def _uuid4(value: int) -> UUID:
    """A version-4 UUID of asyncpg's own type (a `uuid.UUID` to Python): four times cheaper to make than
    `uuid.UUID(bytes=...)` and encoded by asyncpg as is, which counts at millions of rows."""
    return UUID(((value & _UUID4_KEEP) | _UUID4_BITS).to_bytes(16, "big"))


def new_uuid(rng: random.Random) -> UUID:
    """A UUID drawn from a seeded RNG: random-looking, yet the same for the same seed."""
    return _uuid4(rng.getrandbits(128))


def uuid4_from(digest: bytes) -> UUID:
    """A UUID made of a 16-byte digest, for ids that other batches must be able to name."""
    return _uuid4(int.from_bytes(digest, "big"))


def dumps(value) -> str:
    """JSON text for a JSONB column, always spelled the same way for the same value."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Exercise:
    id: str
    type: str
    answer: str
    wrong_answers: tuple[str, ...]
    difficulty: str


@dataclass(frozen=True)
class LessonInfo:
    id: UUID
    key: str
    course_key: str
    course_id: UUID
    position: int
    title: str
    xp_reward: int
    pass_score: int
    minutes: int
    exercises: tuple[Exercise, ...]
    vocab_ids: tuple[UUID, ...]


@dataclass(frozen=True)
class CourseInfo:
    id: UUID
    key: str
    title: str
    language: str
    level: str
    lessons: tuple[LessonInfo, ...]


@dataclass(frozen=True)
class AchievementInfo:
    id: UUID
    slug: str
    name: str
    condition_type: str
    condition_value: int
    xp_reward: int
    gems_reward: int
    rarity: str


@dataclass(frozen=True)
class ShopItemInfo:
    id: UUID
    name: str
    item_type: str
    price_gems: int
    purchasable: bool
    effects: dict


@dataclass
class Content:
    """The catalogue: `rows` per table for COPY, and the lookups the user simulation draws on."""

    rows: dict[str, list[tuple]] = field(default_factory=dict)
    courses: dict[str, CourseInfo] = field(default_factory=dict)
    achievements: tuple[AchievementInfo, ...] = ()
    shop: dict[str, ShopItemInfo] = field(default_factory=dict)  # by name
    people: dict = field(default_factory=dict)
    demo: dict = field(default_factory=dict)


def data_files() -> list[Path]:
    """Every data file, in a fixed order (they are part of the code version)."""
    return sorted(p for p in DATA_DIR.rglob("*") if p.is_file())


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ContentDataError(f"{path.relative_to(DATA_DIR.parent)}: {error}") from None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _media_row(rng, kind: str, path: str, created_at: datetime, references: int) -> tuple:
    """A media file on the CDN; sizes and durations are stable per path, not per run."""
    digest = zlib.crc32(path.encode())
    if kind == "audio":
        duration = 2 + digest % 9
        size, mime = duration * 16_000 + digest % 4000, "audio/mpeg"
    else:
        duration, size, mime = None, 20_000 + digest % 180_000, "image/png"
    return (new_uuid(rng), kind, CDN + path, path.rsplit("/", 1)[-1], duration, size, mime, references, created_at)


def _wrong_answers(exercise: dict, answer: str) -> tuple[str, ...]:
    """Plausible mistakes a learner makes on this exercise (used for simulated wrong answers)."""
    options = [o for o in exercise.get("options", []) if o != answer]
    if options:
        return tuple(options)
    if exercise["type"] == "matching":
        pairs = list(exercise["pairs"].items())
        swapped = [(pairs[1][0], pairs[0][1]), (pairs[0][0], pairs[1][1]), *pairs[2:]]
        return ("; ".join(f"{k}={v}" for k, v in swapped),)
    words = answer.split()
    mistakes = [" ".join(words[:-1]) + ("" if len(words) > 1 else "?")]
    if len(words) > 2:
        mistakes.append(" ".join([words[1], words[0], *words[2:]]))
    mistakes.append(answer.lower().rstrip(".!?"))
    return tuple(m for m in mistakes if m and m != answer)


def _exercise(course_key: str, lesson_key: str, number: int, raw: dict, where: str) -> tuple[dict, Exercise]:
    kind = raw.get("type")
    if kind not in EXERCISE_TYPES:
        raise ContentDataError(f"{where}: exercise {number} has type {kind!r}; expected one of {', '.join(EXERCISE_TYPES)}")
    exercise_id = f"{course_key}.{lesson_key}.{number}"
    stored = {"id": exercise_id, **raw}
    if kind == "matching":
        answer = "; ".join(f"{k}={v}" for k, v in raw["pairs"].items())
        stored["answer"] = answer
    elif "answer" not in raw:
        raise ContentDataError(f"{where}: exercise {number} ({kind}) has no answer")
    else:
        answer = raw["answer"]
        if raw.get("options") and answer not in raw["options"]:
            raise ContentDataError(f"{where}: exercise {number}: answer {answer!r} is not among its options")
    if kind == "listening":
        stored["audio_url"] = CDN + stored.pop("audio")
    return stored, Exercise(exercise_id, kind, answer, _wrong_answers(raw, answer), DIFFICULTY[kind])


def load_content(seed: int, anchor: datetime) -> Content:
    """Build the catalogue for one seed; `anchor` fixes its timestamps (before the history)."""
    rng = random.Random(f"{seed}:content")
    born = anchor - CONTENT_AGE
    content = Content(rows={table: [] for table in (
        "courses", "units", "lessons", "vocabulary_items", "media_resources", "achievements", "shop_items")})
    rows = content.rows
    media_refs: dict[tuple[str, str], int] = {}

    vocab_by_lesson: dict[str, list[dict]] = {}
    vocabulary: list[dict] = []  # in course order, so ids follow the catalogue
    for path in sorted((DATA_DIR / "vocabulary").glob("*.csv")):
        for line, item in enumerate(_read_csv(path), start=2):
            item["language"] = path.stem
            item["where"] = f"{path.relative_to(DATA_DIR.parent)}:{line}"
            vocab_by_lesson.setdefault(item["lesson"], []).append(item)

    for path in sorted((DATA_DIR / "courses").glob("*.json")):
        raw = _read_json(path)
        course_id, key = new_uuid(rng), raw["key"]
        lessons: list[LessonInfo] = []
        course_lesson_rows: list[list] = []
        previous_lesson = None
        position = 0
        media_refs[("image", raw["thumbnail"])] = media_refs.get(("image", raw["thumbnail"]), 0) + 1
        for unit_index, unit in enumerate(raw["units"]):
            unit_id = new_uuid(rng)
            media_refs[("image", unit["icon"])] = media_refs.get(("image", unit["icon"]), 0) + 1
            unit_lessons = unit["lessons"]
            rows["units"].append((
                unit_id, course_id, unit["title"], unit["description"], unit_index, unit["color"], CDN + unit["icon"],
                len(unit_lessons), born, born,
            ))
            for lesson in unit_lessons:
                lesson_id = new_uuid(rng)
                where = f"{path.relative_to(DATA_DIR.parent)}: lesson {lesson['key']!r}"
                stored, exercises = [], []
                for number, exercise in enumerate(lesson["exercises"], start=1):
                    row_exercise, info = _exercise(key, lesson["key"], number, exercise, where)
                    stored.append(row_exercise)
                    exercises.append(info)
                    if info.type == "listening":
                        media_refs[("audio", exercise["audio"])] = media_refs.get(("audio", exercise["audio"]), 0) + 1
                vocab_ids = []
                for item in vocab_by_lesson.pop(f"{key}/{lesson['key']}", []):
                    item["course_id"], item["lesson_id"] = course_id, lesson_id
                    item["id"] = new_uuid(rng)
                    vocab_ids.append(item["id"])
                    vocabulary.append(item)
                body = {
                    "introduction": lesson["introduction"],
                    "exercises": stored,
                    "grammar_notes": lesson.get("grammar_notes", []),
                    "vocabulary": [str(v) for v in vocab_ids],
                }
                course_lesson_rows.append([
                    lesson_id, course_id, unit_id, previous_lesson, lesson["title"], lesson["description"], position,
                    dumps(body), lesson["xp"], lesson.get("pass_score", 80), 1, lesson["type"], lesson["minutes"],
                    born, born,
                ])
                lessons.append(LessonInfo(
                    lesson_id, lesson["key"], key, course_id, position, lesson["title"], lesson["xp"],
                    lesson.get("pass_score", 80), lesson["minutes"], tuple(exercises), tuple(vocab_ids),
                ))
                previous_lesson = lesson_id
                position += 1
        rows["lessons"].extend(tuple(r) for r in course_lesson_rows)
        rows["courses"].append((
            course_id, raw["title"], raw["description"], raw["language"], raw["level"], len(lessons),
            CDN + raw["thumbnail"], True, dumps(raw["tags"]), sum(l.xp_reward for l in lessons),
            sum(l.minutes for l in lessons), 1, born, born,
        ))
        content.courses[key] = CourseInfo(course_id, key, raw["title"], raw["language"], raw["level"], tuple(lessons))

    if vocab_by_lesson:
        orphan = next(iter(vocab_by_lesson.values()))[0]
        raise ContentDataError(f"{orphan['where']}: lesson {orphan['lesson']!r} is in no course file")
    for item in vocabulary:
        slug = item["word"].lower().replace(" ", "-")
        audio = f"audio/vocab/{item['language']}/{slug}-{item['part_of_speech']}.mp3"
        media_refs[("audio", audio)] = 1
        translation = {"vi": item["vi"]} | ({"en": item["en"]} if item["en"] else {})
        tags = [t for t in item["tags"].split("|") if t]
        rows["vocabulary_items"].append((
            item["id"], item["language"], item["word"], item["definition"], dumps(translation), item["pronunciation"],
            CDN + audio, item["part_of_speech"], item["level"], item["course_id"], item["lesson_id"],
            int(item["frequency"]), dumps(tags), born, born,
        ))

    for (kind, path), references in media_refs.items():
        rows["media_resources"].append(_media_row(rng, kind, path, born, references))

    achievements = []
    for item in _read_csv(DATA_DIR / "achievements.csv"):
        achievement_id = new_uuid(rng)
        value = int(item["condition_value"])
        rows["achievements"].append((
            achievement_id, item["slug"], item["name"], item["description"], item["condition_type"], value,
            dumps({"metric": item["condition_type"], "threshold": value}), f"{CDN}images/badges/{item['slug']}.png",
            item["badge_color"], item["category"], int(item["xp_reward"]), int(item["gems_reward"]), item["rarity"],
            item["is_hidden"] == "true", born,
        ))
        achievements.append(AchievementInfo(
            achievement_id, item["slug"], item["name"], item["condition_type"], value, int(item["xp_reward"]),
            int(item["gems_reward"]), item["rarity"],
        ))
    content.achievements = tuple(achievements)

    for item in _read_json(DATA_DIR / "shop.json"):
        item_id = new_uuid(rng)
        available = item.get("is_available", True)
        rows["shop_items"].append((
            item_id, item["name"], item["description"], item["item_type"], item["price_gems"], dumps(item["effects"]),
            CDN + item["icon"], available, item.get("stock_quantity"), born,
        ))
        content.shop[item["name"]] = ShopItemInfo(
            item_id, item["name"], item["item_type"], item["price_gems"], available, item["effects"],
        )

    content.people = _read_json(DATA_DIR / "people.json")
    content.demo = _read_json(DATA_DIR / "demo_accounts.json")
    return content
