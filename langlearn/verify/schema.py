"""Compare the live schema with the one the models describe.

Defaults and CHECK expressions cannot be compared as the models write them: PostgreSQL stores
`CHECK (week_end = week_start + 6)` as `CHECK ((week_end = (week_start + 6)))` and `'vi'` as
`'vi'::character varying`. So PostgreSQL spells the models' side itself (`langlearn.verify.spelling`), and
both sides are read with the same catalog query: at most six statements (begin, two catalog reads,
one DDL script, rollback, and the query for INVALID indexes, NOT VALID constraints and partitions
lacking an index of their table) whatever the number of tables, four when the spelling is cached,
plus the partitions' reads (`langlearn.verify.partitions`: missing months, rows in a DEFAULT
partition, a detach left pending) and two for whose the other tables are (`langlearn.verify.ownership`:
whether there is an `aerich` table, and the apps it records), and nothing left behind in the caller's session (inside a caller's
transaction, the begin and rollback are a savepoint's). A partitioned table is compared as one table
(its partition key too); its partitions are its storage, never extra tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import asyncpg

from langlearn.settings import MIGRATIONS_LOCATION
from langlearn.verify.catalog import read_catalog
from langlearn.verify.expected import AppModules, expected_schema
from langlearn.verify.findings import Finding, error, warning
from langlearn.verify.ownership import formerly_ours, table_owners, unclaimed_table
from langlearn.verify.partitions import check_partitions
from langlearn.verify.spelling import spell
from langlearn.verify.structure import Column, Schema, Table, literal, quote

CHECK = "schema"
MIGRATE = "fix it in a migration"


async def check_schema(
    connection: asyncpg.Connection, *, apps: AppModules | None = None, ignore: Sequence[str] = (), location: str = MIGRATIONS_LOCATION,
) -> list[Finding]:
    """Findings for every difference between the live schema and the models (needs TEMP privilege).

    `apps` are a service's own apps (label -> model modules): their tables are compared with their models too.
    Tables another app's Aerich history records, and those matching `ignore`, are left alone; any other table no
    model has is reported as unclaimed (langlearn.verify.ownership; `location`: this package's history, which
    says whether the table was once the package's)."""
    expected = expected_schema(apps)
    owners = await table_owners(connection, apps, ignore)
    transaction = connection.transaction()
    await transaction.start()
    try:
        # read the live side first: the temporary enum types shadow the live ones by name
        live = await read_catalog(connection)
        spelled = await spell(connection, expected)
    finally:
        await transaction.rollback()
    checked = {name: table for name, table in live.tables.items() if name in expected.tables or not owners.leaves_alone(name)}
    findings = compare(spelled, replace(live, tables=checked))
    unclaimed = sorted(checked.keys() - expected.tables.keys())
    if unclaimed:
        history = formerly_ours(location)
        findings = sorted([*findings, *(unclaimed_table(name, history) for name in unclaimed)], key=_order)
    return findings + await _unfinished(connection, frozenset(live.tables.keys() - checked.keys())) + await check_partitions(connection)


# What an interrupted online migration leaves: an index a failed CREATE INDEX CONCURRENTLY marked
# INVALID, a constraint added NOT VALID whose VALIDATE never ran. The catalog comparison cannot see
# either (the definitions are right), yet the first is never used and the second checks no old row.
# And a partition lacking one of its table's indexes (an index built partition by partition, CREATE
# INDEX ON ONLY the table then ATTACH each partition's, stopped part-way): the catalog comparison reads
# a partitioned table as one, yet reads of that partition scan it.
UNFINISHED = """
    SELECT 'invalid_index' AS kind, c.relname AS name, t.relname AS table_name
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
    WHERE NOT i.indisvalid AND t.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT 'unvalidated_constraint', k.conname, t.relname
    FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
    WHERE NOT k.convalidated AND t.relnamespace = current_schema()::regnamespace
    UNION ALL
    SELECT 'partition_index_missing', parent_index.relname || ' ' || part.relname, parent.relname
    FROM pg_class parent
    JOIN pg_index x ON x.indrelid = parent.oid JOIN pg_class parent_index ON parent_index.oid = x.indexrelid
    JOIN pg_inherits p ON p.inhparent = parent.oid JOIN pg_class part ON part.oid = p.inhrelid
    WHERE parent.relkind = 'p' AND parent.relnamespace = current_schema()::regnamespace
      AND NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_index px ON px.indexrelid = i.inhrelid
                      WHERE i.inhparent = x.indexrelid AND px.indrelid = part.oid)
    ORDER BY 3, 2
"""


async def _unfinished(connection: asyncpg.Connection, left_alone: frozenset[str]) -> list[Finding]:
    findings = []
    for row in await connection.fetch(UNFINISHED):
        table, name = row["table_name"], row["name"]
        if table in left_alone:
            continue
        if row["kind"] == "partition_index_missing":
            index, partition = name.split(" ")
            findings.append(error(
                CHECK, "partition_index_missing", f"{partition}.{index}",
                f"partition {partition} of {table} has no index attached to {index} (a build partition by partition stopped part-way?), "
                f"so the reads {index} serves scan that partition, and {index} stays INVALID; build it "
                f"(CREATE INDEX CONCURRENTLY ON {quote(partition)} with {index}'s columns), then ALTER INDEX {quote(index)} ATTACH PARTITION it",
                table=table, partition=partition,
            ))
        elif row["kind"] == "invalid_index":
            findings.append(error(
                CHECK, "invalid_index", f"{table}.{name}",
                f"index {name} on {table} is INVALID (a CREATE INDEX CONCURRENTLY failed part-way): no query uses it, yet every "
                f"write maintains it; run `langlearn upgrade` again if its migration is pending, otherwise drop it "
                f"(DROP INDEX CONCURRENTLY {quote(name)}) and run the CREATE INDEX CONCURRENTLY of its migration again",
            ))
        else:
            findings.append(error(
                CHECK, "unvalidated_constraint", f"{table}.{name}",
                f"constraint {name} on {table} was added NOT VALID and never validated, so the rows from before it are unchecked; "
                f"run ALTER TABLE {quote(table)} VALIDATE CONSTRAINT {quote(name)} (it blocks no reads or writes)",
            ))
    return findings


def compare(expected: Schema, live: Schema) -> list[Finding]:
    """The differences between two schemas read from the catalog, `expected` being the models' (tables of
    `live` that `expected` lacks are not compared)."""
    findings = _compare_enums(expected.enums, live.enums)
    for name, table in expected.tables.items():
        if name in live.tables:
            findings += _compare_table(table, live.tables[name])
        else:
            findings.append(error(
                CHECK, "missing_table", name,
                f"table {name} is missing; run `aerich upgrade` if migrations are pending, "
                f"otherwise generate the migration that creates it (`aerich migrate --name add_{name}`)",
            ))
    return sorted(findings, key=_order)  # a live table no model has: check_schema asks whose it is


def _order(finding: Finding) -> tuple[str, str, str]:
    return finding.severity.value, finding.subject, finding.kind


def _compare_enums(expected: dict[str, tuple[str, ...]], live: dict[str, tuple[str, ...]]) -> list[Finding]:
    findings = []
    for name, labels in expected.items():
        if name not in live:
            findings.append(error(
                CHECK, "missing_enum_type", name,
                f"enum type {name} is missing; {MIGRATE}: CREATE TYPE {quote(name)} AS ENUM ({', '.join(map(literal, labels))})",
                expected=list(labels),
            ))
            continue
        actual = live[name]
        for position, label in enumerate(labels):
            if label not in actual:
                where = f"AFTER {literal(labels[position - 1])}" if position else f"BEFORE {literal(labels[1])}" if len(labels) > 1 else ""
                findings.append(error(
                    CHECK, "missing_enum_label", f"{name}.{label}",
                    f"enum type {name} lacks the label {label!r}, so the ORM's inserts of it fail; "
                    f"{MIGRATE}: ALTER TYPE {quote(name)} ADD VALUE {literal(label)} {where}".rstrip(),
                    expected=list(labels), actual=list(actual),
                ))
        for label in actual:
            if label not in labels:
                findings.append(warning(
                    CHECK, "extra_enum_label", f"{name}.{label}",
                    f"enum type {name} has the label {label!r}, which the model's enum lacks; add it to the enum, "
                    f"or recreate the type without it once no row uses it (PostgreSQL cannot drop a label)",
                    expected=list(labels), actual=list(actual),
                ))
        common_expected = [label for label in labels if label in actual]
        common_actual = [label for label in actual if label in labels]
        if common_expected != common_actual:
            findings.append(error(
                CHECK, "enum_order_differs", name,
                f"enum type {name} orders its labels {', '.join(common_actual)}, the model {', '.join(common_expected)}; "
                f"comparisons and sorting follow this order: recreate the type in the model's order",
                expected=list(labels), actual=list(actual),
            ))
    for name in live.keys() - expected.keys():
        findings.append(warning(
            CHECK, "extra_enum_type", name,
            f"enum type {name} is not used by any model; drop it (DROP TYPE {quote(name)}) if nothing uses it",
            actual=list(live[name]),
        ))
    return findings


def _compare_table(expected: Table, live: Table) -> list[Finding]:
    table = expected.name
    findings = []
    live_columns = {column.name: column for column in live.columns}
    for column in expected.columns:
        if column.name in live_columns:
            findings += _compare_column(table, column, live_columns[column.name])
        else:
            findings.append(error(
                CHECK, "missing_column", f"{table}.{column.name}",
                f"column {table}.{column.name} ({column.type}) is missing; {MIGRATE}: ALTER TABLE {quote(table)} ADD COLUMN {column.sql()}",
                expected=column.sql(),
            ))
    expected_names = {column.name for column in expected.columns}
    for column in live.columns:
        if column.name not in expected_names:
            findings.append(warning(
                CHECK, "extra_column", f"{table}.{column.name}",
                f"column {table}.{column.name} ({column.type}) is not in the model; drop it "
                f"(ALTER TABLE {quote(table)} DROP COLUMN {quote(column.name)}) or add the field to the model",
                actual=column.sql(),
            ))

    if expected.partition_key != live.partition_key:
        findings.append(error(
            CHECK, "partitioning_differs", table,
            f"{table} is {_partitioning(live.partition_key)}, the model says it is {_partitioning(expected.partition_key)}; "
            f"run `langlearn upgrade` if migrations are pending, otherwise {MIGRATE} (see migration 13, partition_history_by_month)",
            expected=expected.partition_key, actual=live.partition_key,
        ))

    if expected.primary_key != live.primary_key:
        findings.append(error(
            CHECK, "primary_key_differs", f"{table}.{table}_pkey",
            f"the primary key of {table} is ({', '.join(live.primary_key) or 'none'}), the model says ({', '.join(expected.primary_key)}); "
            f"{MIGRATE}: ALTER TABLE {quote(table)} ADD PRIMARY KEY ({', '.join(map(quote, expected.primary_key))}) after dropping the old one",
            expected=list(expected.primary_key), actual=list(live.primary_key),
        ))

    findings += _compare_foreign_keys(expected, live)
    findings += _compare_indexes(expected, live)

    live_checks = {check.name: check for check in live.checks}
    for check in expected.checks:
        subject = f"{table}.{check.name}"
        actual = live_checks.get(check.name)
        if actual is None:
            findings.append(error(
                CHECK, "missing_check", subject,
                f"CHECK {check.name} on {table} is missing, so rows breaking {check.definition[6:]} are accepted; "
                f"{MIGRATE} (Aerich ignores Meta.constraints): {check.add_sql(table)}",
                expected=check.definition,
            ))
        elif actual.definition != check.definition:
            findings.append(error(
                CHECK, "check_differs", subject,
                f"CHECK {check.name} on {table} is {actual.definition}, the model says {check.definition}; "
                f"{MIGRATE}: ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(check.name)}, ADD CONSTRAINT {quote(check.name)} {check.definition}",
                expected=check.definition, actual=actual.definition,
            ))
    expected_checks = {check.name for check in expected.checks}
    for check in live.checks:
        if check.name not in expected_checks:
            findings.append(warning(
                CHECK, "extra_check", f"{table}.{check.name}",
                f"CHECK {check.name} on {table} ({check.definition}) is not in the model; add it to Meta.constraints "
                f"or drop it (ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(check.name)})",
                actual=check.definition,
            ))
    return findings


def _partitioning(key: str | None) -> str:
    return f"partitioned by {key}" if key else "a plain table"


def _compare_column(table: str, expected: Column, live: Column) -> list[Finding]:
    findings = []
    subject = f"{table}.{expected.name}"
    alter = f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(expected.name)}"
    if live.type != expected.type:
        findings.append(error(
            CHECK, "type_differs", subject,
            f"column {subject} is {live.type}, the model says {expected.type}; "
            f"{MIGRATE}: {alter} TYPE {expected.type} USING {quote(expected.name)}::{expected.type}",
            expected=expected.type, actual=live.type,
        ))
    if live.nullable != expected.nullable:
        if expected.nullable:
            message = f"column {subject} is NOT NULL, the model allows NULL; {MIGRATE}: {alter} DROP NOT NULL"
        else:
            message = f"column {subject} allows NULL, the model says NOT NULL; fill its NULLs, then {MIGRATE}: {alter} SET NOT NULL"
        findings.append(error(
            CHECK, "nullability_differs", subject, message, expected_nullable=expected.nullable, actual_nullable=live.nullable
        ))
    if not _same_default(expected, live):
        if expected.default is None:
            fix = f"{alter} DROP DEFAULT"
        else:
            fix = f"{alter} SET DEFAULT {expected.default}"
        findings.append(error(
            CHECK, "default_differs", subject,
            f"column {subject} {_describe_default(live.default)}, the model {_describe_default(expected.default, model=True)}; "
            f"{MIGRATE}: {fix}",
            expected=expected.default, actual=live.default,
        ))
    return findings


def _describe_default(default: str | None, *, model: bool = False) -> str:
    if default is None:
        return "declares no database default" if model else "has no default"
    return f"says DEFAULT {default}" if model else f"defaults to {default}"


SERIAL_DEFAULT = re.compile(r"^nextval\('[^']*_seq'::regclass\)$")


def _same_default(expected: Column, live: Column) -> bool:
    """Equal as PostgreSQL deparses them, or as numbers: a REAL column's `DEFAULT 0` and `DEFAULT 0.0`
    are the same default, though PostgreSQL keeps the literal as it was written."""
    if expected.default == live.default:
        return True
    if expected.default is None or live.default is None:
        return False
    if SERIAL_DEFAULT.match(expected.default) and SERIAL_DEFAULT.match(live.default):
        return True  # a SERIAL column's own sequence: named after the table, so the spelling's temporary copy differs
    try:
        return float(_bare(expected.default, expected.type)) == float(_bare(live.default, live.type))
    except ValueError:
        return False


def _bare(default: str, column_type: str) -> str:
    text = default.strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    text = text.removesuffix(f"::{column_type}")
    return text.strip("'")


def _compare_foreign_keys(expected: Table, live: Table) -> list[Finding]:
    table = expected.name
    findings = []
    unmatched = list(live.foreign_keys)
    for key in expected.foreign_keys:
        subject = f"{table}.{key.name}"
        candidates = [other for other in unmatched if other.columns == key.columns]
        actual = next((other for other in candidates if other.name == key.name), candidates[0] if candidates else None)
        columns = ", ".join(key.columns)
        if actual is None:
            findings.append(error(
                CHECK, "missing_foreign_key", subject,
                f"{table}({columns}) has no foreign key to {key.target}; {MIGRATE}: {key.add_sql(table)}",
                expected=key.reference_sql(),
            ))
            continue
        unmatched.remove(actual)
        recreate = f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(actual.name)}, ADD CONSTRAINT {quote(key.name)} {key.reference_sql()}"
        if (actual.target, actual.target_columns) != (key.target, key.target_columns):
            findings.append(error(
                CHECK, "foreign_key_differs", subject,
                f"foreign key {actual.name} points {table}({columns}) at {actual.target}({', '.join(actual.target_columns)}), "
                f"the model at {key.target}({', '.join(key.target_columns)}); {MIGRATE}: {recreate}",
                expected=key.reference_sql(), actual=actual.reference_sql(),
            ))
        elif actual.on_delete != key.on_delete:
            findings.append(error(
                CHECK, "on_delete_differs", subject,
                f"foreign key {actual.name} is ON DELETE {actual.on_delete}, the model says {key.on_delete}; "
                f"{MIGRATE} (Aerich ignores on_delete changes): {recreate}",
                expected=key.on_delete, actual=actual.on_delete,
            ))
    for key in unmatched:
        findings.append(warning(
            CHECK, "extra_foreign_key", f"{table}.{key.name}",
            f"foreign key {key.name} ({table}({', '.join(key.columns)}) -> {key.target}) is not in the model; "
            f"declare it or drop it (ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(key.name)})",
            actual=key.reference_sql(),
        ))
    return findings


def _compare_indexes(expected: Table, live: Table) -> list[Finding]:
    """Indexes and unique rules by name; a unique rule is met by a UNIQUE constraint or a unique index."""
    table = expected.name
    findings = []
    live_indexes = {index.name: index for index in live.indexes}
    expected_names = {index.name for index in expected.indexes}
    renamed: set[str] = set()
    for index in expected.indexes:
        noun = "unique" if index.unique else "index"
        subject = f"{table}.{index.name}"
        actual = live_indexes.get(index.name)
        if actual is None:
            twin = next(
                (other for other in live.indexes if other.shape == index.shape and other.name not in expected_names), None
            )
            if twin is not None:
                renamed.add(twin.name)
                rename = (
                    f"ALTER TABLE {quote(table)} RENAME CONSTRAINT {quote(twin.name)} TO {quote(index.name)}"
                    if twin.constraint
                    else f"ALTER INDEX {quote(twin.name)} RENAME TO {quote(index.name)}"
                )
                fix = f"the same exists as {twin.name}: {rename}"
            else:
                fix = f"{MIGRATE}: {index.create_sql(table)}"
            findings.append(error(
                CHECK, f"missing_{noun}", subject,
                f"{subject}, {index.describe()}, is missing; {fix}",
                expected=index.describe(),
            ))
        elif actual.shape != index.shape:
            drop = (
                f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(actual.name)}"
                if actual.constraint
                else f"DROP INDEX {quote(actual.name)}"
            )
            findings.append(error(
                CHECK, f"{noun}_differs", subject,
                f"{subject} is {actual.describe()}, the model wants {index.describe()}; "
                f"{MIGRATE}: {drop}; {index.create_sql(table)}",
                expected=index.describe(), actual=actual.describe(),
            ))
    for index in live.indexes:
        if index.name in expected_names or index.name in renamed:
            continue
        drop = (
            f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(index.name)}" if index.constraint else f"DROP INDEX {quote(index.name)}"
        )
        findings.append(warning(
            CHECK, "extra_unique" if index.unique else "extra_index", f"{table}.{index.name}",
            f"{table}.{index.name}, {index.describe()}, is not in the model; declare it in Meta or drop it ({drop})",
            actual=index.describe(),
        ))
    return findings

