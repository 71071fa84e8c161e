"""Generate docs/schema.md from the models: the schema reference is never kept by hand.

The tables, columns, CHECKs, indexes, foreign keys and enum types come from
`langlearn.verify.expected_schema()` (the very description `langlearn verify` compares a live
database with); the prose comes from the model classes of `langlearn.models` (their docstrings and
field descriptions). The output is deterministic: tables, enum types, constraints and indexes
sorted by name, columns in the models' order.

The page opens with Mermaid `erDiagram`s (GitHub and most Markdown viewers draw them): the whole schema,
then one per domain (a module of `langlearn.models`), each table with its keys and enum columns, and each
foreign key as a line labelled with its columns and ON DELETE. A table another domain owns appears there
as its key only. Columns that are neither keys nor enums are left to the tables below: with them the whole
diagram is too large to read.

    python scripts/schema_doc.py            # write docs/schema.md
    python scripts/schema_doc.py --check    # exit 1 (one line) when docs/schema.md is stale

tests/test_docs.py fails when the page is stale, so a model change and its page land together.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langlearn.verify import expected_schema
from langlearn.verify.structure import Schema, Table

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "schema.md"
COMMAND = "python scripts/schema_doc.py"


@dataclass(frozen=True)
class ModelInfo:
    """What the model class that declares a table says about it."""

    name: str
    module: str
    source: str | None  # the module's file, relative to the repo root, when it lives in this checkout
    doc: str
    descriptions: dict[str, str]  # column -> field description


def model_infos() -> dict[str, ModelInfo]:
    """Each table's model class, registered the way Tortoise resolves them (no connection needed)."""
    from tortoise import Tortoise
    from tortoise.context import TortoiseContext

    from langlearn.settings import APP_LABEL, MODELS_MODULE

    with TortoiseContext():  # as expected_schema() does: a context of its own, left at once
        models = Tortoise.init_app(APP_LABEL, [MODELS_MODULE])
    infos = {}
    for model in models.values():
        meta = model._meta
        descriptions: dict[str, str] = {}
        for field_name, column in meta.fields_db_projection.items():
            description = _description(meta.fields_map[field_name])
            if description:
                descriptions[column] = description
        for relation_name in meta.fk_fields | meta.o2o_fields:  # a description given on the relation names its *_id column
            relation = meta.fields_map[relation_name]
            description = _description(relation)
            source: str = relation.source_field or f"{relation_name}_id"
            column = meta.fields_db_projection.get(source, source)
            if description and column not in descriptions:
                descriptions[column] = description
        infos[meta.db_table] = ModelInfo(
            name=model.__name__,
            module=model.__module__,
            source=_source(model),
            doc=inspect.cleandoc(model.__doc__ or ""),
            descriptions=descriptions,
        )
    return infos


def _description(field: Any) -> str:
    description = " ".join((field.description or "").split())
    enum = getattr(field, "enum_type", None)
    if enum is not None and hasattr(enum, "pg_type"):
        # NativeEnumField's automatic description repeats the labels the enum section lists
        if description == f"{enum.pg_type}: {', '.join(member.value for member in enum)}":
            return ""
    return description


def _source(model: type) -> str | None:
    try:
        path = Path(inspect.getfile(model)).resolve()
        return path.relative_to(ROOT).as_posix()
    except (TypeError, ValueError):
        return None


def cell(text: str) -> str:
    """Text made safe for one cell of a markdown table."""
    return " ".join(text.split()).replace("|", "\\|")


def code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"`` {text} ``"


def mermaid_type(column_type: str) -> str:
    """A column type as Mermaid accepts it: one word (`VARCHAR(255)` -> `VARCHAR`, `"rarity"` -> `rarity`)."""
    word = re.sub(r"\(.*\)", "", column_type).strip().strip('"')
    return re.sub(r"\W+", "_", word)


def erdiagram(tables: list[Table], schema: Schema) -> list[str]:
    """A Mermaid erDiagram of `tables` (keys and enum columns) and their foreign keys; the tables they
    reference from elsewhere appear with their primary key only."""
    shown = {table.name for table in tables}
    referenced = sorted({key.target for table in tables for key in table.foreign_keys} - shown)
    enum_types = {f'"{name}"' for name in schema.enums}
    # left to right: top to bottom, the fan-out of `users` is pages wide
    lines = ["```mermaid", "erDiagram", "    direction LR"]
    for table in tables + [schema.tables[name] for name in referenced]:
        outside = table.name not in shown
        foreign = {column for key in table.foreign_keys for column in key.columns}
        unique = {index.columns[0] for index in table.indexes if index.unique and len(index.columns) == 1 and not index.predicate}
        attributes = []
        for column in table.columns:
            keys = [label for label, member in (("PK", table.primary_key), ("FK", foreign), ("UK", unique)) if column.name in member]
            if outside and column.name not in table.primary_key:
                continue
            if not keys and column.type not in enum_types:
                continue
            comment = ' "enum"' if column.type in enum_types else ""
            attributes.append(f"        {mermaid_type(column.type)} {column.name}{' ' + ', '.join(keys) if keys else ''}{comment}")
        lines += [f"    {table.name} {{", *attributes, "    }"]
    for table in tables:
        nullable = {column.name for column in table.columns if column.nullable}
        unique_sets = {index.columns for index in table.indexes if index.unique and not index.predicate} | {table.primary_key}
        for key in sorted(table.foreign_keys, key=lambda key: key.name):
            parent = "|o" if set(key.columns) & nullable else "||"
            child = "o|" if key.columns in unique_sets else "o{"
            lines.append(f'    {key.target} {parent}--{child} {table.name} : "{", ".join(key.columns)} ON DELETE {key.on_delete}"')
    return lines + ["```"]


def diagrams(tables: list[Table], schema: Schema, infos: dict[str, ModelInfo]) -> list[str]:
    """The whole schema's diagram, then one per domain."""
    lines = ["## Diagrams", "", "The whole schema: keys, enum columns and foreign keys (labelled with their columns and ON DELETE).", ""]
    lines += erdiagram(tables, schema)
    domains: dict[str, list[Table]] = {}
    for table in tables:
        info = infos.get(table.name)
        domains.setdefault(info.module.rsplit(".", 1)[-1] if info else "other", []).append(table)
    for domain, members in sorted(domains.items()):
        lines += ["", f"### Domain: {domain}", ""]
        lines += erdiagram(members, schema)
    return lines


def render() -> str:
    """docs/schema.md, as the models describe the schema now."""
    schema = expected_schema()
    infos = model_infos()
    tables = sorted(schema.tables.values(), key=lambda table: table.name)
    enums = sorted(schema.enums.items())
    enum_types = {f'"{name}"': name for name, _ in enums}

    lines = [
        "# The schema, as the models declare it",
        "",
        f"<!-- Generated by `{COMMAND}` from the models; do not edit by hand. -->",
        "",
        "This page is generated from the Tortoise models in `langlearn.models` through",
        "`langlearn.verify.expected_schema()`, the same description `langlearn verify` compares a live",
        "database with. It lists what the models declare; the migration history in `migrations/models/`",
        "builds exactly this (the tests check it). The binding specification of the database is",
        "SCHEMA.md in the shared project documents; the models' docstrings record where they chose beyond it.",
        f"After changing a model, run `{COMMAND}` (a test fails while this page is stale).",
        "",
        "Types are spelled as the models write them (`INT` is `integer`, `BOOL` is `boolean`,",
        "`TIMESTAMPTZ` is `timestamp with time zone`); defaults are the database's `DEFAULT`s.",
        "",
        f"{len(tables)} tables, {len(enums)} enum types.",
        "",
        *diagrams(tables, schema, infos),
        "",
        "## Tables",
        "",
        "| table | model | module |",
        "|---|---|---|",
    ]
    for table in tables:
        info = infos.get(table.name)
        model = code(info.name) if info else ""
        module = code(info.module) if info else ""
        if info and info.source:
            module = f"[{module}](../{info.source})"
        lines.append(f"| [{code(table.name)}](#{table.name}) | {model} | {module} |")

    lines += ["", "## Enum types", "", "Native PostgreSQL `ENUM` types; the labels are the Python enums' values, in order.", ""]
    lines += ["| type | labels | used by |", "|---|---|---|"]
    for name, labels in enums:
        used_by = sorted(
            f"{table.name}.{column.name}" for table in tables for column in table.columns if column.type == f'"{name}"'
        )
        lines.append(f"| {code(name)} | {', '.join(labels)} | {', '.join(code(use) for use in used_by)} |")

    for table in tables:
        lines += ["", f"## {table.name}", ""]
        info = infos.get(table.name)
        if info:
            where = f"[{code(info.module)}](../{info.source})" if info.source else code(info.module)
            lines.append(f"Declared by {code(info.name)} in {where}.")
            if info.doc:
                lines.append("")
                lines += [f"> {line}".rstrip() for line in info.doc.splitlines()]
            lines.append("")
        descriptions = info.descriptions if info else {}

        lines += ["| column | type | null | default | notes |", "|---|---|---|---|---|"]
        for column in table.columns:
            if column.type in enum_types:
                type_ = f"[{code(enum_types[column.type])}](#enum-types)"
            else:
                type_ = code(column.type)
            notes = ["primary key"] if column.name in table.primary_key else []
            notes += [f"→ {code(key.target)} ON DELETE {key.on_delete}" for key in table.foreign_keys if key.columns == (column.name,)]
            if column.name in descriptions:
                notes.append(descriptions[column.name])
            default = code(column.default) if column.default is not None else ""
            lines.append(
                f"| {code(column.name)} | {type_} | {'yes' if column.nullable else 'no'} | {cell(default)} | {cell('; '.join(notes))} |"
            )

        if table.checks:
            lines += ["", "**Checks**", "", "| name | definition |", "|---|---|"]
            for check in sorted(table.checks, key=lambda check: check.name):
                lines.append(f"| {code(check.name)} | {cell(code(check.definition))} |")

        if table.indexes:
            lines += ["", "**Indexes and unique constraints**", "", "| name | columns | kind |", "|---|---|---|"]
            for index in sorted(table.indexes, key=lambda index: index.name):
                kind = "UNIQUE constraint" if index.constraint else "unique index" if index.unique else "index"
                if index.method != "btree":
                    kind += f" using {index.method}"
                if index.predicate:
                    kind += f" where {code(index.predicate)}"
                lines.append(f"| {code(index.name)} | {cell(', '.join(index.columns))} | {cell(kind)} |")

        if table.foreign_keys:
            lines += ["", "**Foreign keys**", "", "| name | column | references | ON DELETE |", "|---|---|---|---|"]
            for key in sorted(table.foreign_keys, key=lambda key: key.name):
                target = f"[{code(key.target)}](#{key.target}) ({', '.join(key.target_columns)})"
                lines.append(f"| {code(key.name)} | {', '.join(key.columns)} | {target} | {key.on_delete} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/schema.md from the models.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when docs/schema.md is not what the models generate")
    args = parser.parse_args(argv)
    text = render()
    shown = OUTPUT.relative_to(ROOT) if OUTPUT.is_relative_to(ROOT) else OUTPUT
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else None
        if current != text:
            state = "missing" if current is None else "stale (the models changed)"
            print(f"error: {shown} is {state}; run `{COMMAND}` and commit the result", file=sys.stderr)
            return 1
        print(f"{shown} is up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    if OUTPUT.exists() and OUTPUT.read_text(encoding="utf-8") == text:
        print(f"{shown} is up to date")
    else:
        OUTPUT.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
