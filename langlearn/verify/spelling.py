"""PostgreSQL's own spelling of the models' types, defaults and CHECK expressions.

The models write `VARCHAR(255)`, `'vi'` and `week_end = week_start + 6`; the catalog says
`character varying(255)`, `'vi'::character varying` and `CHECK ((week_end = (week_start + 6)))`.
Rather than imitate the deparser, the least DDL that carries those expressions is created in
`pg_temp` (inside the caller's transaction, which rolls it back) and read back with the catalog
query used on the live tables.

The spelling depends only on the models and the server's version, so it is cached in a file keyed
by both (`$LANGLEARN_CACHE_DIR`, else `$XDG_CACHE_HOME/langlearn-data`, else
`~/.cache/langlearn-data`): a process that starts against a server it has seen before skips the
DDL, which is most of the cost of a schema check. An unreadable or unwritable cache only costs
that time again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import asyncpg

from langlearn.verify.catalog import read_catalog
from langlearn.verify.structure import Check, Column, Schema, Table

if TYPE_CHECKING:
    from asyncpg.types import ServerVersion

log = logging.getLogger(__name__)

SPELLING_TABLE = "verify_spelling"
CACHE_FORMAT = 1


class Spelling(TypedDict):
    """PostgreSQL's spelling of a schema, as the cache file holds it (JSON: the tuples are arrays)."""

    columns: list[tuple[str, bool, str | None]]  # type, nullable, default of every column, in the models' order
    checks: dict[str, list[tuple[str, str]]]  # table -> name and definition of each CHECK
    enums: dict[str, list[str]]  # type name -> labels in order


async def spell(connection: asyncpg.Connection, expected: Schema) -> Schema:
    """`expected` with PostgreSQL's spelling; call inside a transaction the caller rolls back."""
    cache = _cache_file(expected, connection.get_server_version())
    cached = _load(cache)
    if cached is not None:  # else no cache yet
        try:
            return _respelled(expected, cached)
        except (TypeError, KeyError, ValueError):
            pass  # not a cache this code wrote
    await connection.execute(_spelling_ddl(expected))
    temporary = await read_catalog(connection, temporary=True, ignore=())
    spelled = Spelling(
        columns=[(c.type, c.nullable, c.default) for c in temporary.tables[SPELLING_TABLE].columns],
        checks={name: [(c.name, c.definition) for c in table.checks] for name, table in temporary.tables.items()},
        enums={name: list(labels) for name, labels in temporary.enums.items()},
    )
    _store(cache, spelled)
    return _respelled(expected, spelled)


def _spelling_ddl(expected: Schema) -> str:
    """Every column in one wide table (creating tables, and their TOAST tables, is what costs, not
    columns); each model's CHECKs on a table of the model's name holding just the columns they read,
    so they deparse exactly as on the live table. Keys and indexes need no spelling: they compare
    by name and columns."""
    columns = [column for table in expected.tables.values() for column in table.columns]
    wide = Table(SPELLING_TABLE, tuple(replace(column, name=f"c{n}") for n, column in enumerate(columns)))
    check_tables = {
        name: Table(name, tuple(c for c in table.columns if c.name in _identifiers(table.checks)), checks=table.checks)
        for name, table in expected.tables.items()
        if table.checks
    }
    return Schema({SPELLING_TABLE: wide, **check_tables}, expected.enums).ddl(schema="pg_temp")


def _respelled(expected: Schema, spelled: Spelling) -> Schema:
    if len(spelled["columns"]) != sum(len(table.columns) for table in expected.tables.values()):
        raise ValueError("the spelling is not of these models")
    columns = iter(spelled["columns"])
    tables = {
        name: replace(
            table,
            columns=tuple(Column(column.name, *next(columns)) for column in table.columns),
            checks=tuple(Check(*check) for check in spelled["checks"].get(name, ())),
        )
        for name, table in expected.tables.items()
    }
    return Schema(tables, {name: tuple(labels) for name, labels in spelled["enums"].items()})


def _identifiers(checks: Iterable[Check]) -> set[str]:
    return {word for check in checks for word in re.findall(r"[a-z_][a-z0-9_]*", check.definition.lower())}


def _cache_file(expected: Schema, server_version: ServerVersion) -> Path:
    root = os.environ.get("LANGLEARN_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "langlearn-data"
    key = hashlib.sha256(repr((CACHE_FORMAT, expected, tuple(server_version))).encode()).hexdigest()[:32]
    return Path(root) / f"schema-spelling-{key}.json"


def _load(path: Path) -> Spelling | None:
    """The cached spelling, if the file exists and holds JSON (`_respelled` finds out whether it is a spelling)."""
    try:
        spelled: Spelling = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return spelled


def _store(path: Path, spelled: Spelling) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(spelled))
        temporary.replace(path)  # atomic: a concurrent reader sees the whole file or none
    except OSError as error:
        log.debug("schema spelling not cached (%s)", error)
