"""Index builds and drops on partitioned tables without blocking writes, the same through every runner.

PostgreSQL refuses `CREATE INDEX CONCURRENTLY` and `DROP INDEX CONCURRENTLY` on a partitioned table
(`question_attempts`, `activity_feeds`, docs/scale-out.md), and a plain `CREATE INDEX` on one blocks
its writes for the whole build. Its documented way is partition by partition: the index created `ON ONLY`
the parent (catalog only, invalid), each partition's index built `CONCURRENTLY`, then attached with `ALTER
INDEX … ATTACH PARTITION`; the parent's index turns valid when the last partition's is attached. That list
depends on the partitions a database has, so a migration keeps the one statement it would write for a
plain table, and this module turns it, at run time, into a catalog query whose rows are the statements to
send (`expansion`): `langlearn upgrade`, `aerich upgrade` (both through `runner.run_statements`) and the
psql script (`\\gexec`) send the same rows.

- `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON table …`: on a plain table, the statement as
  written; on a partitioned one, `CREATE INDEX IF NOT EXISTS name ON ONLY table …`, then for every partition
  (a sub-partitioned one gets its own `ON ONLY` index) a `DROP INDEX` of what a failed build left invalid, the
  build `CONCURRENTLY IF NOT EXISTS` as `<partition>_<name>` (cut to 63 bytes with a digest), and the
  attach, skipped where the partition's index is attached already; last, a check that the parent's index is
  valid. A rerun after a failure anywhere picks up where it stopped. A partition created meanwhile (`partitions
  ensure`) gets the index from its `ATTACH PARTITION`, as PostgreSQL builds a partitioned table's indexes there.
- `DROP INDEX CONCURRENTLY [IF EXISTS] name`: on a partitioned index, `DROP INDEX [IF EXISTS] name` (the
  only drop PostgreSQL has for one: catalog only, an ACCESS EXCLUSIVE lock on the parent and its partitions,
  as short as the runner's lock_timeout allows, and tried again like any other lock wait); otherwise as written.
Anything else is sent as written.
"""

from __future__ import annotations

import re

import sqlparse

from langlearn.history.checksums import literal
from langlearn.history.locks import IDENTIFIER, NAME

CREATE_INDEX_CONCURRENTLY = re.compile(
    rf"^CREATE\s+(?P<unique>UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{IDENTIFIER})\s+ON\s+"
    rf"(?P<table>{NAME})\s*(?P<definition>(?:USING\s+\w+\s*)?\(.*)$",
    re.I | re.S,
)
DROP_INDEX_CONCURRENTLY = re.compile(rf"^DROP\s+INDEX\s+CONCURRENTLY\s+(?P<if_exists>IF\s+EXISTS\s+)?(?P<index>{NAME})\s*;?$", re.I | re.S)

# <partition>_<index>, or its first 54 characters and 8 of its md5 when longer than a name may be (63 bytes)
CHILD_NAME = "CASE WHEN octet_length({full}) <= 63 THEN {full} ELSE left({full}, 54) || '_' || left(md5({full}), 8) END"

BUILD = """
WITH root AS (
    SELECT c.oid, c.relkind, n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = to_regclass({table})
), node AS (
    SELECT t.relid, t.isleaf, t.level, c.relname AS partition, n.nspname AS schema,
           CASE WHEN t.parentrelid = root.oid THEN {name} ELSE {parent_child} END AS parent_index,
           {child} AS child
    FROM root, pg_partition_tree(root.oid) t
    JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_class parent ON parent.oid = t.parentrelid
    WHERE root.relkind = 'p' AND t.level > 0
), state AS (
    SELECT node.*,
           (SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(format('%I.%I', node.schema, node.child))) AS child_valid,
           EXISTS (SELECT FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indexrelid
                   WHERE i.indrelid = node.relid AND h.inhparent = to_regclass(format('%I.%I', node.schema, node.parent_index))) AS attached
    FROM node
), statements AS (
    SELECT 0 AS level, '' AS partition, 0 AS part, {statement} AS statement
    FROM (SELECT) AS one LEFT JOIN root ON true WHERE root.relkind IS DISTINCT FROM 'p'  -- no such table: as written, for PostgreSQL's error
    UNION ALL
    SELECT 0, '', 0, 'CREATE {unique}INDEX IF NOT EXISTS ' || quote_ident({name}) || ' ON ONLY ' || {table} || ' ' || {definition}
    FROM root WHERE root.relkind = 'p'
    UNION ALL
    SELECT level, partition, 1, format('DROP INDEX %I.%I', schema, child) FROM state WHERE NOT attached AND isleaf AND NOT child_valid
    UNION ALL
    SELECT level, partition, 2, CASE WHEN isleaf THEN 'CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS ' ELSE 'CREATE {unique}INDEX IF NOT EXISTS ' END
        || quote_ident(child) || ' ON ' || CASE WHEN isleaf THEN '' ELSE 'ONLY ' END || format('%I.%I', schema, partition) || ' ' || {definition}
    FROM state WHERE NOT attached
    UNION ALL
    SELECT level, partition, 3, format('ALTER INDEX %I.%I ATTACH PARTITION %I.%I', schema, parent_index, schema, child) FROM state WHERE NOT attached
    UNION ALL
    SELECT 1000000, '', 0, format(
        'DO $check$ BEGIN IF NOT (SELECT indisvalid FROM pg_index WHERE indexrelid = %L::regclass) THEN RAISE EXCEPTION %L; END IF; END $check$',
        format('%I.%I', nspname, {name}), 'index ' || {name} || ' is still invalid: a partition has no valid index attached; run the migration again')
    FROM root WHERE root.relkind = 'p'
)
SELECT statement FROM statements ORDER BY level, partition, part
"""

DROP = """
SELECT CASE WHEN c.relkind = 'I' THEN 'DROP INDEX {if_exists}' || {index} ELSE {statement} END
FROM (SELECT) AS one LEFT JOIN pg_class c ON c.oid = to_regclass({index})
"""


def catalog_name(identifier: str) -> str:
    """The name PostgreSQL stores for an identifier as written: a quoted one as it is, an unquoted one folded to lower case."""
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier.lower()


def expansion(statement: str, *, in_transaction: bool) -> str | None:
    """The catalog query whose rows are sent instead of `statement` (a concurrent index build or drop, outside a
    transaction), or None when it is sent as written."""
    if in_transaction:  # CONCURRENTLY cannot run there: PostgreSQL's own error says so
        return None
    text = sqlparse.format(statement, strip_comments=True).strip().rstrip(";").strip()
    if match := CREATE_INDEX_CONCURRENTLY.match(text):
        name = literal(catalog_name(match["name"]))
        child = CHILD_NAME.format(full=f"(c.relname || '_' || {name})")
        parent_child = CHILD_NAME.format(full=f"(parent.relname || '_' || {name})")
        return BUILD.format(
            table=literal(match["table"]), name=name, child=child, parent_child=parent_child, statement=literal(statement),
            definition=literal(match["definition"].strip()), unique="UNIQUE " if match["unique"] else "",
        ).strip()
    if match := DROP_INDEX_CONCURRENTLY.match(text):
        return DROP.format(if_exists="IF EXISTS " if match["if_exists"] else "", index=literal(match["index"]), statement=literal(statement)).strip()
    return None
