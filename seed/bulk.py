"""The bulk load of a fresh database, the way pg_restore loads a dump: bare tables first, keys and indexes after.

COPY into a table whose primary key, unique and secondary indexes and foreign-key triggers fire for
every row is the slow way to load millions of rows (random UUID keys land all over large btrees). A
large seed of a fresh database therefore:
(A partitioned table counts as one: its key, indexes and foreign keys are dropped and made again on
the parent, which does each partition's; COPY into the parent routes every row to its month.)

1. `take_off`: in one transaction, reads the definitions of the user tables' primary keys, unique
   constraints, indexes and foreign keys (and of any foreign key that references them) from the catalog
   (`pg_get_constraintdef`, `pg_get_indexdef`: exactly what the migrations made), stores them in
   `seed_runs.deferred`, and drops them. CHECKs, NOT NULLs and defaults stay: every row is still checked.
2. copies the batches into the bare tables (the steps of `run.py`, each a transaction, resumable);
3. `rebuild`: builds the keys and indexes on `REBUILD_CONNECTIONS` connections at once, the largest
   tables first (each statement a transaction of its own, `maintenance_work_mem` raised), then adds the
   foreign keys NOT VALID and validates them (a validation locks neither table against the others', so
   they run side by side too), then clears `seed_runs.deferred`.

Killed at any moment, the database is never without its constraints *and* without a record: `deferred`
lists what is missing until the last statement of the rebuild commits (the verification reports such a
run), and running the seed again finishes the load, then rebuilds only what is not there yet (each
object is looked up by name first, and a statement interrupted mid-way was rolled back with its
transaction). The schema after a bulk seed is the schema before it (tests/test_seed_bulk.py compares
the catalog).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal
from uuid import UUID

import asyncpg

BULK_MIN_USERS = 1000  # below this, the per-row path is as fast, and a small seed keeps today's path
REBUILD_CONNECTIONS = 2  # one per core of the machine it was measured on, as `pg_restore -j 2`
MAINTENANCE_WORK_MEM = "256MB"  # per index build: sorts in memory instead of on disk

Phase = Literal["key", "index", "foreign_key"]  # built in this order: an index may back a foreign key's target
PHASES: tuple[Phase, ...] = ("key", "index", "foreign_key")


@dataclass(frozen=True)
class DeferredObject:
    """A key, index or foreign key taken off for the load: its name, table and the statement that makes it again."""

    phase: Phase
    table: str
    name: str
    create: str

    @property
    def drop(self) -> str:
        if self.phase == "index":
            return f'DROP INDEX "{self.name}"'
        return f'ALTER TABLE "{self.table}" DROP CONSTRAINT "{self.name}"'


# the user tables' own keys and foreign keys, and foreign keys of other tables that reference them; not the
# copies a partition holds of its partitioned table's (conparentid): they go and come back with the parent's
CONSTRAINTS = """
    SELECT c.conname AS name, t.relname AS table, c.contype::text AS type, pg_get_constraintdef(c.oid) AS definition
    FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
    WHERE t.relnamespace = current_schema()::regnamespace AND c.conparentid = 0
      AND ((t.relname = ANY($1::text[]) AND c.contype IN ('p', 'u', 'f'))
           OR (c.contype = 'f' AND c.confrelid IN (SELECT oid FROM pg_class WHERE relname = ANY($1::text[])
                                                   AND relnamespace = current_schema()::regnamespace)))
    ORDER BY t.relname, c.conname
"""
# indexes that back no constraint (those come back with their constraint)
INDEXES = """
    SELECT i.relname AS name, t.relname AS table, pg_get_indexdef(i.oid) AS definition
    FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
    WHERE t.relnamespace = current_schema()::regnamespace AND t.relname = ANY($1::text[])
      AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid AND c.conrelid = x.indrelid
                      AND c.contype IN ('p', 'u', 'x'))
    ORDER BY t.relname, i.relname
"""
# what is there already: None (absent), False (a foreign key added but not validated yet) or True
INDEX_STATE = "SELECT CASE WHEN to_regclass(quote_ident($1)) IS NOT NULL THEN true END"
CONSTRAINT_STATE = "SELECT convalidated FROM pg_constraint WHERE conname = $1 AND conrelid = quote_ident($2)::regclass"


async def take_off(connection: asyncpg.Connection, run_id: UUID, tables: Sequence[str]) -> list[DeferredObject]:
    """Record, then drop, the keys, indexes and foreign keys of `tables`, in one transaction (the caller's own)."""
    deferred = [
        DeferredObject("foreign_key" if row["type"] == "f" else "key", row["table"], row["name"],
                       f'ALTER TABLE "{row["table"]}" ADD CONSTRAINT "{row["name"]}" {row["definition"]}')
        for row in await connection.fetch(CONSTRAINTS, list(tables))
    ] + [
        # a partitioned table's index reads `ON ONLY parent` (the parent's alone); made again, it must cover the partitions
        DeferredObject("index", row["table"], row["name"], row["definition"].replace(" ON ONLY ", " ON ", 1))
        for row in await connection.fetch(INDEXES, list(tables))
    ]
    await connection.execute("UPDATE seed_runs SET deferred = $2::jsonb, updated_at = now() WHERE id = $1",
                             run_id, json.dumps([asdict(each) for each in deferred]))
    # foreign keys first (they depend on the keys they reference), then indexes, then the keys themselves
    for phase in reversed(PHASES):
        for each in deferred:
            if each.phase == phase:
                await connection.execute(each.drop)
    return deferred


def recorded(deferred: str | None) -> list[DeferredObject]:
    """`seed_runs.deferred` as read back (asyncpg returns JSONB as text; NULL once all is rebuilt)."""
    rows: list[dict[str, str]] = json.loads(deferred) if deferred is not None else []
    return [DeferredObject(_phase(row["phase"]), row["table"], row["name"], row["create"]) for row in rows]


def _phase(name: str) -> Phase:
    for phase in PHASES:
        if phase == name:
            return phase
    raise ValueError(f"seed_runs.deferred names an unknown phase {name!r}")


async def rebuild(
    connect: Callable[[], Awaitable[asyncpg.Connection]], connection: asyncpg.Connection, run_id: UUID,
    deferred: Sequence[DeferredObject], *, connections: int = REBUILD_CONNECTIONS,
    built: Callable[[DeferredObject], None] | None = None,
) -> int:
    """Make again what `take_off` dropped and is still missing; clear the record. Returns how many were made.

    Keys and indexes first, on `connections` connections at once, the biggest tables first (so that the
    last builds are short and every connection stays busy to the end); then the foreign keys, likewise.
    """
    sizes = {row["relname"]: row["size"] for row in await connection.fetch(
        "SELECT relname, coalesce((SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree(oid)), pg_relation_size(oid)) AS size FROM pg_class "
        "WHERE relname = ANY($1::text[]) AND relkind IN ('r', 'p') AND relnamespace = current_schema()::regnamespace",
        sorted({each.table for each in deferred}))}
    made = 0
    for phases in (("key", "index"), ("foreign_key",)):
        pending = deque(sorted((each for each in deferred if each.phase in phases),
                               key=lambda each: (-sizes.get(each.table, 0), PHASES.index(each.phase))))
        extra = [await connect() for _ in range(max(0, min(connections, len(pending)) - 1))]
        try:
            made += sum(await asyncio.gather(*(_build(own, pending, built) for own in (connection, *extra))))
        finally:
            for other in extra:
                await other.close()
    await connection.execute("UPDATE seed_runs SET deferred = NULL, updated_at = now() WHERE id = $1", run_id)
    return made


async def _build(own: asyncpg.Connection, pending: deque[DeferredObject], built: Callable[[DeferredObject], None] | None) -> int:
    """Take objects off `pending` (shared by the connections) and make each that is not there yet."""
    count = 0
    while pending:
        each = pending.popleft()
        if each.phase == "index":
            state = await own.fetchval(INDEX_STATE, each.name)
        else:
            state = await own.fetchval(CONSTRAINT_STATE, each.name, each.table)
        if state:
            continue  # made by a run that was killed later
        partitioned = await own.fetchval("SELECT relkind = 'p' FROM pg_class WHERE oid = quote_ident($1)::regclass", each.table)
        for statement in _statements(each, added=state is False, partitioned=partitioned):
            async with own.transaction():
                await own.execute(f"SET LOCAL maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
                await own.execute(statement)
        count += 1
        if built is not None:
            built(each)
    return count


def _statements(each: DeferredObject, *, added: bool, partitioned: bool) -> list[str]:
    """What makes `each` again; a foreign key is added NOT VALID (a brief lock), then validated (a scan that blocks neither table),
    except on a partitioned table, where PostgreSQL (before 18) takes a foreign key only valid, in one statement."""
    if each.phase != "foreign_key" or partitioned:
        return [each.create]
    validate = f'ALTER TABLE "{each.table}" VALIDATE CONSTRAINT "{each.name}"'
    return [validate] if added else [f"{each.create} NOT VALID", validate]
