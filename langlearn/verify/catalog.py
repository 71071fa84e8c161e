"""Read a schema back from PostgreSQL's catalog in one query, whatever the number of tables.

Every expression comes out of PostgreSQL's own deparser (`format_type`, `pg_get_expr`,
`pg_get_constraintdef`, `pg_get_indexdef`), so two schemas read this way compare as text exactly
when PostgreSQL considers them the same. A partitioned table is read as one table (its keys, indexes
and partition key); its partitions are left out (`langlearn.verify.partitions` checks them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal, TypedDict

import asyncpg

from langlearn.history.checksums import CHECKSUM_TABLE
from langlearn.verify.structure import Check, Column, ForeignKey, Index, Schema, Table

# Aerich's own bookkeeping table is not the models' business.
IGNORED_TABLES = ("aerich", CHECKSUM_TABLE)  # the migration bookkeeping

ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

CATALOG_QUERY = """
WITH ns AS (
    SELECT CASE WHEN $1 THEN pg_my_temp_schema()
                ELSE (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) END AS oid
), rels AS (
    -- a partitioned table (relkind p) is one table; its partitions are its storage, not tables of their own
    SELECT c.oid, c.relname, c.relkind FROM pg_class c, ns
    WHERE c.relnamespace = ns.oid AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> ALL($2::text[])
)
SELECT json_build_object(
    'tables', (SELECT coalesce(json_agg(r.relname), '[]') FROM rels r),
    'partition_keys', (SELECT coalesce(json_object_agg(r.relname, pg_get_partkeydef(r.oid)), '{}') FROM rels r WHERE r.relkind = 'p'),
    'columns', (
        SELECT coalesce(json_agg(json_build_object(
            'table', r.relname, 'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
            'nullable', NOT a.attnotnull,
            -- a plain default has no column references, and deparsing it without its relation is
            -- O(1) instead of O(columns): this keeps wide tables cheap
            'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, 0) ELSE pg_get_expr(d.adbin, d.adrelid) END
        ) ORDER BY r.relname, a.attnum), '[]')
        FROM rels r
        JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef d ON d.adrelid = r.oid AND d.adnum = a.attnum
    ),
    'constraints', (
        SELECT coalesce(json_agg(json_build_object(
            'table', r.relname, 'name', k.conname, 'type', k.contype,
            'columns', (SELECT json_agg(a.attname ORDER BY c.n) FROM unnest(k.conkey) WITH ORDINALITY c(attnum, n)
                        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = c.attnum),
            'target', t.relname,
            'target_columns', (SELECT json_agg(a.attname ORDER BY c.n) FROM unnest(k.confkey) WITH ORDINALITY c(attnum, n)
                               JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = c.attnum),
            'on_delete', k.confdeltype,
            'definition', CASE WHEN k.contype = 'c' THEN pg_get_constraintdef(k.oid) END
        ) ORDER BY r.relname, k.conname), '[]')
        FROM rels r
        JOIN pg_constraint k ON k.conrelid = r.oid AND k.contype IN ('p', 'f', 'c')
        LEFT JOIN pg_class t ON t.oid = k.confrelid
    ),
    'indexes', (
        SELECT coalesce(json_agg(json_build_object(
            'table', r.relname, 'name', i.relname, 'unique', x.indisunique, 'method', am.amname,
            'columns', (SELECT json_agg(pg_get_indexdef(x.indexrelid, n, true) ORDER BY n)
                        FROM generate_series(1, x.indnkeyatts) n),
            'predicate', pg_get_expr(x.indpred, x.indrelid),
            'constraint', EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid AND k.contype = 'u')
        ) ORDER BY r.relname, i.relname), '[]')
        FROM rels r
        JOIN pg_index x ON x.indrelid = r.oid AND NOT x.indisprimary
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_am am ON am.oid = i.relam
    ),
    'enums', (
        SELECT coalesce(json_object_agg(t.typname, (
            SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid
        )), '{}')
        FROM pg_type t, ns WHERE t.typnamespace = ns.oid AND t.typtype = 'e'
    )
)
"""


# The JSON value CATALOG_QUERY returns, a list of rows per kind of object.


class ColumnRow(TypedDict):
    table: str
    name: str
    type: str
    nullable: bool
    default: str | None


class _ConstraintRow(TypedDict):
    table: str
    name: str


class PrimaryKeyRow(_ConstraintRow):
    type: Literal["p"]  # pg_constraint.contype
    columns: list[str]


class ForeignKeyRow(_ConstraintRow):
    type: Literal["f"]
    columns: list[str]
    target: str
    target_columns: list[str]
    on_delete: str  # pg_constraint.confdeltype, a key of ON_DELETE


class CheckRow(_ConstraintRow):
    type: Literal["c"]
    definition: str


class IndexRow(TypedDict):
    table: str
    name: str
    unique: bool
    method: str
    columns: list[str]
    predicate: str | None
    constraint: bool


class Catalog(TypedDict):
    tables: list[str]
    partition_keys: dict[str, str]  # partitioned table -> its key, "RANGE (created_at)"
    columns: list[ColumnRow]
    constraints: list[PrimaryKeyRow | ForeignKeyRow | CheckRow]
    indexes: list[IndexRow]
    enums: dict[str, list[str]]  # type name -> labels in order


@dataclass
class _TableParts:
    """One table's rows, collected before the table is built."""

    columns: list[Column] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    indexes: list[Index] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)


async def read_catalog(connection: asyncpg.Connection, *, temporary: bool = False, ignore: tuple[str, ...] = IGNORED_TABLES) -> Schema:
    """The schema of the connection's current schema (or, with `temporary`, of its `pg_temp`)."""
    raw: Catalog = json.loads(await connection.fetchval(CATALOG_QUERY, temporary, list(ignore)))
    parts = {name: _TableParts() for name in raw["tables"]}
    for column in raw["columns"]:
        parts[column["table"]].columns.append(Column(column["name"], column["type"], column["nullable"], column["default"]))
    for constraint in raw["constraints"]:
        table = parts[constraint["table"]]
        if constraint["type"] == "p":
            table.primary_key = constraint["columns"]
        elif constraint["type"] == "f":
            table.foreign_keys.append(
                ForeignKey(
                    constraint["name"],
                    tuple(constraint["columns"]),
                    constraint["target"],
                    tuple(constraint["target_columns"]),
                    ON_DELETE[constraint["on_delete"]],
                )
            )
        else:
            table.checks.append(Check(constraint["name"], constraint["definition"]))
    for index in raw["indexes"]:
        parts[index["table"]].indexes.append(
            Index(index["name"], tuple(index["columns"]), index["unique"], index["method"], index["predicate"], index["constraint"])
        )
    tables = {
        name: Table(
            name,
            tuple(part.columns),
            tuple(part.primary_key),
            tuple(part.foreign_keys),
            tuple(part.indexes),
            tuple(part.checks),
            raw["partition_keys"].get(name),
        )
        for name, part in sorted(parts.items())
    }
    enums = {name: tuple(labels) for name, labels in sorted(raw["enums"].items())}
    return Schema(tables=tables, enums=enums)
