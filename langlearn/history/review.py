"""Offline review of the models' states: what changed between two migrations, and whether the models still
agree with the newest one (what `aerich migrate` would generate, and the native enum types it would not).

A state is a migration's `MODELS_STATE` (Aerich's `get_models_describe`), or the current models described
the same way. Only what reaches the database counts as a change:

- tables (name, comment), their columns (field type and PostgreSQL type, `max_length`, null, unique,
  index, primary key, generated, literal defaults, database defaults, comment), foreign keys and one-to-one
  keys (column, referenced table, `on_delete`, whether there is a constraint), many-to-many tables,
  indexes and `unique_together`;
- not: docstrings, Python types, `auto_now`/`auto_now_add`, callable defaults (`uuid4`, `now`: Python
  fills them in), validators (`ge`, `le`, `readOnly`: no CHECK is generated for them), the types other
  databases would get, backward relations (the other table's column), and Aerich's own `aerich` table.

Nothing here connects to a database: the models are described from an initialised Tortoise without
connections, and Aerich's diff runs offline.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from langlearn.compat import aerich_migrate_operators, describe_models, encode_models_state
from langlearn.errors import ConfigError
from langlearn.history.apps import MigrationApp
from langlearn.history.enum_types import EnumProblem, enum_problems
from langlearn.history.files import load_history
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION, tortoise_config

ChangeKind = Literal[
    "table added",
    "table removed",
    "table renamed",
    "model renamed",
    "table changed",
    "field added",
    "field removed",
    "field changed",
    "index added",
    "index removed",
    "index changed",
    "unique together added",
    "unique together removed",
]
# Tortoise needs a URL to build its config; this one is never connected to (see `describe_current_models`)
OFFLINE_URL = "postgres://offline@127.0.0.1:1/offline"
AERICH_TABLE_MODEL = f"{APP_LABEL}.Aerich"  # Aerich's bookkeeping table: Aerich leaves it out of every diff too
NOT_SET = "__NOT_SET__"  # how a state spells "no db_default"
SQL_DEFAULT = re.compile(r"^SqlDefault\((.*)\)$", re.DOTALL)


@dataclass(frozen=True)
class AttributeChange:
    """One attribute of a table, field or index, before and after (as displayed)."""

    attribute: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.attribute} {self.before} → {self.after}"


@dataclass(frozen=True)
class StateChange:
    """One difference between two models states, in the table it concerns (its new name)."""

    kind: ChangeKind
    table: str
    model: str  # the model class, `User`
    subject: str = ""  # the field, index (name or columns) or unique columns; "" for the table itself
    summary: str = ""  # for an addition or removal: what it is (`VARCHAR(320), not null, unique`)
    attributes: tuple[AttributeChange, ...] = ()  # for a change: each attribute before → after
    contents: tuple[str, ...] = ()  # for a table added: its fields and indexes, one line each


@dataclass(frozen=True)
class ModelChanges:
    """The current models against the newest migration's state, and the SQL `aerich migrate` would write for them."""

    head: str  # the newest migration's file name
    changes: tuple[StateChange, ...]
    upgrade_sql: tuple[str, ...]
    downgrade_sql: tuple[str, ...]
    aerich_warnings: tuple[str, ...]
    # the native enum types the models' columns need against those the history creates (Aerich writes none)
    enum_problems: tuple[EnumProblem, ...] = ()
    app: str = APP_LABEL  # whose models and history: the package's, or a service's app's

    @property
    def state_agrees(self) -> bool:
        return not self.changes and not self.upgrade_sql

    @property
    def agree(self) -> bool:
        return self.state_agrees and not self.enum_problems


# --- comparing two states --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    """A field of a state, reduced to what reaches the database (display strings, in display order)."""

    name: str
    attributes: dict[str, str]


def state_diff(old: dict[str, Any], new: dict[str, Any]) -> list[StateChange]:
    """The differences from models state `old` to `new`, table by table (ordered by table name)."""
    old_models = {name: model for name, model in old.items() if name != AERICH_TABLE_MODEL}
    new_models = {name: model for name, model in new.items() if name != AERICH_TABLE_MODEL}
    tables = {model["name"]: model["table"] for model in [*old_models.values(), *new_models.values()]}
    removed = {name: old_models[name] for name in old_models.keys() - new_models.keys()}
    changes: list[StateChange] = []
    for name, model in new_models.items():
        before = old_models.get(name)
        renamed_from = next((old_name for old_name, old_model in removed.items() if old_model["table"] == model["table"]), None)
        if before is None and renamed_from is not None:  # a class renamed over the same table: Aerich's rename, not a new table
            before = removed.pop(renamed_from)
            changes.append(StateChange("model renamed", model["table"], _class(model), attributes=(AttributeChange("model", _class(before), _class(model)),)))
        if before is None:
            changes.append(_table_added(model, tables))
        else:
            changes += _model_diff(before, model, tables)
    for model in removed.values():
        changes.append(StateChange("table removed", model["table"], _class(model), summary=_count(len(_columns(model, tables)), "field")))
    order = {kind: number for number, kind in enumerate(get_args(ChangeKind))}
    return sorted(changes, key=lambda change: (change.table, change.kind.startswith(("field", "index", "unique")), order[change.kind]))


def _model_diff(old: dict[str, Any], new: dict[str, Any], tables: dict[str, str]) -> list[StateChange]:
    table, model = new["table"], _class(new)
    changes: list[StateChange] = []
    if old["table"] != new["table"]:
        changes.append(StateChange("table renamed", table, model, attributes=(AttributeChange("table", old["table"], new["table"]),)))
    if old.get("description") != new.get("description"):
        changes.append(StateChange("table changed", table, model, attributes=(AttributeChange("comment", _comment(old.get("description")), _comment(new.get("description"))),)))
    old_columns, new_columns = _columns(old, tables), _columns(new, tables)
    for name, column in new_columns.items():
        if name not in old_columns:
            changes.append(StateChange("field added", table, model, name, summary=_summary(column)))
            continue
        before = old_columns[name].attributes
        attributes = tuple(
            AttributeChange(attribute, before.get(attribute, "none"), after)
            for attribute, after in {**dict.fromkeys(before, "none"), **column.attributes}.items()
            if before.get(attribute, "none") != after
        )
        if attributes:
            changes.append(StateChange("field changed", table, model, name, attributes=attributes))
    changes += [StateChange("field removed", table, model, name, summary=_summary(column)) for name, column in old_columns.items() if name not in new_columns]
    old_indexes, new_indexes = _indexes(old), _indexes(new)
    for key, definition in new_indexes.items():
        if key not in old_indexes:
            changes.append(StateChange("index added", table, model, key, summary=definition))
        elif old_indexes[key] != definition:
            changes.append(StateChange("index changed", table, model, key, attributes=(AttributeChange("definition", old_indexes[key], definition),)))
    changes += [StateChange("index removed", table, model, key, summary=definition) for key, definition in old_indexes.items() if key not in new_indexes]
    old_unique, new_unique = _unique_together(old), _unique_together(new)
    changes += [StateChange("unique together added", table, model, columns) for columns in new_unique if columns not in old_unique]
    changes += [StateChange("unique together removed", table, model, columns) for columns in old_unique if columns not in new_unique]
    return changes


def _table_added(model: dict[str, Any], tables: dict[str, str]) -> StateChange:
    columns = _columns(model, tables)
    indexes = _indexes(model)
    unique = _unique_together(model)
    contents = [f"{name}: {_summary(column)}" for name, column in columns.items()]
    contents += [f"index {definition}" for definition in indexes.values()]
    contents += [f"unique together {together}" for together in unique]
    summary = ", ".join(
        [_count(len(columns), "field")] + ([_count(len(indexes), "index", "indexes")] if indexes else []) + ([f"{len(unique)} unique together"] if unique else [])
    )
    comment = [f"comment {_comment(model['description'])}"] if model.get("description") else []
    return StateChange("table added", model["table"], _class(model), summary=", ".join([summary, *comment]), contents=tuple(contents))


def _columns(model: dict[str, Any], tables: dict[str, str]) -> dict[str, _Column]:
    """The model's fields by name: its primary key, data fields, foreign and one-to-one keys, many-to-many
    tables. A key's column (`user_id`, also a data field) is folded into the key, so it shows once."""
    relations = [*model.get("fk_fields", []), *model.get("o2o_fields", [])]
    key_columns = {relation["raw_field"]: relation for relation in relations if relation.get("raw_field")}
    data = {field["name"]: field for field in model.get("data_fields", []) if field.get("db_field_types") is not None}
    columns: dict[str, _Column] = {}
    if model.get("pk_field"):
        columns[model["pk_field"]["name"]] = _Column(model["pk_field"]["name"], {"primary key": "yes", **_data_attributes(model["pk_field"])})
    for name, field in data.items():
        if name not in key_columns:
            columns[name] = _Column(name, _data_attributes(field))
    for relation in relations:
        column = data.get(relation.get("raw_field") or "")
        columns[relation["name"]] = _Column(relation["name"], _key_attributes(relation, column, tables))
    for relation in model.get("m2m_fields", []):
        columns[relation["name"]] = _Column(relation["name"], _m2m_attributes(relation, tables))
    return columns


def _data_attributes(field: dict[str, Any]) -> dict[str, str]:
    constraints = field.get("constraints") or {}
    return {
        "column": str(field.get("db_column")),
        "type": str(field.get("field_type")),
        "db type": _db_type(field),
        "max_length": _shown(constraints.get("max_length")),
        "generated": _shown(field.get("generated")),
        "null": _shown(field.get("nullable")),
        "unique": _shown(field.get("unique")),
        "index": _shown(field.get("indexed")),
        "default": _default(field.get("default")),
        "db default": _db_default(field.get("db_default")),
        "comment": _comment(field.get("description")),
    }


def _key_attributes(relation: dict[str, Any], column: dict[str, Any] | None, tables: dict[str, str]) -> dict[str, str]:
    return {
        "column": str(relation.get("raw_field")),
        "type": str(relation.get("field_type")),
        "db type": _db_type(column) if column else "none",
        "references": tables.get(relation.get("python_type", ""), str(relation.get("python_type"))),
        "on delete": str(relation.get("on_delete")),
        "constraint": _shown(relation.get("db_constraint")),
        "null": _shown(relation.get("nullable")),
        "unique": _shown(relation.get("unique")),
        "index": _shown(relation.get("indexed")),
        "default": _default(relation.get("default")),
        "db default": _db_default(column.get("db_default") if column else relation.get("db_default")),
        "comment": _comment(relation.get("description")),
    }


def _m2m_attributes(relation: dict[str, Any], tables: dict[str, str]) -> dict[str, str]:
    return {
        "through": str(relation.get("through")),
        "references": tables.get(relation.get("python_type", ""), str(relation.get("python_type"))),
        "forward key": str(relation.get("forward_key")),
        "backward key": str(relation.get("backward_key")),
        "on delete": str(relation.get("on_delete")),
        "constraint": _shown(relation.get("db_constraint")),
        "unique": _shown(relation.get("unique")),
        "comment": _comment(relation.get("description")),
    }


def _summary(column: _Column) -> str:
    """A field in one line, as a reviewer reads a column: `VARCHAR(320), not null, unique, db default now()`."""
    a = column.attributes
    if "through" in a:
        return f"many-to-many through {a['through']} to {a['references']} ({a['forward key']}, {a['backward key']})"
    parts = [a["db type"]] if a["column"] == column.name else [f"column {a['column']}", a["db type"]]
    if a.get("primary key") == "yes":
        parts.append("primary key")
    else:
        parts.append("null" if a["null"] == "yes" else "not null")
        parts += ["unique"] if a["unique"] == "yes" else ["indexed"] if a["index"] == "yes" else []
    parts += ["generated"] if a.get("generated") == "yes" else []
    if "references" in a:
        parts.append(f"references {a['references']} on delete {a['on delete']}" + ("" if a["constraint"] == "yes" else " (no constraint)"))
    parts += [f"{attribute} {a[attribute]}" for attribute in ("default", "db default", "comment") if a[attribute] != "none"]
    return ", ".join(parts)


def _indexes(model: dict[str, Any]) -> dict[str, str]:
    """The model's `Meta.indexes` by name (or columns, when unnamed), each as one line."""
    indexes: dict[str, str] = {}
    for index in model.get("indexes", []):
        if isinstance(index, dict):
            on = ", ".join([*index.get("fields", []), *map(str, index.get("expressions", []))])
            key = index.get("name") or f"({on})"
            kind = f" using {index['type']}" if index.get("type") else ""
            extra = f" {index['extra'].strip()}" if (index.get("extra") or "").strip() else ""
            indexes[key] = f"{index.get('name') or ''} on ({on}){kind}{extra}".strip()
        else:
            key = f"({', '.join(index)})"
            indexes[key] = f"on {key}"
    return indexes


def _unique_together(model: dict[str, Any]) -> list[str]:
    return [f"({', '.join(columns)})" for columns in model.get("unique_together", [])]


def _class(model: dict[str, Any]) -> str:
    return str(model["name"]).rpartition(".")[2]


def _db_type(field: dict[str, Any]) -> str:
    types = field.get("db_field_types") or {}
    return str(types.get("postgres", types.get("", "none")))


def _default(value: Any) -> str:
    """A literal default, which Aerich writes as the column's DEFAULT; a callable runs in Python, not in the schema."""
    return "none" if value is None or str(value).startswith("<function ") else repr(value)


def _db_default(value: Any) -> str:
    if value is None or value == NOT_SET:
        return "none"
    match = SQL_DEFAULT.match(str(value))
    if match:  # SqlDefault('now()'): the SQL itself
        try:
            return str(ast.literal_eval(match.group(1)))
        except (ValueError, SyntaxError):
            return match.group(1)
    return repr(value)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _comment(value: Any) -> str:
    return "none" if value is None else repr(value)


def _count(number: int, noun: str, plural: str | None = None) -> str:
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


# --- rendering -------------------------------------------------------------------------------------


def render_state_diff(changes: Iterable[StateChange], old_label: str, new_label: str) -> str:
    """The changes as text, grouped by table: a line counting them, then one line per change (`+` added,
    `-` removed, `~` changed), each naming its table."""
    changes = list(changes)
    if not changes:
        return f"{old_label} → {new_label}: no schema change"
    counts = Counter(change.kind for change in changes)
    lines = [f"{old_label} → {new_label}: " + ", ".join(_counted(kind, counts[kind]) for kind in get_args(ChangeKind) if counts[kind])]
    for change in changes:
        lines += _render(change)
    return "\n".join(lines)


def _counted(kind: str, number: int) -> str:
    noun, _, rest = kind.partition(" ")  # "field changed", "unique together added"
    plural = {"index": "indexes", "unique": "unique"}.get(noun, noun + "s")
    return f"{number} {noun if number == 1 else plural} {rest}"


def _render(change: StateChange) -> list[str]:
    sign = {"added": "+", "removed": "-"}.get(change.kind.rpartition(" ")[2], "~")
    detail = change.summary or ", ".join(map(str, change.attributes))
    if change.kind == "table added":
        return [f"+ table {change.table} (model {change.model}): {detail}", *(f"    {line}" for line in change.contents)]
    if change.kind.startswith(("table", "model")):
        return [f"{sign} table {change.table} (model {change.model}): {detail}"]
    if change.kind.startswith("field"):
        return [f"{sign} {change.table}.{change.subject}: {detail}"]
    if change.kind.startswith("index"):
        return [f"{sign} {change.table}: index {detail}" if change.summary else f"~ {change.table}: index {change.subject}: {detail}"]
    return [f"{sign} {change.table}: unique together {change.subject}"]


# --- the current models ----------------------------------------------------------------------------


async def describe_current_models() -> dict[str, Any]:
    """The current models' state as a new migration file would record it, without a database.

    Tortoise is initialised without connections, on a URL nothing listens on: an attempt to connect
    would fail loudly instead of reaching a database (or starting the private server)."""
    from tortoise.context import TortoiseContext

    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(OFFLINE_URL), init_connections=False)
        return as_recorded(describe_models(APP_LABEL))


def as_recorded(state: dict[str, Any]) -> dict[str, Any]:
    """A live description as a migration file records it (through Aerich's JSON encoder): an enum default
    becomes its value and an index its description, so it compares with a file's state field by field."""
    recorded: dict[str, Any] = json.loads(encode_models_state(state))
    return recorded


async def model_changes(location: str = MIGRATIONS_LOCATION, *, app: str = APP_LABEL, services: Sequence[MigrationApp] = ()) -> ModelChanges:
    """The current models of `app` (the package's, or one of the service's apps in `services`) against the newest
    migration of its history under `location` (Aerich's `location`): the changes, and the SQL `aerich migrate` would
    generate for them (not written anywhere). Offline. The native enum types are the package's concern: its SQL
    creates them, Aerich does not."""
    from tortoise import Tortoise
    from tortoise.context import TortoiseContext

    history = load_history(location, app)
    if history.head is None:
        raise ConfigError(f"no migration in {history.folder}; the first one is made by `aerich --app {app} init-migrations`")
    head = history.head
    config = tortoise_config(OFFLINE_URL, {service.label: {"models": list(service.models)} for service in services})
    async with TortoiseContext() as context:
        await context.init(config=config, init_connections=False)
        current = describe_models(app)
        operators = await aerich_migrate_operators(config, app, location, head.models_state, current)
        changes = tuple(state_diff(head.models_state, as_recorded(current)))
        enums = enum_problems(history, Tortoise.apps[app].values(), models_changed=bool(changes or operators.upgrade)) if app == APP_LABEL else ()
    return ModelChanges(
        head=head.version,
        changes=changes,
        upgrade_sql=operators.upgrade,
        downgrade_sql=operators.downgrade,
        aerich_warnings=operators.warnings,
        enum_problems=enums,
        app=app,
    )
