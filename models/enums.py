"""Enumerations stored as native PostgreSQL ENUM types.

Each Python enum's *values* are the labels of its PostgreSQL type, in the same order; member names
never reach the database. `pg_enum` records the type name on the class, and `NativeEnumField`
declares a column of that type (Tortoise's own `CharEnumField` would make a VARCHAR).
The migration that first uses a type creates it (see `create_type_sql`), and drops it on downgrade.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Literal, TypeVar, overload

from tortoise.fields import Field
from tortoise.fields.data import CharEnumFieldInstance

E = TypeVar("E", bound=type[Enum])
M = TypeVar("M", bound=Enum)

ENUM_TYPES: dict[str, type[Enum]] = {}
_TYPE_NAMES: dict[type[Enum], str] = {}
# the class attribute naming the type, for readers that look for it (`enum_cls.pg_type`); typed code calls pg_type_name()
PG_TYPE_ATTRIBUTE = "pg_type"


def pg_enum(type_name: str) -> Callable[[E], E]:
    """Mark an enum as the PostgreSQL ENUM type `type_name`."""

    def register(enum_cls: E) -> E:
        setattr(enum_cls, PG_TYPE_ATTRIBUTE, type_name)
        ENUM_TYPES[type_name] = enum_cls
        _TYPE_NAMES[enum_cls] = type_name
        return enum_cls

    return register


def pg_type_name(enum_cls: type[Enum]) -> str:
    """The PostgreSQL type of an enum registered with @pg_enum."""
    try:
        return _TYPE_NAMES[enum_cls]
    except KeyError:
        raise TypeError(f"{enum_cls.__name__} is not registered with @pg_enum") from None


def labels(enum_cls: type[Enum]) -> list[str]:
    return [member.value for member in enum_cls]


def create_type_sql(enum_cls: type[Enum]) -> str:
    quoted = ", ".join(f"'{label}'" for label in labels(enum_cls))
    return f'CREATE TYPE "{pg_type_name(enum_cls)}" AS ENUM ({quoted});'


def add_value_sql(enum_cls: type[Enum], label: str) -> str:
    """The statement adding `label` to the enum's type where the enum has it (after the label before it)."""
    names = labels(enum_cls)
    position = names.index(label)
    where = f" AFTER '{names[position - 1]}'" if position else f" BEFORE '{names[1]}'" if len(names) > 1 else ""
    return f"ALTER TYPE \"{pg_type_name(enum_cls)}\" ADD VALUE '{label}'{where};"


def native_enum(field: Field[Any]) -> type[Enum] | None:
    """The enum of a column declared with NativeEnumField (its PostgreSQL type is `pg_type_name` of it), else None."""
    return field.enum_type if isinstance(field, NativeEnumFieldInstance) else None


class NativeEnumFieldInstance(CharEnumFieldInstance):
    """A CharEnumField whose PostgreSQL column type is the enum's native type."""

    class _db_postgres:
        def __init__(self, field: NativeEnumFieldInstance) -> None:
            self.field = field

        @property
        def SQL_TYPE(self) -> str:
            return f'"{pg_type_name(self.field.enum_type)}"'


@overload
def NativeEnumField(enum_type: type[M], *, null: Literal[False] = False, **kwargs: Any) -> Field[M]: ...
@overload
def NativeEnumField(enum_type: type[M], *, null: Literal[True], **kwargs: Any) -> Field[M | None]: ...


def NativeEnumField(enum_type: type[M], **kwargs: Any) -> Field[M] | Field[M | None]:
    if enum_type not in _TYPE_NAMES:
        raise TypeError(f"{enum_type.__name__} is not registered with @pg_enum")
    kwargs.setdefault("description", f"{pg_type_name(enum_type)}: {', '.join(labels(enum_type))}")
    return NativeEnumFieldInstance(enum_type, **kwargs)


@pg_enum("cefr_level")
class CefrLevel(str, Enum):
    A1 = "A1"
    A2 = "A2"
    B1 = "B1"
    B2 = "B2"
    C1 = "C1"
    C2 = "C2"


@pg_enum("part_of_speech")
class PartOfSpeech(str, Enum):
    NOUN = "noun"
    VERB = "verb"
    ADJECTIVE = "adjective"
    ADVERB = "adverb"
    PRONOUN = "pronoun"
    PREPOSITION = "preposition"
    CONJUNCTION = "conjunction"
    INTERJECTION = "interjection"
    PHRASE = "phrase"


@pg_enum("progress_status")
class ProgressStatus(str, Enum):
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


@pg_enum("auth_provider")
class AuthProvider(str, Enum):
    LOCAL = "local"
    GOOGLE = "google"
    FACEBOOK = "facebook"
    APPLE = "apple"


@pg_enum("device_type")
class DeviceType(str, Enum):
    IOS = "ios"
    ANDROID = "android"
    WEB = "web"


@pg_enum("lesson_type")
class LessonType(str, Enum):
    LESSON = "lesson"
    VOCABULARY = "vocabulary"
    GRAMMAR = "grammar"
    PRACTICE = "practice"
    REVIEW = "review"
    TEST = "test"


@pg_enum("media_type")
class MediaType(str, Enum):
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"


@pg_enum("mastery_level")
class MasteryLevel(str, Enum):
    LEARNING = "learning"
    REVIEWING = "reviewing"
    MASTERED = "mastered"


@pg_enum("league_type")
class LeagueType(str, Enum):
    BRONZE = "bronze"
    SILVER = "silver"
    GOLD = "gold"
    PLATINUM = "platinum"
    DIAMOND = "diamond"


@pg_enum("achievement_rarity")
class AchievementRarity(str, Enum):
    COMMON = "common"
    RARE = "rare"
    EPIC = "epic"
    LEGENDARY = "legendary"


@pg_enum("transaction_type")
class TransactionType(str, Enum):
    EARN = "earn"
    SPEND = "spend"
    PURCHASE = "purchase"
    REWARD = "reward"
    REFUND = "refund"
