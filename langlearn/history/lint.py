"""`langlearn migrations lint`: the migrations' SQL through squawk, a linter made for PostgreSQL migrations.

squawk reads each migration as the runner runs it (`lint_input`): the session's timeouts, then the
statements, in BEGIN/COMMIT when the migration runs in a transaction, so it knows, for instance,
that CREATE INDEX CONCURRENTLY cannot run there. Its findings are then judged by the project's
allowlist (`lint-allowlist.toml` beside the migration folders):

- `[[exclude]]` turns a rule off for the whole project, with the reason (SCHEMA.md fixes VARCHAR
  and INTEGER, so squawk's advice to prefer TEXT and BIGINT is not this project's to take);
- `[[allow]]` accepts the findings of one rule in one migration file (optionally only those whose
  statement contains `match`, so an accepted finding hides no other of the same rule), with the
  reason the reviewer accepted it.

A finding no entry accepts is new, and fails the lint. Linting every migration by default is what
makes this "the pending and the new ones" without a database: the migrations already reviewed
(applied somewhere or not) have their findings in the allowlist and pass, so only what a change adds
can fail, whichever database it will meet. An entry that accepts nothing any more is stale: reported,
never a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from langlearn.errors import ConfigError, LanglearnError
from langlearn.history.files import VERSION_FILE, Direction, Migration, version_files
from langlearn.history.runner import session_statements, timeout_settings
from langlearn.history.script import terminated

T = TypeVar("T")

ALLOWLIST_NAME = "lint-allowlist.toml"  # in Aerich's `location`, beside the app's folder of migrations
SQUAWK_MISSING = "squawk is not installed: pip install 'langlearn-data[lint]'"
PG_VERSION = "16"  # the server this project targets: squawk's advice depends on it (e.g. fast defaults since 11)
SQUAWK_TIMEOUT_SECONDS = 120
EXCERPT_CHARS = 160
def function_line(name: str) -> re.Pattern[str]:
    """The line of a migration file that defines `name` (`upgrade`, `downgrade`)."""
    return re.compile(rf"\s*(async\s+)?def\s+{name}\b")


UPGRADE_FUNCTION = function_line("upgrade")  # where a migration file's upgrade SQL starts
# The runner sets both timeouts on its session before the first migration (runner.session_statements), so
# squawk's require-lock-timeout and require-statement-timeout see them as the server does. squawk checks that
# they are set, not their values; these are `langlearn upgrade`'s defaults (its --lock-timeout, --statement-timeout).
SESSION_STATEMENTS = tuple(terminated(statement) for statement in session_statements(timeout_settings(lock_timeout=5.0, statement_timeout=120.0)))


# --- the allowlist ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Excluded:
    """A squawk rule turned off for the whole project."""

    rule: str
    reason: str


@dataclass(frozen=True)
class Allowed:
    """Accepted findings: those of `rule` in migration file `version` (whose statement contains `match`, when given)."""

    version: str
    rule: str
    reason: str
    match: str | None = None

    def accepts(self, finding: Finding) -> bool:
        return finding.version == self.version and finding.rule == self.rule and (self.match is None or self.match in finding.statement_text)

    def describe(self) -> str:
        return f"{self.version} {self.rule}" + (f" (match {self.match!r})" if self.match is not None else "")


@dataclass(frozen=True)
class Allowlist:
    """The rules excluded and the findings accepted (empty: every finding is new)."""

    excluded: tuple[Excluded, ...] = ()
    allowed: tuple[Allowed, ...] = ()

    def accepting(self, finding: Finding) -> Allowed | None:
        return next((entry for entry in self.allowed if entry.accepts(finding)), None)


_ENTRY_KEYS = {"exclude": {"rule", "reason"}, "allow": {"version", "rule", "match", "reason"}}
_REQUIRED = {"exclude": ("rule", "reason"), "allow": ("version", "rule", "reason")}


def read_allowlist(path: Path) -> Allowlist:
    """The allowlist in `path`; ConfigError, one line naming the file and the problem, when it is missing or malformed."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the lint allowlist ({error.strerror or error})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    unknown = sorted(set(document) - set(_ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; the allowlist holds [[exclude]] and [[allow]] entries")
    entries = {kind: _entries(path, document, kind) for kind in _ENTRY_KEYS}
    return Allowlist(
        excluded=tuple(Excluded(rule=entry["rule"], reason=entry["reason"]) for entry in entries["exclude"]),
        allowed=tuple(Allowed(version=e["version"], rule=e["rule"], reason=e["reason"], match=e.get("match")) for e in entries["allow"]),
    )


def _entries(path: Path, document: dict[str, Any], kind: str) -> list[dict[str, str]]:
    """The `[[kind]]` tables of the document, checked: known keys, non-empty strings, a migration file name."""
    tables = document.get(kind, [])
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise ConfigError(f"{path}: {kind!r} must be a list of tables, written [[{kind}]]")
    for number, table in enumerate(tables, start=1):
        where = f"{path}: [[{kind}]] #{number}"
        unknown = sorted(set(table) - _ENTRY_KEYS[kind])
        if unknown:
            raise ConfigError(f"{where} has an unknown key {unknown[0]!r}; it takes {', '.join(sorted(_ENTRY_KEYS[kind]))}")
        for key in _REQUIRED[kind]:
            if key not in table:
                raise ConfigError(f"{where} has no {key!r}; every entry needs {', '.join(_REQUIRED[kind])}")
        for key, value in table.items():
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}: {key!r} must be a non-empty string")
        if kind == "allow" and not VERSION_FILE.match(table["version"]):
            raise ConfigError(f"{where}: version {table['version']!r} is not a migration file name (like 3_20261124040530_phase3_learning.py)")
    return tables


# --- what squawk reads -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LintInput:
    """A migration's SQL as squawk reads it, and the line (0-based, as squawk counts) each statement starts on."""

    text: str
    starts: tuple[int, ...]

    @classmethod
    def of(cls, migration: Migration) -> LintInput:
        lines = list(SESSION_STATEMENTS)
        starts: list[int] = []
        if migration.transactional:
            lines.append("BEGIN;")
        for statement in migration.statements("up"):
            starts.append(sum(line.count("\n") + 1 for line in lines))
            lines.append(terminated(statement))
        if migration.transactional:
            lines.append("COMMIT;")
        return cls(text="\n".join(lines) + "\n", starts=tuple(starts))

    def statement_at(self, line: int) -> int:
        """The index of the statement holding `line` (the runner's own lines count with the statement nearest them)."""
        return max(0, sum(1 for start in self.starts if start <= line) - 1)

    def excerpt(self, line: int, line_end: int) -> str:
        """The lines squawk flagged, on one line (the whole lines, which name the table or the column)."""
        return _one_line(" ".join(self.text.split("\n")[line : line_end + 1]))[:EXCERPT_CHARS]


def lint_input(migration: Migration) -> str:
    """What squawk reads for `migration`: the runner's session settings, then its statements, in BEGIN/COMMIT
    when it runs in a transaction (as `langlearn migrations sql` prints it, without the bookkeeping)."""
    return LintInput.of(migration).text


# --- findings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One thing squawk flagged in one migration."""

    version: str
    rule: str
    message: str
    help: str | None
    line: int | None  # in the migration file; None when its SQL is not written there verbatim
    statement: int  # 1-based, among the migration's statements("up")
    excerpt: str  # the flagged SQL, on one line
    statement_text: str  # the whole statement, which an allowlist entry's `match` searches

    @property
    def where(self) -> str:
        return f"{self.version}:{self.line}" if self.line is not None else f"{self.version} (statement {self.statement})"


@dataclass(frozen=True)
class Judged:
    """A finding and the allowlist entry that accepts it (None: a new finding)."""

    finding: Finding
    allowed_by: Allowed | None

    @property
    def new(self) -> bool:
        return self.allowed_by is None


@dataclass(frozen=True)
class StaleEntry:
    """An allowlist entry that accepts nothing any more, and why."""

    entry: Allowed
    why: str


@dataclass(frozen=True)
class LintReport:
    """What a lint found, each finding judged; `exit_code` 1 when one of them is new."""

    versions: tuple[str, ...]  # the migrations linted
    findings: tuple[Judged, ...]  # in the order of the migrations, then of their lines
    stale: tuple[StaleEntry, ...]
    excluded: tuple[Excluded, ...]

    @property
    def new(self) -> tuple[Finding, ...]:
        return tuple(judged.finding for judged in self.findings if judged.new)

    @property
    def allowed(self) -> tuple[Finding, ...]:
        return tuple(judged.finding for judged in self.findings if not judged.new)

    @property
    def exit_code(self) -> int:
        return 1 if self.new else 0


# --- running squawk --------------------------------------------------------------------------------


def find_squawk(directories: Sequence[str] | None = None) -> str:
    """The squawk executable: the one installed beside this Python (the [lint] extra of this environment, whether
    or not it is activated), else the first on PATH. `directories` replaces that search. ConfigError when none."""
    if directories is None:
        directories = [str(Path(sys.executable).parent), *os.environ.get("PATH", "").split(os.pathsep)]
    found = shutil.which("squawk", path=os.pathsep.join(directories))
    if found is None:
        raise ConfigError(SQUAWK_MISSING)
    return found


def lint(migrations: Iterable[Migration], allowlist_path: Path | None, *, squawk: str | None = None) -> LintReport:
    """Lint the upgrade SQL of `migrations` with squawk (`squawk`: its executable, default `find_squawk()`), judged by
    the allowlist at `allowlist_path` (None: no allowlist)."""
    migrations = tuple(migrations)
    allowlist = read_allowlist(allowlist_path) if allowlist_path is not None else Allowlist()
    inputs = {migration.version: LintInput.of(migration) for migration in migrations}
    excluded_rules = [entry.rule for entry in allowlist.excluded]
    raw = _run_squawk(squawk or find_squawk(), {version: layout.text for version, layout in inputs.items()}, excluded_rules) if migrations else []
    findings: list[Finding] = []
    for migration in migrations:
        items = sorted((item for item in raw if item.version == migration.version), key=lambda item: (item.line, item.rule))
        if items:
            source = SourceLines.of(migration)
            findings += [_finding(migration, inputs[migration.version], source, item) for item in items]
    findings += [finding for migration in migrations for finding in aerich_findings(migration)]
    judged = tuple(Judged(finding, allowlist.accepting(finding)) for finding in findings)
    return LintReport(
        versions=tuple(migration.version for migration in migrations),
        findings=judged,
        stale=_stale(allowlist, migrations, judged),
        excluded=allowlist.excluded,
    )


# The project's own rule, beside squawk's: what `aerich upgrade`/`downgrade` would break on (see langlearn.history.aerich)
AERICH_RULE = "aerich-sends-one-script"  # or, in a transaction, statement by statement


def aerich_findings(migration: Migration) -> list[Finding]:
    """Where the two runners would run a migration differently. Outside a transaction, an upgrade or downgrade that
    returns a plain script: `aerich` sends that as one string, which PostgreSQL runs as one implicit transaction
    (CONCURRENTLY, COMMIT and the SETs meant for the statements after them fail or misfire there), while `langlearn
    upgrade` sends it statement by statement. In a transaction, one sent statement by statement: `langlearn upgrade`
    runs it in the transaction, Aerich outside."""
    findings = []
    functions: tuple[tuple[Direction, str], ...] = (("up", "upgrade"), ("down", "downgrade"))
    for direction, name in functions:
        if migration.sent_statement_by_statement(direction) != migration.transactional:
            continue
        if migration.transactional:
            message = (f"RUN_IN_TRANSACTION = True, but {name}() sends its SQL statement by statement, which `aerich {name}` does "
                       "outside the transaction `langlearn upgrade` runs it in.")
            advice = "Return the SQL itself, or set RUN_IN_TRANSACTION = False if it must not run in a transaction."
        else:
            message = (f"RUN_IN_TRANSACTION = False, but {name}() returns its SQL as one script, which `aerich {name}` sends as one string "
                       "(one implicit transaction, where CONCURRENTLY and COMMIT fail).")
            advice = "Return `await statement_by_statement(db, __file__, <the same SQL>)` (from langlearn.history.aerich) instead."
        statement = (migration.statements(direction) or ("",))[0]
        findings.append(Finding(
            version=migration.version, rule=AERICH_RULE, message=message, help=advice, line=_line_of_function(migration, name),
            statement=1, excerpt=_one_line(statement)[:EXCERPT_CHARS], statement_text=statement,
        ))
    return findings


def _line_of_function(migration: Migration, name: str) -> int | None:
    try:
        lines = migration.path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    pattern = function_line(name)
    return next((number for number, text in enumerate(lines, 1) if pattern.match(text)), None)


@dataclass(frozen=True)
class SquawkItem:
    """One entry of squawk's JSON report (its lines count from 0)."""

    version: str
    rule: str
    message: str
    help: str | None
    line: int
    line_end: int


def _run_squawk(squawk: str, texts: dict[str, str], excluded_rules: Sequence[str]) -> list[SquawkItem]:
    """Run squawk once over every input, each in a file named after its migration, and read its JSON report."""
    with tempfile.TemporaryDirectory(prefix="langlearn-lint-") as folder:
        names = {f"{Path(version).stem}.sql": version for version in texts}
        for name, version in names.items():
            Path(folder, name).write_text(texts[version], encoding="utf-8")
        # an empty config file, so that no .squawk.toml of the working directory's parents changes the rules
        config = Path(folder, "squawk.toml")
        config.write_text("", encoding="utf-8")
        command = [squawk, "--config", str(config), "--reporter", "json", "--pg-version", PG_VERSION]
        if excluded_rules:
            command.append("--exclude=" + ",".join(excluded_rules))
        try:
            done = subprocess.run([*command, *names], cwd=folder, capture_output=True, text=True, timeout=SQUAWK_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise LanglearnError(f"squawk ({squawk}) ran longer than {SQUAWK_TIMEOUT_SECONDS} s and was stopped") from None
        except OSError as error:
            raise LanglearnError(f"cannot run squawk ({squawk}): {error.strerror or error}") from None
    # squawk exits 0 without findings, 1 with findings; anything else (2: refused its arguments) is a failure
    if done.returncode not in (0, 1):
        said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        raise LanglearnError(f"squawk failed (exit {done.returncode}): {said[0] if said else 'no message'}")
    return _parse_report(done.stdout, names)


def _parse_report(stdout: str, names: dict[str, str]) -> list[SquawkItem]:
    try:
        report = json.loads(stdout)
        return [
            SquawkItem(
                version=names[Path(item["file"]).name],
                rule=_typed(item["rule_name"], str),
                message=_typed(item["message"], str),
                help=None if item.get("help") is None else _typed(item["help"], str),
                line=_typed(item["line"], int),
                line_end=_typed(item["line_end"], int),
            )
            for item in report
        ]
    except (ValueError, TypeError, KeyError) as error:
        excerpt = _one_line(stdout)[:120] or "nothing"
        raise LanglearnError(f"squawk's report is not the JSON this version reads ({type(error).__name__}: {error}); it printed: {excerpt}") from None


def _typed(value: object, kind: type[T]) -> T:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not {kind.__name__}")
    return value


@dataclass(frozen=True)
class SourceLines:
    """A migration file's lines, and the line (0-based) where each of its statements is written (None: not verbatim)."""

    lines: tuple[str, ...]
    starts: tuple[int | None, ...]

    @classmethod
    def of(cls, migration: Migration) -> SourceLines:
        """Each statement's first line searched for in the file, after `def upgrade` and after the statement before it."""
        try:
            lines = tuple(migration.path.read_text(encoding="utf-8").splitlines())
        except OSError:  # gone since it was loaded: the findings keep their statement numbers
            lines = ()
        cursor = next((number for number, text in enumerate(lines) if UPGRADE_FUNCTION.match(text)), 0)
        starts: list[int | None] = []
        for statement in migration.statements("up"):
            first = statement.splitlines()[0].strip()
            found = next((number for number in range(cursor, len(lines)) if first in lines[number]), None)
            starts.append(found)
            if found is not None:
                cursor = found + statement.count("\n") + 1
        return cls(lines=lines, starts=tuple(starts))

    def line_of(self, index: int, offset: int, text: str) -> int | None:
        """The file's line (1-based) holding `text`, line `offset` of statement `index`: counted from the statement's
        first line when that line holds it (SQL written out), else the statement's first line."""
        start = self.starts[index] if index < len(self.starts) else None
        if start is None:
            return None
        exact = start + offset
        return exact + 1 if 0 <= exact < len(self.lines) and text.strip() in self.lines[exact] else start + 1


def _finding(migration: Migration, layout: LintInput, source: SourceLines, item: SquawkItem) -> Finding:
    statements = migration.statements("up")
    index = layout.statement_at(item.line)
    statement = statements[index] if statements else ""
    lines = layout.text.split("\n")
    flagged_line = lines[item.line] if 0 <= item.line < len(lines) else ""
    offset = item.line - layout.starts[index] if layout.starts else 0
    return Finding(
        version=migration.version,
        rule=item.rule,
        message=item.message,
        help=item.help,
        line=source.line_of(index, offset, flagged_line),
        statement=index + 1,
        excerpt=layout.excerpt(item.line, item.line_end) or _one_line(statement)[:EXCERPT_CHARS],
        statement_text=statement,
    )


def _stale(allowlist: Allowlist, migrations: Sequence[Migration], judged: Sequence[Judged]) -> tuple[StaleEntry, ...]:
    """Entries for a migration linted that accept none of its findings, and entries naming no file of the folder."""
    linted = {migration.version for migration in migrations}
    on_disk = {name for folder in {migration.path.parent for migration in migrations} for name in version_files(folder)}
    stale = []
    for entry in allowlist.allowed:
        if entry.version in linted and not any(entry.accepts(judged_finding.finding) for judged_finding in judged):
            stale.append(StaleEntry(entry, "accepts no finding of that migration any more; remove it"))
        elif migrations and entry.version not in on_disk:
            stale.append(StaleEntry(entry, "names no migration file of the folder; remove it or correct the name"))
    return tuple(stale)


def _one_line(text: str) -> str:
    return " ".join(text.split())
