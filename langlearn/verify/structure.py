"""One description of a database schema, whichever side it comes from.

`expected_schema()` fills it from the models (SQL as the models write it); `read_catalog()` fills
it from PostgreSQL's catalog (SQL as PostgreSQL deparses it). The same description also renders
itself as DDL, which is how the expected side gets PostgreSQL's canonical spelling: create it in
`pg_temp`, read it back, roll back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def qualified(table: str, schema: str | None = None) -> str:
    return f"{schema}.{quote(table)}" if schema else quote(table)


def column_list(columns: tuple[str, ...]) -> str:
    """Columns for DDL; an index element that is an expression (as the catalog renders it) stays as is."""
    return ", ".join(quote(column) if IDENTIFIER.match(column) else column for column in columns)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    default: str | None = None

    def sql(self) -> str:
        not_null = "" if self.nullable else " NOT NULL"
        default = "" if self.default is None else f" DEFAULT {self.default}"
        return f"{quote(self.name)} {self.type}{not_null}{default}"


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    target: str
    target_columns: tuple[str, ...]
    on_delete: str  # CASCADE, SET NULL, SET DEFAULT, RESTRICT or NO ACTION

    def reference_sql(self, schema: str | None = None) -> str:
        return (
            f"FOREIGN KEY ({column_list(self.columns)}) REFERENCES {qualified(self.target, schema)} "
            f"({column_list(self.target_columns)}) ON DELETE {self.on_delete}"
        )

    def add_sql(self, table: str, schema: str | None = None) -> str:
        return f"ALTER TABLE {qualified(table, schema)} ADD CONSTRAINT {quote(self.name)} {self.reference_sql(schema)}"


@dataclass(frozen=True)
class Index:
    """A plain index, a unique index or a UNIQUE constraint (`constraint`: how the models create it;
    either form satisfies a unique rule, so comparisons ignore it)."""

    name: str
    columns: tuple[str, ...]
    unique: bool = False
    method: str = "btree"
    predicate: str | None = None
    constraint: bool = False

    @property
    def shape(self) -> tuple[tuple[str, ...], bool, str, str | None]:
        """What makes two indexes interchangeable: everything but the name and how it was created."""
        return (self.columns, self.unique, self.method, self.predicate)

    def describe(self) -> str:
        kind = "a unique index" if self.unique else "an index"
        method = "" if self.method == "btree" else f" using {self.method}"
        where = f" where {self.predicate}" if self.predicate else ""
        return f"{kind} on ({', '.join(self.columns)}){method}{where}"

    def create_sql(self, table: str, schema: str | None = None) -> str:
        if self.constraint and self.unique and self.predicate is None:
            return f"ALTER TABLE {qualified(table, schema)} ADD CONSTRAINT {quote(self.name)} UNIQUE ({column_list(self.columns)})"
        unique = "UNIQUE " if self.unique else ""
        where = f" WHERE {self.predicate}" if self.predicate else ""
        return (
            f"CREATE {unique}INDEX {quote(self.name)} ON {qualified(table, schema)} "
            f"USING {self.method} ({column_list(self.columns)}){where}"
        )


@dataclass(frozen=True)
class Check:
    name: str
    definition: str  # "CHECK (...)"

    def add_sql(self, table: str, schema: str | None = None) -> str:
        return f"ALTER TABLE {qualified(table, schema)} ADD CONSTRAINT {quote(self.name)} {self.definition}"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    indexes: tuple[Index, ...] = ()  # every index and UNIQUE constraint except the primary key's
    checks: tuple[Check, ...] = ()
    partition_key: str | None = None  # a partitioned table's key as PostgreSQL spells it: "RANGE (created_at)"

    def create_sql(self, schema: str | None = None) -> str:
        """CREATE TABLE with columns, primary key and CHECKs; indexes and foreign keys come after all tables."""
        parts = [column.sql() for column in self.columns]
        if self.primary_key:
            parts.append(f"PRIMARY KEY ({column_list(self.primary_key)})")
        parts += [f"CONSTRAINT {quote(check.name)} {check.definition}" for check in self.checks]
        return f"CREATE TABLE {qualified(self.name, schema)} ({', '.join(parts)})"


@dataclass(frozen=True)
class Schema:
    tables: dict[str, Table]
    enums: dict[str, tuple[str, ...]]  # type name -> labels in order

    def ddl(self, schema: str | None = None) -> str:
        """Every object of this schema as one script (enum types, tables, indexes, foreign keys)."""
        statements = [
            f"CREATE TYPE {qualified(name, schema)} AS ENUM ({', '.join(map(literal, labels))})"
            for name, labels in self.enums.items()
        ]
        statements += [table.create_sql(schema) for table in self.tables.values()]
        for table in self.tables.values():
            statements += [index.create_sql(table.name, schema) for index in table.indexes]
            statements += [key.add_sql(table.name, schema) for key in table.foreign_keys]
        return ";\n".join(statements) + ";"
