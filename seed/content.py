"""The catalogue the seed loads from `seed/data/`: courses, units, lessons, vocabulary, media,
achievements and the shop, as rows ready for COPY plus the facts the simulation of users needs.

Everything here is derived from the data files and the seed alone (ids from a seeded RNG), so
every run with one seed builds the same catalogue, row for row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypedDict, TypeGuard
from uuid import UUID

from asyncpg.pgproto.pgproto import UUID as PgUUID

from langlearn.errors import ContentDataError
from langlearn.settings import package_folder

DATA_DIR = package_folder("langlearn.seed", "data")
CDN = "https://cdn.langlearn.example/"
CONTENT_AGE = timedelta(days=120)  # the catalogue predates the simulated history
EXERCISE_TYPES = ("multiple_choice", "fill_blank", "matching", "translation", "listening")
DIFFICULTY = {"multiple_choice": "easy", "matching": "easy", "fill_blank": "medium", "listening": "medium", "translation": "hard"}
VOCABULARY_COLUMNS = ("word", "part_of_speech", "level", "pronunciation", "vi", "en", "definition", "lesson", "frequency", "tags")
ACHIEVEMENT_COLUMNS = (
    "slug", "name", "description", "condition_type", "condition_value", "category", "rarity", "xp_reward", "gems_reward",
    "badge_color", "is_hidden",
)

Row = tuple[object, ...]  # one row for COPY, in the column order of `seed.tables`

# asyncpg's UUID type is untyped; it subclasses uuid.UUID, which is what the rest of the seed sees
_make_uuid: Callable[[bytes], UUID] = PgUUID
_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_BITS = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def _uuid4(value: int) -> UUID:
    """A version-4 UUID of asyncpg's own type (a `uuid.UUID` to Python): four times cheaper to make than
    `uuid.UUID(bytes=...)` and encoded by asyncpg as is, which counts at millions of rows."""
    return _make_uuid(((value & _UUID4_KEEP) | _UUID4_BITS).to_bytes(16, "big"))


def new_uuid(rng: random.Random) -> UUID:
    """A UUID drawn from a seeded RNG: random-looking, yet the same for the same seed."""
    return _uuid4(rng.getrandbits(128))


def uuid4_from(digest: bytes) -> UUID:
    """A UUID made of a 16-byte digest, for ids that other batches must be able to name."""
    return _uuid4(int.from_bytes(digest, "big"))


def seeded_uuid(seed: int, purpose: str) -> UUID:
    """A UUID derived from the seed and what it names alone (`league_week:<Monday>`): the same on every run of that seed."""
    return uuid4_from(hashlib.blake2b(f"{seed}:{purpose}".encode(), digest_size=16).digest())


def dumps(value: object) -> str:
    """JSON text for a JSONB column, always spelled the same way for the same value."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


# The facts the user simulation draws on (`seed.simulation`). Their ids are ints (a UUID's value, as the
# simulation keeps ids: `simulation.rows.Uuid`), while the catalogue's own rows (`Content.rows`) hold `uuid.UUID`s.


@dataclass(frozen=True)
class Exercise:
    id: str  # the question id, `course.lesson.number`
    type: str
    answer: str
    wrong_answers: tuple[str, ...]
    difficulty: str


@dataclass(frozen=True)
class LessonInfo:
    id: int
    key: str
    course_key: str
    course_id: int
    position: int
    title: str
    xp_reward: int
    pass_score: int
    minutes: int
    exercises: tuple[Exercise, ...]
    vocab_ids: tuple[int, ...]


@dataclass(frozen=True)
class CourseInfo:
    id: int
    key: str
    title: str
    language: str
    level: str
    lessons: tuple[LessonInfo, ...]


@dataclass(frozen=True)
class AchievementInfo:
    id: int
    slug: str
    name: str
    condition_type: str
    condition_value: int
    xp_reward: int
    gems_reward: int
    rarity: str


@dataclass(frozen=True)
class ShopItemInfo:
    id: int
    name: str
    item_type: str
    price_gems: int
    purchasable: bool
    effects: dict[str, object]


class Names(TypedDict):
    """Names of one language in people.json: [spelling, ascii slug] pairs."""

    family: list[list[str]]
    given: list[list[str]]


class VietnameseNames(Names):
    middle: list[str]


class People(TypedDict):
    """people.json: what simulated users are called and which devices they use."""

    vi: VietnameseNames
    en: Names
    email_domains: list[str]
    devices: dict[str, list[str]]  # by device type: ios, android, web


class DemoAccount(TypedDict):
    username: str
    email: str
    display_name: str
    course: str  # a course key
    persona: str  # a persona of `seed.simulate`


class DemoAccounts(TypedDict):
    """demo_accounts.json: the documented accounts of the demo preset and their password."""

    password: str
    accounts: list[DemoAccount]


@dataclass
class Content:
    """The catalogue: `rows` per table for COPY, and the lookups the user simulation draws on."""

    rows: dict[str, list[Row]]
    courses: dict[str, CourseInfo]
    achievements: tuple[AchievementInfo, ...]
    shop: dict[str, ShopItemInfo]  # by name
    people: People
    demo: DemoAccounts


@dataclass(frozen=True)
class _Word:
    """One row of a vocabulary CSV file."""

    where: str  # file:line
    language: str
    word: str
    part_of_speech: str
    level: str
    pronunciation: str
    vi: str
    en: str
    definition: str
    lesson: str  # course key/lesson key
    frequency: int
    tags: str  # separated by |


def data_files() -> list[Path]:
    """Every data file, in a fixed order (they are part of the code version)."""
    return sorted(p for p in DATA_DIR.rglob("*") if p.is_file())


def package_name(path: Path) -> str:
    """A data file's name inside the package (`data/courses/en-a1.json`), wherever DATA_DIR points."""
    return path.relative_to(DATA_DIR.parent).as_posix()


# --- reading the data files: every problem is a ContentDataError naming the file and the field ---

def _shown(path: Path) -> str:
    """A data file as messages name it, from the package folder on: `seed/data/courses/en-a1.json`."""
    return path.relative_to(DATA_DIR.parent.parent).as_posix()


def data_file(*parts: str) -> str:
    """The name messages give the data file at `parts` under the data folder (`shop.json`)."""
    return _shown(DATA_DIR.joinpath(*parts))


def _json_type(value: object) -> str:
    """What a JSON value is, for messages: `a string`, `an array`, `10.5`..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return repr(value)
    names = {dict: "an object", list: "an array", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _field(record: Mapping[str, object], name: str, where: str) -> object:
    if name not in record:
        raise ContentDataError(f"{where}: missing field {name!r}")
    return record[name]


def _wrong(where: str, name: str, expected: str, value: object) -> ContentDataError:
    return ContentDataError(f"{where}: field {name!r} must be {expected}, not {_json_type(value)}")


def _text(record: Mapping[str, object], name: str, where: str) -> str:
    value = _field(record, name, where)
    if not isinstance(value, str):
        raise _wrong(where, name, "a string", value)
    return value


def _text_or_null(record: Mapping[str, object], name: str, where: str) -> str | None:
    value = _field(record, name, where)
    if value is not None and not isinstance(value, str):
        raise _wrong(where, name, "a string or null", value)
    return value


def _whole(record: Mapping[str, object], name: str, where: str) -> int:
    value = _field(record, name, where)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(where, name, "a whole number", value)
    return value


def _flag(record: Mapping[str, object], name: str, where: str) -> bool:
    value = _field(record, name, where)
    if not isinstance(value, bool):
        raise _wrong(where, name, "true or false", value)
    return value


def _object(record: Mapping[str, object], name: str, where: str) -> dict[str, object]:
    value = _field(record, name, where)
    if not isinstance(value, dict):
        raise _wrong(where, name, "an object", value)
    return value


def _all_text(values: list[object]) -> TypeGuard[list[str]]:
    return all(isinstance(value, str) for value in values)


def _texts(record: Mapping[str, object], name: str, where: str, *, at_least: int = 0) -> list[str]:
    value = _field(record, name, where)
    if not isinstance(value, list) or not _all_text(value):
        raise _wrong(where, name, "an array of strings", value)
    if len(value) < at_least:
        raise ContentDataError(f"{where}: field {name!r} needs at least {at_least} strings, has {len(value)}")
    return value


def _objects(record: Mapping[str, object], name: str, where: str, *, at_least: int = 0) -> list[dict[str, object]]:
    value = _field(record, name, where)
    if not isinstance(value, list):
        raise _wrong(where, name, "an array of objects", value)
    for number, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise ContentDataError(f"{where}: field {name!r}: item {number} must be an object, not {_json_type(item)}")
    if len(value) < at_least:
        raise ContentDataError(f"{where}: field {name!r} needs at least {at_least} items, has {len(value)}")
    return value


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ContentDataError(f"{_shown(path)}: {error}") from None


def _read_json_object(path: Path) -> dict[str, object]:
    value = _read_json(path)
    if not isinstance(value, dict):
        raise ContentDataError(f"{_shown(path)}: must hold an object, not {_json_type(value)}")
    return value


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[str, dict[str, str]]]:
    """The rows of a CSV file with a header naming at least `columns`, each with where it is (`file:line`)."""
    rows: list[tuple[str, dict[str, str]]] = []
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or ()
            for column in columns:
                if column not in header:
                    raise ContentDataError(f"{_shown(path)}: missing column {column!r}")
            for line, raw in enumerate(reader, start=2):
                where = f"{_shown(path)}:{line}"
                row: dict[str, str] = {}
                for column in columns:
                    value = raw[column]
                    if value is None:  # the line ends before this column
                        raise ContentDataError(f"{where}: missing field {column!r}")
                    row[column] = value
                rows.append((where, row))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ContentDataError(f"{_shown(path)}: {error}") from None
    return rows


def _whole_cell(row: Mapping[str, str], name: str, where: str) -> int:
    try:
        return int(row[name])
    except ValueError:
        raise ContentDataError(f"{where}: field {name!r} must be a whole number, not {row[name]!r}") from None


def _read_vocabulary(path: Path) -> list[_Word]:
    return [
        _Word(
            where, path.stem, row["word"], row["part_of_speech"], row["level"], row["pronunciation"], row["vi"], row["en"],
            row["definition"], row["lesson"], _whole_cell(row, "frequency", where), row["tags"],
        )
        for where, row in _read_csv(path, VOCABULARY_COLUMNS)
    ]


def _read_names(record: Mapping[str, object], language: str, where: str) -> Names:
    names = _object(record, language, where)
    where = f"{where}: {language}"
    return {
        "family": _name_pairs(names, "family", where),
        "given": _name_pairs(names, "given", where),
    }


def _name_pairs(record: Mapping[str, object], name: str, where: str) -> list[list[str]]:
    value = _field(record, name, where)
    if not isinstance(value, list) or not value or not all(
            isinstance(pair, list) and len(pair) == 2 and _all_text(pair) for pair in value):
        raise _wrong(where, name, 'a non-empty array of ["spelling", "slug"] pairs', value)
    return value


def _read_people(path: Path) -> People:
    raw, where = _read_json_object(path), _shown(path)
    middle = _texts(_object(raw, "vi", where), "middle", f"{where}: vi", at_least=1)
    devices = _object(raw, "devices", where)
    return {
        "vi": {**_read_names(raw, "vi", where), "middle": middle},
        "en": _read_names(raw, "en", where),
        "email_domains": _texts(raw, "email_domains", where, at_least=1),
        "devices": {kind: _texts(devices, kind, f"{where}: devices", at_least=1) for kind in ("ios", "android", "web")},
    }


def _read_demo(path: Path) -> DemoAccounts:
    raw, where = _read_json_object(path), _shown(path)
    accounts: list[DemoAccount] = []
    for number, account in enumerate(_objects(raw, "accounts", where), start=1):
        at = f"{where}: account {number}"
        accounts.append({
            "username": _text(account, "username", at),
            "email": _text(account, "email", at),
            "display_name": _text(account, "display_name", at),
            "course": _text(account, "course", at),
            "persona": _text(account, "persona", at),
        })
    return {"password": _text(raw, "password", where), "accounts": accounts}


def _media_row(rng: random.Random, kind: str, path: str, created_at: datetime, references: int) -> Row:
    """A media file on the CDN; sizes and durations are stable per path, not per run."""
    digest = zlib.crc32(path.encode())
    duration: int | None
    if kind == "audio":
        duration = 2 + digest % 9
        size, mime = duration * 16_000 + digest % 4000, "audio/mpeg"
    else:
        duration, size, mime = None, 20_000 + digest % 180_000, "image/png"
    return (new_uuid(rng), kind, CDN + path, path.rsplit("/", 1)[-1], duration, size, mime, references, created_at)


def _wrong_answers(options: list[str], pairs: dict[str, str] | None, answer: str) -> tuple[str, ...]:
    """Plausible mistakes a learner makes on this exercise (used for simulated wrong answers)."""
    wrong = [o for o in options if o != answer]
    if wrong:
        return tuple(wrong)
    if pairs is not None:  # matching
        listed = list(pairs.items())
        swapped = [(listed[1][0], listed[0][1]), (listed[0][0], listed[1][1]), *listed[2:]]
        return ("; ".join(f"{k}={v}" for k, v in swapped),)
    words = answer.split()
    mistakes = [" ".join(words[:-1]) + ("" if len(words) > 1 else "?")]
    if len(words) > 2:
        mistakes.append(" ".join([words[1], words[0], *words[2:]]))
    mistakes.append(answer.lower().rstrip(".!?"))
    return tuple(m for m in mistakes if m and m != answer)


def _pairs(record: Mapping[str, object], where: str) -> dict[str, str]:
    pairs = _object(record, "pairs", where)
    texts = {key: value for key, value in pairs.items() if isinstance(value, str)}
    if len(texts) != len(pairs) or len(pairs) < 2:
        raise _wrong(where, "pairs", "an object of at least 2 word: meaning strings", pairs)
    return texts


def _exercise(course_key: str, lesson_key: str, number: int, raw: dict[str, object], where: str) -> tuple[dict[str, object], Exercise]:
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in EXERCISE_TYPES:
        raise ContentDataError(f"{where}: exercise {number} has type {kind!r}; expected one of {', '.join(EXERCISE_TYPES)}")
    at = f"{where}: exercise {number}"
    exercise_id = f"{course_key}.{lesson_key}.{number}"
    stored: dict[str, object] = {"id": exercise_id, **raw}
    options = _texts(raw, "options", at) if "options" in raw else []
    pairs = None
    if kind == "matching":
        pairs = _pairs(raw, at)
        answer = "; ".join(f"{k}={v}" for k, v in pairs.items())
        stored["answer"] = answer
    elif "answer" not in raw:
        raise ContentDataError(f"{where}: exercise {number} ({kind}) has no answer")
    else:
        answer = _text(raw, "answer", at)
        if options and answer not in options:
            raise ContentDataError(f"{where}: exercise {number}: answer {answer!r} is not among its options")
    if kind == "listening":
        stored["audio_url"] = CDN + _text(raw, "audio", at)
        del stored["audio"]
    return stored, Exercise(exercise_id, kind, answer, _wrong_answers(options, pairs, answer), DIFFICULTY[kind])


def load_content(seed: int, anchor: datetime) -> Content:
    """Build the catalogue for one seed; `anchor` fixes its timestamps (before the history)."""
    rng = random.Random(f"{seed}:content")
    born = anchor - CONTENT_AGE
    rows: dict[str, list[Row]] = {table: [] for table in (
        "courses", "units", "lessons", "vocabulary_items", "media_resources", "achievements", "shop_items")}
    courses: dict[str, CourseInfo] = {}
    media_refs: dict[tuple[str, str], int] = {}

    vocab_by_lesson: dict[str, list[_Word]] = {}
    vocabulary: list[tuple[_Word, UUID, UUID, UUID]] = []  # (word, id, course, lesson) in course order, so ids follow the catalogue
    for path in sorted((DATA_DIR / "vocabulary").glob("*.csv")):
        for word in _read_vocabulary(path):
            vocab_by_lesson.setdefault(word.lesson, []).append(word)

    for path in sorted((DATA_DIR / "courses").glob("*.json")):
        raw, source = _read_json_object(path), _shown(path)
        course_id, key = new_uuid(rng), _text(raw, "key", source)
        lessons: list[LessonInfo] = []
        course_lesson_rows: list[Row] = []
        previous_lesson = None
        position = 0
        thumbnail = _text(raw, "thumbnail", source)
        media_refs[("image", thumbnail)] = media_refs.get(("image", thumbnail), 0) + 1
        for unit_index, unit in enumerate(_objects(raw, "units", source)):
            unit_where = f"{source}: unit {unit_index + 1}"
            unit_id = new_uuid(rng)
            icon = _text(unit, "icon", unit_where)
            media_refs[("image", icon)] = media_refs.get(("image", icon), 0) + 1
            unit_lessons = _objects(unit, "lessons", unit_where)
            rows["units"].append((
                unit_id, course_id, _text(unit, "title", unit_where), _text_or_null(unit, "description", unit_where),
                unit_index, _text_or_null(unit, "color", unit_where), CDN + icon, len(unit_lessons), born, born,
            ))
            for lesson_number, lesson in enumerate(unit_lessons, start=1):
                lesson_id = new_uuid(rng)
                lesson_key = _text(lesson, "key", f"{unit_where}: lesson {lesson_number}")
                where = f"{source}: lesson {lesson_key!r}"
                stored, exercises = [], []
                for number, exercise in enumerate(_objects(lesson, "exercises", where, at_least=2), start=1):
                    row_exercise, info = _exercise(key, lesson_key, number, exercise, where)
                    stored.append(row_exercise)
                    exercises.append(info)
                    if info.type == "listening":
                        audio = _text(exercise, "audio", f"{where}: exercise {number}")
                        media_refs[("audio", audio)] = media_refs.get(("audio", audio), 0) + 1
                vocab_ids = []
                for word in vocab_by_lesson.pop(f"{key}/{lesson_key}", []):
                    word_id = new_uuid(rng)
                    vocab_ids.append(word_id)
                    vocabulary.append((word, word_id, course_id, lesson_id))
                body = {
                    "introduction": _text(lesson, "introduction", where),
                    "exercises": stored,
                    "grammar_notes": _texts(lesson, "grammar_notes", where) if "grammar_notes" in lesson else [],
                    "vocabulary": [str(v) for v in vocab_ids],
                }
                title = _text(lesson, "title", where)
                xp, minutes = _whole(lesson, "xp", where), _whole(lesson, "minutes", where)
                pass_score = _whole(lesson, "pass_score", where) if "pass_score" in lesson else 80
                course_lesson_rows.append((
                    lesson_id, course_id, unit_id, previous_lesson, title, _text_or_null(lesson, "description", where),
                    position, dumps(body), xp, pass_score, 1, _text(lesson, "type", where), minutes, born, born,
                ))
                lessons.append(LessonInfo(
                    lesson_id.int, lesson_key, key, course_id.int, position, title, xp, pass_score, minutes, tuple(exercises),
                    tuple(word_id.int for word_id in vocab_ids),
                ))
                previous_lesson = lesson_id
                position += 1
        rows["lessons"].extend(course_lesson_rows)
        title, language, level = _text(raw, "title", source), _text(raw, "language", source), _text(raw, "level", source)
        rows["courses"].append((
            course_id, title, _text_or_null(raw, "description", source), language, level, len(lessons),
            CDN + thumbnail, True, dumps(_texts(raw, "tags", source)), sum(info.xp_reward for info in lessons),
            sum(info.minutes for info in lessons), 1, born, born,
        ))
        courses[key] = CourseInfo(course_id.int, key, title, language, level, tuple(lessons))

    if vocab_by_lesson:
        orphan = next(iter(vocab_by_lesson.values()))[0]
        raise ContentDataError(f"{orphan.where}: lesson {orphan.lesson!r} is in no course file")
    for word, word_id, course_id, lesson_id in vocabulary:
        slug = word.word.lower().replace(" ", "-")
        audio = f"audio/vocab/{word.language}/{slug}-{word.part_of_speech}.mp3"
        media_refs[("audio", audio)] = 1
        translation = {"vi": word.vi} | ({"en": word.en} if word.en else {})
        tags = [t for t in word.tags.split("|") if t]
        rows["vocabulary_items"].append((
            word_id, word.language, word.word, word.definition, dumps(translation), word.pronunciation,
            CDN + audio, word.part_of_speech, word.level, course_id, lesson_id, word.frequency, dumps(tags), born, born,
        ))

    for (kind, media_path), references in media_refs.items():
        rows["media_resources"].append(_media_row(rng, kind, media_path, born, references))

    achievements = []
    for where, item in _read_csv(DATA_DIR / "achievements.csv", ACHIEVEMENT_COLUMNS):
        achievement_id = new_uuid(rng)
        value = _whole_cell(item, "condition_value", where)
        xp_reward, gems_reward = _whole_cell(item, "xp_reward", where), _whole_cell(item, "gems_reward", where)
        rows["achievements"].append((
            achievement_id, item["slug"], item["name"], item["description"], item["condition_type"], value,
            dumps({"metric": item["condition_type"], "threshold": value}), f"{CDN}images/badges/{item['slug']}.png",
            item["badge_color"], item["category"], xp_reward, gems_reward, item["rarity"],
            item["is_hidden"] == "true", born,
        ))
        achievements.append(AchievementInfo(
            achievement_id.int, item["slug"], item["name"], item["condition_type"], value, xp_reward, gems_reward, item["rarity"],
        ))

    shop: dict[str, ShopItemInfo] = {}
    shop_path = DATA_DIR / "shop.json"
    shop_items = _read_json(shop_path)
    if not isinstance(shop_items, list):
        raise ContentDataError(f"{_shown(shop_path)}: must hold an array of items, not {_json_type(shop_items)}")
    for number, item in enumerate(shop_items, start=1):
        where = f"{_shown(shop_path)}: item {number}"
        if not isinstance(item, dict):
            raise ContentDataError(f"{where} must be an object, not {_json_type(item)}")
        item_id = new_uuid(rng)
        name = _text(item, "name", where)
        where = f"{_shown(shop_path)}: item {name!r}"
        available = _flag(item, "is_available", where) if "is_available" in item else True
        stock = item.get("stock_quantity")
        if stock is not None and (not isinstance(stock, int) or isinstance(stock, bool)):
            raise _wrong(where, "stock_quantity", "a whole number or null", stock)
        item_type, price, effects = _text(item, "item_type", where), _whole(item, "price_gems", where), _object(item, "effects", where)
        rows["shop_items"].append((
            item_id, name, _text(item, "description", where), item_type, price, dumps(effects),
            CDN + _text(item, "icon", where), available, stock, born,
        ))
        shop[name] = ShopItemInfo(item_id.int, name, item_type, price, available, effects)

    people = _read_people(DATA_DIR / "people.json")
    demo = _read_demo(DATA_DIR / "demo_accounts.json")
    return Content(rows, courses, tuple(achievements), shop, people, demo)
