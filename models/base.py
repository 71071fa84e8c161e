"""Conventions every table shares (SCHEMA.md, "Conventions").

Every default is declared twice on purpose: `default=` for objects built in Python, and
`db_default=` so the database carries the same `DEFAULT` for raw SQL, other services and
migrations that add a NOT NULL column to a populated table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import uuid4

from tortoise import fields
from tortoise.fields.db_defaults import SqlDefault
from tortoise.models import Model

NOW = SqlDefault("now()")
EMPTY_OBJECT = SqlDefault("'{}'::jsonb")
EMPTY_LIST = SqlDefault("'[]'::jsonb")

# the value types of a field: with or without null=True, as Tortoise's own fields spell them
OptionalStr = TypeVar("OptionalStr", str, str | None)
OptionalFloat = TypeVar("OptionalFloat", float, float | None)


def json_object(**kwargs: Any) -> fields.JSONField[dict[str, Any]]:
    """A JSONB column holding an object, `{}` by default in Python and in the database."""
    return fields.JSONField(default=dict, db_default=EMPTY_OBJECT, **kwargs)


def json_list(**kwargs: Any) -> fields.JSONField[list[Any]]:
    """A JSONB column holding a list, `[]` by default in Python and in the database."""
    return fields.JSONField(default=list, db_default=EMPTY_LIST, **kwargs)


def counter(initial: int = 0, **kwargs: Any) -> fields.IntField[int]:
    """A NOT NULL integer with the same default in Python and in the database."""
    return fields.IntField(default=initial, db_default=initial, **kwargs)


def flag(initial: bool, **kwargs: Any) -> fields.BooleanField[bool]:
    return fields.BooleanField(default=initial, db_default=initial, **kwargs)


class FixedCharField(fields.CharField[OptionalStr]):
    """CHAR(n): for values whose length never varies, such as hex digests."""

    @property
    # Tortoise types SQL_TYPE as a plain attribute, yet CharField itself overrides it with a property (and the same ignore)
    def SQL_TYPE(self) -> str:  # type: ignore[override]
        return f"CHAR({self.max_length})"


class RealField(fields.FloatField[OptionalFloat]):
    """REAL (4 bytes): scores and factors need no double precision."""

    SQL_TYPE = "REAL"

    class _db_postgres:
        SQL_TYPE = "REAL"


class UUIDModel(Model):
    """A row whose id is a uuid4 made by the application, with gen_random_uuid() as the database default."""

    id = fields.UUIDField(primary_key=True, default=uuid4, db_default=SqlDefault("gen_random_uuid()"))
    created_at = fields.DatetimeField(auto_now_add=True, db_default=NOW)

    class Meta:
        abstract = True


class TimestampedModel(UUIDModel):
    """A UUIDModel whose `updated_at` the ORM keeps current on every save."""

    updated_at = fields.DatetimeField(auto_now=True, db_default=NOW)

    class Meta:
        abstract = True


@dataclass(frozen=True)
class ExpressionIndex:
    """An index over expressions (`lower(username)`), which Tortoise's `Meta.indexes` cannot declare unique.

    Listed in `Meta.constraints`, which Aerich ignores: its migration is written by hand, and the
    verification reads it from here."""

    name: str
    expressions: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True)
class CompositeForeignKey:
    """A foreign key over several columns, for a row that must agree with its parent on more than the id
    (Tortoise's relations have one column). Listed in `Meta.constraints`, like `ExpressionIndex`."""

    name: str
    columns: tuple[str, ...]
    target_table: str
    target_columns: tuple[str, ...]
    on_delete: str = "NO ACTION"


@dataclass(frozen=True)
class MonthlyPartitions:
    """The table is partitioned by RANGE of `column`, one partition a month, plus a DEFAULT partition that takes
    a row no month partition covers (so that a write never fails).

    PostgreSQL requires the partition key in every unique key, so the database's primary key is
    (id, `column`) while the model's `pk` stays `id`: ids are uuid4s, unique on their own, the ORM
    reads and updates rows by id, and nothing may reference such a table (a foreign key to it would
    have to carry `column` too). Listed in `Meta.constraints`, like `ExpressionIndex`: Aerich ignores
    it, the migrations create the partitions by hand, and the verification reads it from here."""

    column: str = "created_at"

    @property
    def primary_key(self) -> tuple[str, ...]:
        return ("id", self.column)
