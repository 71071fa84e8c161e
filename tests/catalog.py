"""A normalised snapshot of everything a migration can create in the `public` schema.

Two snapshots are equal exactly when the schemas are: tables, columns (type, nullability,
default, position-independent), constraints and indexes (by name, with PostgreSQL's own
definition text), enum types with their labels in order, sequences, functions and views.
Rows are not part of it; Aerich's bookkeeping table is reported apart as `aerich`.
"""

from __future__ import annotations

import asyncpg

AERICH = {"aerich", "aerich_id_seq", "aerich_pkey", "aerich_checksums", "aerich_checksums_pkey"}  # with langlearn's digests beside it

QUERIES = {
    "columns": """
        SELECT c.relname AS owner, a.attname AS name,
               format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
               || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') AS definition
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "constraints": """
        SELECT c.relname AS owner, k.conname AS name, pg_get_constraintdef(k.oid) AS definition
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'
    """,
    "indexes": """
        SELECT tablename AS owner, indexname AS name, indexdef AS definition FROM pg_indexes WHERE schemaname = 'public'
    """,
    "types": """
        SELECT t.typname AS owner, t.typname AS name,
               coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
                        t.typtype::text) AS definition
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)
    """,
    "relations": """
        SELECT c.relname AS owner, c.relname AS name, c.relkind::text AS definition
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
    """,
    "functions": """
        SELECT p.proname AS owner, p.proname AS name, pg_get_function_identity_arguments(p.oid) AS definition
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
    """,
}


async def snapshot(connection: asyncpg.Connection, *, include_aerich: bool = False) -> dict[str, dict[tuple[str, str], str]]:
    """Every object of the `public` schema, keyed by kind, then (owner, name)."""
    result = {}
    for kind, query in QUERIES.items():
        rows = await connection.fetch(query)
        result[kind] = {
            (row["owner"], row["name"]): row["definition"]
            for row in rows
            if include_aerich or (row["owner"] not in AERICH and row["name"] not in AERICH)
        }
    return result


def describe_difference(before: dict, after: dict) -> str:
    """A readable list of what differs between two snapshots (empty when equal)."""
    lines = []
    for kind in QUERIES:
        old, new = before.get(kind, {}), after.get(kind, {})
        for key in sorted(old.keys() - new.keys()):
            lines.append(f"{kind}: lost {key}: {old[key]}")
        for key in sorted(new.keys() - old.keys()):
            lines.append(f"{kind}: gained {key}: {new[key]}")
        for key in sorted(old.keys() & new.keys()):
            if old[key] != new[key]:
                lines.append(f"{kind}: changed {key}: {old[key]!r} -> {new[key]!r}")
    return "\n".join(lines)
