"""The native enum types a history creates, replayed offline from its SQL, against those the models' columns use.

Aerich writes no `CREATE TYPE`, `ALTER TYPE` or `DROP TYPE` (it knows no user-defined types): a model change
that adds a native enum column, or a label to its enum, passes Aerich's diff and fails only at upgrade, on
the missing type or label. The migrations' own statements say which types exist at head, with which labels:
`CREATE TYPE … AS ENUM`, `DROP TYPE`, `ALTER TYPE … RENAME TO`, `ADD VALUE` and `RENAME VALUE`, top-level or
inside a `DO` block, split and tokenised by sqlparse (which knows PostgreSQL's quoting). Nothing here
connects to a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from sqlparse import tokens as T
from sqlparse.lexer import tokenize

from langlearn.history.files import History
from langlearn.models.enums import add_value_sql, create_type_sql, labels, native_enum, pg_type_name

if TYPE_CHECKING:
    from enum import Enum

    from tortoise.models import Model

TokenKind = Literal["word", "name", "string", "punct", "body", "other"]


@dataclass(frozen=True)
class EnumType:
    """An enum type as the history leaves it."""

    name: str
    labels: tuple[str, ...]
    created_by: str  # the migration whose upgrade created it


ProblemKind = Literal["type missing", "label missing", "type unused"]


@dataclass(frozen=True)
class EnumProblem:
    """A native enum type the models' columns and the history disagree on, and the statement that settles it."""

    kind: ProblemKind
    type_name: str
    problem: str  # what is wrong, after `enum type "x"`
    sql: str  # the statement to add
    where: str  # the migration to add it to
    columns: tuple[str, ...] = ()  # the model fields concerned, `SeedRun.status (seed_runs.status)`
    downgrade: str = ""  # the statement its downgrade needs, if any

    def __str__(self) -> str:
        """One line, signed as a state diff is: `+` the models have it and the history not, `-` the reverse."""
        sign = "-" if self.kind == "type unused" else "+"
        fields = f"{', '.join(self.columns)}: " if self.columns else ""
        undo = f" (and `{self.downgrade}` to its downgrade)" if self.downgrade else ""
        return f'{sign} {fields}enum type "{self.type_name}" {self.problem}; add `{self.sql}` to {self.where}{undo}'


# --- the history's types ---------------------------------------------------------------------------


def enum_types_at_head(history: History) -> dict[str, EnumType]:
    """The enum types every upgrade of `history`, in order, leaves behind, with their labels in order."""
    types: dict[str, EnumType] = {}
    for migration in history:
        for statement in migration.statements("up"):
            _replay(_tokens(statement), types, migration.version)
    return types


@dataclass(frozen=True)
class _Token:
    kind: TokenKind
    text: str  # a word as written, a name unquoted, a string's value, a body without its dollar quotes

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words


def _tokens(sql: str) -> list[_Token]:
    """The statement's tokens without whitespace and comments; a `DO` block's body is tokenised in its place."""
    lexed = tokenize(sql)  # type: ignore[no-untyped-call]  # sqlparse annotates split() and format(), not its lexer
    found = [token for ttype, value in lexed for token in _token(ttype, value)]
    if found and found[0].is_word("DO"):
        return [inner for token in found for inner in (_tokens(token.text) if token.kind == "body" else [token])]
    return found


def _token(ttype: object, value: str) -> list[_Token]:
    if ttype in T.Whitespace or ttype in T.Comment:
        return []
    if ttype in T.Literal.String.Symbol:  # "quoted name"
        return [_Token("name", value[1:-1].replace('""', '"'))]
    if ttype in T.Literal.String.Single:
        return [_Token("string", value[1:-1].replace("''", "'"))]
    if ttype in T.Keyword or ttype in T.Name:  # a multi-word keyword (`IF NOT EXISTS`) comes as one token
        return [_Token("word", word) for word in value.split()]
    if ttype in T.Punctuation:
        return [_Token("punct", value)]
    if ttype in T.Literal and value.startswith("$"):  # $$ … $$ or $tag$ … $tag$
        tag = value[: value.index("$", 1) + 1]
        return [_Token("body", value[len(tag): -len(tag)])]
    return [_Token("other", value)]


def _replay(tokens: list[_Token], types: dict[str, EnumType], version: str) -> None:
    """Apply each `CREATE|DROP|ALTER TYPE` among the tokens to `types`."""
    for start in range(len(tokens) - 1):
        if tokens[start + 1].is_word("TYPE") and tokens[start].is_word("CREATE", "DROP", "ALTER"):
            verb = tokens[start].text.upper()
            rest = _Reader(tokens, start + 2)
            if verb == "CREATE":
                _create(rest, types, version)
            elif verb == "DROP":
                _drop(rest, types)
            else:
                _alter(rest, types)


_END = _Token("other", "")


@dataclass
class _Reader:
    """The tokens after `CREATE|DROP|ALTER TYPE`, taken one by one."""

    tokens: list[_Token]
    at: int

    def peek(self) -> _Token:
        return self.tokens[self.at] if self.at < len(self.tokens) else _END

    def take(self, *words: str) -> bool:
        if self.peek().is_word(*words):
            self.at += 1
            return True
        return False

    def skip(self, *words: str) -> None:
        """Take the words in order as far as they come (`IF NOT EXISTS`)."""
        for word in words:
            if not self.take(word):
                return

    def take_punct(self, text: str) -> bool:
        if self.peek().kind == "punct" and self.peek().text == text:
            self.at += 1
            return True
        return False

    def string(self) -> str | None:
        token = self.peek()
        if token.kind != "string":
            return None
        self.at += 1
        return token.text

    def identifier(self) -> str | None:
        """A type's name (`"x"`, `x`, `public.x`), as PostgreSQL stores it: unquoted words fold to lower case."""
        name: str | None = None
        while True:
            token = self.peek()
            if token.kind not in ("name", "word"):
                return name
            self.at += 1
            name = token.text if token.kind == "name" else token.text.lower()
            if not self.take_punct("."):
                return name

    def strings(self) -> Iterator[str]:
        """`'a', 'b', …` up to the closing parenthesis."""
        while (value := self.string()) is not None:
            yield value
            if not self.take_punct(","):
                return


def _create(rest: _Reader, types: dict[str, EnumType], version: str) -> None:
    name = rest.identifier()
    if name is not None and rest.take("AS") and rest.take("ENUM") and rest.take_punct("("):
        types[name] = EnumType(name, tuple(rest.strings()), version)


def _drop(rest: _Reader, types: dict[str, EnumType]) -> None:
    rest.skip("IF", "EXISTS")
    while (name := rest.identifier()) is not None:
        types.pop(name, None)
        if not rest.take_punct(","):
            return


def _alter(rest: _Reader, types: dict[str, EnumType]) -> None:
    name = rest.identifier()
    if name is None or name not in types:
        return
    if rest.take("RENAME"):
        if rest.take("TO"):
            if (new_name := rest.identifier()) is not None:
                types[new_name] = replace(types.pop(name), name=new_name)
        elif rest.take("VALUE") and (old := rest.string()) is not None and rest.take("TO") and (new := rest.string()) is not None:
            types[name] = replace(types[name], labels=tuple(new if label == old else label for label in types[name].labels))
    elif rest.take("ADD") and rest.take("VALUE"):
        rest.skip("IF", "NOT", "EXISTS")
        label = rest.string()
        current = list(types[name].labels)
        if label is None or label in current:
            return
        position = len(current)
        if (before := rest.take("BEFORE")) or rest.take("AFTER"):
            neighbour = rest.string()
            if neighbour in current:
                position = current.index(neighbour) + (0 if before else 1)
        current.insert(position, label)
        types[name] = replace(types[name], labels=tuple(current))


# --- against the models ----------------------------------------------------------------------------


def enum_problems(history: History, models: Iterable[type[Model]], *, models_changed: bool) -> tuple[EnumProblem, ...]:
    """Where the native enum types of the models' columns differ from those the history leaves at its head:
    a type no migration creates, a label it lacks, a type it keeps that no column uses. `models_changed`:
    the models moved on from the newest migration's state, so the statements go into the new migration."""
    used: dict[str, tuple[type[Enum], list[str]]] = {}
    for model in sorted(models, key=lambda model: model._meta.db_table):
        for field_name, model_field in model._meta.fields_map.items():
            if (enum_cls := native_enum(model_field)) is not None:
                column = f"{model.__name__}.{field_name} ({model._meta.db_table}.{model_field.source_field or field_name})"
                used.setdefault(pg_type_name(enum_cls), (enum_cls, []))[1].append(column)
    at_head = enum_types_at_head(history)
    head = history.head.version if history.head else "base"
    unlocated = "the new migration" if models_changed else f"{head} if no database has applied it yet, else to a new migration"
    problems: list[EnumProblem] = []
    for name, (enum_cls, columns) in sorted(used.items()):
        if name not in at_head:
            uses = _recorded_uses(history, name)
            problems.append(EnumProblem(
                "type missing", name, "is created by no migration", create_type_sql(enum_cls),
                f"{uses[0] if uses else unlocated}, before its first use", tuple(columns), downgrade=f'DROP TYPE "{name}";',
            ))
            continue
        problems += [
            EnumProblem("label missing", name, f"lacks the label '{label}' at {head}", add_value_sql(enum_cls, label), unlocated, tuple(columns))
            for label in labels(enum_cls)
            if label not in at_head[name].labels
        ]
    for name, kept in sorted(at_head.items()):
        if name not in used:
            uses = _recorded_uses(history, name)
            after_last_use = history.versions[history.versions.index(uses[-1]) + 1:] if uses else ()
            dropped_by = after_last_use[0] if after_last_use else None  # the migration that removed its last column
            recreate = f"CREATE TYPE \"{name}\" AS ENUM ({', '.join(_literal(label) for label in kept.labels)});"
            problems.append(EnumProblem(
                "type unused", name, f"is created by {kept.created_by} but used by no model field", f'DROP TYPE "{name}";',
                f"{dropped_by}, after the statements that drop its columns" if dropped_by else unlocated, downgrade=recreate,
            ))
    return tuple(problems)


def _recorded_uses(history: History, type_name: str) -> list[str]:
    """The migrations whose models state has a column of the type, in order."""
    quoted = f'"{type_name}"'
    return [
        migration.version
        for migration in history
        if migration.compressed_state and any(
            (data_field.get("db_field_types") or {}).get("postgres") == quoted
            for model in migration.models_state.values()
            for data_field in model.get("data_fields", [])
        )
    ]


def _literal(label: str) -> str:
    return "'" + label.replace("'", "''") + "'"
