"""The schema the models describe, read from the model classes themselves (never a hand-kept copy).

Tortoise resolves relations (the `*_id` columns, their targets) only when an app is registered;
`Tortoise.init_app` does that without any connection, and running it inside a `TortoiseContext` of
its own leaves any context the caller has active untouched.

Names follow what the migrations create: PostgreSQL's defaults for inline constraints
(`<table>_pkey`, `<table>_<col>_fkey`, `<table>_<col>_key`), the model's names for everything in
`Meta`; a `UniqueConstraint` named `idx_...` is created as a unique index, any other as a UNIQUE
constraint (either satisfies the rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

from langlearn.compat import index_name, schema_generator
from langlearn.errors import ConfigError
from langlearn.models.base import CompositeForeignKey, ExpressionIndex, MonthlyPartitions
from langlearn.settings import APP_LABEL, MODELS_MODULE
from langlearn.verify.structure import Check, Column, ForeignKey, Index, Schema, Table, literal

if TYPE_CHECKING:
    from tortoise.fields import Field
    from tortoise.fields.relational import ForeignKeyFieldInstance
    from tortoise.models import Model

NAME_LIMIT = 63  # PostgreSQL truncates longer identifiers


# a service's own Tortoise apps: label -> the modules of its models (what `database(apps=...)` lists under "models")
AppModules = Mapping[str, Sequence[str]]


def models_by_app(apps: AppModules | None = None) -> dict[str, list[type[Model]]]:
    """The model classes of this package's app and of `apps`, resolved together (a service's model may
    point a foreign key at `models.User`), in a Tortoise context of their own, left at once (no connection)."""
    from tortoise import Tortoise
    from tortoise.context import TortoiseContext
    from tortoise.exceptions import ConfigurationError

    with TortoiseContext():
        found = {APP_LABEL: list(Tortoise.init_app(APP_LABEL, [MODELS_MODULE]).values())}
        for label, modules in (apps or {}).items():
            if label == APP_LABEL:
                raise ConfigError(f"the app label {APP_LABEL!r} belongs to langlearn's models; register your models under another label")
            try:
                found[label] = list(Tortoise.init_app(label, list(modules)).values())
            except ConfigurationError as error:  # a module that does not import, a model that names a missing one
                raise ConfigError(f"app {label!r}: {error}; check its model modules (and that they import from here)") from None
    return found


def expected_schema(apps: AppModules | None = None) -> Schema:
    """The tables, constraints, indexes and enum types the models need, as the models write them; with
    `apps`, a service's own apps' tables too."""
    from langlearn.models.enums import labels, native_enum, pg_type_name

    models = [model for app in models_by_app(apps).values() for model in app]
    ordered = sorted(models, key=lambda model: model._meta.db_table)
    used_enums = {
        pg_type_name(enum_cls): enum_cls
        for model in ordered
        for field in model._meta.fields_map.values()
        if (enum_cls := native_enum(field)) is not None
    }
    return Schema(
        tables={model._meta.db_table: _table(model) for model in ordered},
        enums={name: tuple(labels(used_enums[name])) for name in sorted(used_enums)},
    )


def _table(model: type[Model]) -> Table:
    generator = schema_generator()  # names the indexes the model leaves unnamed
    meta = model._meta
    table = meta.db_table

    def column_of(field_name: str) -> str:
        field = meta.fields_map.get(field_name)
        return (field.source_field or field_name) if field else field_name

    columns: list[Column] = []
    primary_key: tuple[str, ...] = ()
    indexes: list[Index] = []
    for field_name, column in meta.fields_db_projection.items():
        field = meta.fields_map[field_name]
        sql_type = field.get_for_dialect("postgres", "SQL_TYPE")
        if field.pk and field.generated:  # an integer key Tortoise creates as SERIAL: the type and its sequence's default
            sql_type = field.get_for_dialect("postgres", "GENERATED_SQL").split()[0]
        columns.append(Column(column, sql_type, field.null, _default(field, model)))
        if field.pk:
            primary_key = (column,)
        elif field.unique:
            indexes.append(Index(_name(f"{table}_{column}_key"), (column,), unique=True, constraint=True))
        elif field.index:
            indexes.append(Index(index_name(model, [column]), (column,)))

    for group in meta.unique_together:
        group_columns = tuple(column_of(name) for name in group)
        indexes.append(Index(_name(f"{table}_{'_'.join(group_columns)}_key"), group_columns, unique=True, constraint=True))

    checks: list[Check] = []
    composite_keys: list[ForeignKey] = []
    partition_key: str | None = None
    for constraint in meta.constraints:
        if isinstance(constraint, MonthlyPartitions):
            partition_key = f"RANGE ({constraint.column})"
            primary_key = constraint.primary_key
            continue
        if isinstance(constraint, ExpressionIndex):
            indexes.append(Index(_name(constraint.name), constraint.expressions, unique=constraint.unique))
            continue
        if isinstance(constraint, CompositeForeignKey):
            composite_keys.append(ForeignKey(
                _name(constraint.name), constraint.columns, constraint.target_table, constraint.target_columns, constraint.on_delete
            ))
            continue
        if hasattr(constraint, "check"):
            checks.append(Check(constraint.name, f"CHECK ({constraint.check})"))
            continue
        unique_columns = tuple(column_of(name) for name in constraint.fields)
        name = constraint.name or f"{table}_{'_'.join(unique_columns)}_key"
        as_index = name.startswith("idx_") or constraint.condition is not None
        indexes.append(
            Index(_name(name), unique_columns, unique=True, predicate=constraint.condition, constraint=not as_index)
        )

    for index in meta.indexes:
        if isinstance(index, (tuple, list)):  # Meta.indexes = (("a", "b"),): unnamed
            index_columns = tuple(column_of(name) for name in index)
            indexes.append(Index(index_name(model, list(index_columns)), index_columns))
            continue
        index_columns = tuple(column_of(name) for name in index.field_names)
        extra = index.extra.strip()
        indexes.append(
            Index(
                _name(index.index_name(generator, model)),
                index_columns,
                method=(index.INDEX_TYPE or "btree").lower(),
                predicate=extra.removeprefix("WHERE ").strip() if extra.upper().startswith("WHERE ") else None,
            )
        )

    foreign_keys: list[ForeignKey] = []
    for field_name in sorted(meta.fk_fields | meta.o2o_fields):
        relation = cast("ForeignKeyFieldInstance[Model]", meta.fields_map[field_name])  # a one-to-one field is one too
        if not relation.db_constraint:
            continue
        target = relation.related_model._meta
        target_column = relation.to_field_instance.source_field or relation.to_field_instance.model_field_name
        column = column_of(relation.source_field or field_name)  # Tortoise sets it to the relation's `<name>_id` field
        foreign_keys.append(
            ForeignKey(_name(f"{table}_{column}_fkey"), (column,), target.db_table, (target_column,), str(relation.on_delete))
        )

    return Table(table, tuple(columns), primary_key, tuple(foreign_keys + composite_keys), tuple(indexes), tuple(checks), partition_key)


def _default(field: Field[Any], model: type[Model]) -> str | None:
    """The field's `db_default` as an SQL expression (`default=` is Python-only and never reaches SQL)."""
    if not field.has_db_default():
        return None
    value = field.db_default
    if hasattr(value, "get_sql"):  # an SQL expression (`SqlDefault`, a pypika term)
        sql: str = value.get_sql(dialect="postgres")
        return sql
    value = field.to_db_value(value, model)
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return literal(str(value))


def _name(name: str) -> str:
    return name[:NAME_LIMIT]
