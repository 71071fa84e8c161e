"""`langlearn migrations lint`: the real history passes through its allowlist, and a new migration that would
block writes on an existing table fails, with squawk itself (the [lint] extra), no database needed."""

from __future__ import annotations

import io
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from langlearn.cli import Parser, Streams
from langlearn.cli import lint as lint_command
from langlearn.errors import LanglearnError
from langlearn.history.files import load_history
from langlearn.history.lint import ALLOWLIST_NAME, SQUAWK_MISSING, find_squawk, lint, lint_input
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION

HEAD_NUMBER = load_history().migrations[-1].number
NEW_VERSION = f"{HEAD_NUMBER + 1}_20991201090000_bad.py"  # after whatever the shipped head is


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


async def run_lint(*argv: str) -> Outcome:
    """The command as `langlearn migrations lint` runs it: its parser, its handler, and errors as one line on stderr."""
    parser = Parser(prog="langlearn migrations")
    lint_command.register(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    out, err = io.StringIO(), io.StringIO()
    try:
        args = parser.parse_args(["lint", *argv])
        code = await args.handler(args, Streams(out, err))
    except LanglearnError as error:
        assert "\n" not in str(error), f"a multi-line error: {error}"
        print(f"error: {error}", file=err)
        code = error.exit_code
    return Outcome(code, out.getvalue(), err.getvalue())


@pytest.fixture
def location(tmp_path: Path) -> Path:
    """A copy of the shipped migrations folder (the history and its allowlist), to add a migration to."""
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_LOCATION, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def add_migration(location: Path, upgrade_sql: str, *, transactional: bool = True) -> int:
    """Write NEW_VERSION after the head, in Aerich's format; return the file's line holding the first line of its SQL."""
    head = load_history(str(location)).head
    assert head is not None
    models_state = head.path.read_text().split("MODELS_STATE =", 1)[1]
    # outside a transaction, the project's pattern: the statements sent one by one under Aerich too (tests/test_aerich.py)
    opening = 'return """' if transactional else 'return await statement_by_statement(db, __file__, """'
    closing = '"""' if transactional else '""")'
    text = (
        '"""A migration tests/test_lint.py adds to a copy of the history."""\n\n'
        "from tortoise import BaseDBAsyncClient\n\n"
        "from langlearn.history.aerich import statement_by_statement\n\n"
        f"RUN_IN_TRANSACTION = {transactional}\n\n\n"
        "async def upgrade(db: BaseDBAsyncClient) -> str:\n"
        f'    {opening}\n        {upgrade_sql}{closing}\n\n\n'
        "async def downgrade(db: BaseDBAsyncClient) -> str:\n"
        f'    {opening}\n        SELECT 1;{closing}\n\n\n'
        f"MODELS_STATE ={models_state}"
    )
    (location / APP_LABEL / NEW_VERSION).write_text(text)
    first = f"        {upgrade_sql.splitlines()[0]}"
    return next(number for number, line in enumerate(text.splitlines(), start=1) if line.startswith(first))


def append_to_allowlist(location: Path, toml: str) -> None:
    allowlist = location / ALLOWLIST_NAME
    allowlist.write_text(allowlist.read_text() + "\n" + toml)


SHIPPED_ALLOWS = (Path(MIGRATIONS_LOCATION) / ALLOWLIST_NAME).read_text().splitlines().count("[[allow]]")

VOLATILE_DEFAULT = 'ALTER TABLE "users" ADD COLUMN "x" UUID NOT NULL DEFAULT gen_random_uuid();'
PLAIN_INDEX = 'CREATE INDEX "idx_x" ON "users" ("email");'
CONCURRENT_INDEX = 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "idx_x" ON "users" ("email");'


async def test_the_shipped_history_has_no_new_finding():
    result = await run_lint()
    count = len(load_history())
    assert (result.code, result.err) == (0, "")
    assert "NEW" not in result.out and "warning" not in result.out
    allowed = result.out.count("\n    allowed: ")
    assert allowed > 0  # the reviewed findings are shown, each with its reason
    assert result.out.splitlines()[-1] == f"no new finding in {count} migrations ({allowed} allowed)"
    assert "rules excluded by the allowlist: prefer-text-field, prefer-bigint-over-int" in result.out


async def test_a_column_with_a_volatile_default_fails_naming_the_rule_and_the_file_line(location):
    line = add_migration(location, VOLATILE_DEFAULT)
    result = await run_lint("--migrations", str(location))
    assert result.code == 1, result.out + result.err
    assert f"{NEW_VERSION}:{line} adding-field-with-default: " in result.out
    assert f"    {VOLATILE_DEFAULT}\n    NEW\n" in result.out
    assert f"1 new finding in {len(load_history(str(location)))} migrations (" in result.out


async def test_an_index_without_concurrently_on_an_existing_table_fails(location):
    line = add_migration(location, PLAIN_INDEX)
    result = await run_lint("--migrations", str(location))
    assert result.code == 1
    assert f"{NEW_VERSION}:{line} require-concurrent-index-creation: " in result.out


async def test_a_concurrent_index_outside_a_transaction_passes(location):
    add_migration(location, CONCURRENT_INDEX, transactional=False)
    result = await run_lint("--migrations", str(location))
    assert result.code == 0, result.out
    assert NEW_VERSION not in result.out


async def test_a_concurrent_index_in_a_transactional_migration_fails_because_the_runner_wraps_it_in_one(location):
    add_migration(location, CONCURRENT_INDEX, transactional=True)
    result = await run_lint("--migrations", str(location))
    assert result.code == 1
    assert f"{NEW_VERSION}:" in result.out and " ban-concurrent-index-creation-in-transaction: " in result.out


def test_squawk_reads_the_session_timeouts_then_the_statements_in_the_transaction_the_runner_uses(location):
    add_migration(location, CONCURRENT_INDEX, transactional=False)
    history = load_history(str(location))
    transactional, outside = lint_input(history.get("5_20261124041220_seed_runs.py")), lint_input(history.get(NEW_VERSION))
    session = "SET client_connection_check_interval = '1s';\nSET lock_timeout = '5000ms';\nSET statement_timeout = '120000ms';\n"
    assert transactional.startswith(session + "BEGIN;\n-- hand edit: create the enum types") and transactional.endswith(";\nCOMMIT;\n")
    assert outside == session + CONCURRENT_INDEX + "\n"


async def test_an_allowlisted_finding_passes_and_shows_its_reason(location):
    add_migration(location, f"{PLAIN_INDEX}\n        CREATE INDEX \"idx_y\" ON \"users\" (\"username\");")
    append_to_allowlist(location, f'[[allow]]\nversion = "{NEW_VERSION}"\nrule = "require-concurrent-index-creation"\nreason = "users is empty here"\n')
    result = await run_lint("--migrations", str(location))
    assert result.code == 0, result.out
    assert result.out.count("    allowed: users is empty here\n") == 2


async def test_an_entry_with_match_accepts_only_the_statements_it_names(location):
    add_migration(location, f"{PLAIN_INDEX}\n        CREATE INDEX \"idx_y\" ON \"users\" (\"username\");")
    append_to_allowlist(
        location,
        f'[[allow]]\nversion = "{NEW_VERSION}"\nrule = "require-concurrent-index-creation"\nmatch = \'"idx_x"\'\nreason = "reviewed"\n',
    )
    result = await run_lint("--migrations", str(location))
    assert result.code == 1
    assert '    CREATE INDEX "idx_x" ON "users" ("email");\n    allowed: reviewed\n' in result.out
    assert '    CREATE INDEX "idx_y" ON "users" ("username");\n    NEW\n' in result.out


async def test_stale_entries_are_warnings_not_failures(location):
    append_to_allowlist(
        location,
        '[[allow]]\nversion = "5_20261124041220_seed_runs.py"\nrule = "ban-drop-table"\nreason = "none"\n\n'
        '[[allow]]\nversion = "9_20270101000000_gone.py"\nrule = "ban-drop-table"\nreason = "none"\n',
    )
    result = await run_lint("--migrations", str(location))
    assert result.code == 0
    assert "warning: stale allowlist entry 5_20261124041220_seed_runs.py ban-drop-table: accepts no finding of that migration any more" in result.out
    assert "warning: stale allowlist entry 9_20270101000000_gone.py ban-drop-table: names no migration file of the folder" in result.out


async def test_only_the_versions_named_are_linted(location):
    add_migration(location, PLAIN_INDEX)
    result = await run_lint("--migrations", str(location), "5")
    assert result.code == 0
    assert result.out.splitlines()[-1] == "no new finding in 1 migration (0 allowed)"
    assert (await run_lint("--migrations", str(location), str(HEAD_NUMBER + 1), NEW_VERSION)).out.splitlines()[-2] == "1 new finding in 1 migration (0 allowed)"
    unknown = await run_lint("--migrations", str(location), str(HEAD_NUMBER + 2))
    assert unknown.code == 2 and unknown.err.startswith(f"error: no migration '{HEAD_NUMBER + 2}' in ")


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[[allow]\n", "not valid TOML"),
        ('[[allow]]\nversion = "5_20261124041220_seed_runs.py"\nrule = "ban-drop-table"\n', f"[[allow]] #{SHIPPED_ALLOWS + 1} has no 'reason'"),
        ('[[exclude]]\nrule = "ban-drop-table"\nreason = "x"\nwhy = "y"\n', "[[exclude]] #3 has an unknown key 'why'"),
        ('[[allow]]\nversion = "5"\nrule = "ban-drop-table"\nreason = "x"\n', "version '5' is not a migration file name"),
        ('[[allow]]\nversion = "5_20261124041220_seed_runs.py"\nrule = "ban-drop-table"\nreason = " "\n', "'reason' must be a non-empty string"),
        ("ignore = [1]\n", "unknown key 'ignore'"),
    ],
)
async def test_a_malformed_allowlist_is_one_line_naming_the_file_and_the_problem(location, toml, problem):
    append_to_allowlist(location, toml)
    result = await run_lint("--migrations", str(location))
    assert result.code == 2 and result.out == ""
    assert result.err.startswith(f"error: {location / ALLOWLIST_NAME}: ") and problem in result.err, result.err
    assert result.err.count("\n") == 1


async def test_an_allowlist_file_given_must_exist(tmp_path):
    result = await run_lint("--allowlist", str(tmp_path / "nowhere.toml"))
    assert result.code == 2 and result.err.startswith(f"error: {tmp_path / 'nowhere.toml'}: cannot read the lint allowlist")


async def test_squawk_refusing_an_excluded_rule_name_is_one_line(location):
    append_to_allowlist(location, '[[exclude]]\nrule = "no-such-rule"\nreason = "a typo"\n')
    result = await run_lint("--migrations", str(location))
    assert result.code == 1
    assert result.err.startswith("error: squawk failed (exit 2): ") and "no-such-rule" in result.err and result.err.count("\n") == 1


def test_output_that_is_not_squawks_json_is_one_error_line():
    echo = shutil.which("echo")
    assert echo is not None
    with pytest.raises(LanglearnError, match=r"^squawk's report is not the JSON this version reads \(JSONDecodeError: .*\); it printed: --config ") as raised:
        lint(load_history(), None, squawk=echo)
    assert "\n" not in str(raised.value)


async def test_without_squawk_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    # neither beside this Python nor on PATH
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    result = await run_lint()
    assert (result.code, result.out, result.err) == (2, "", f"error: {SQUAWK_MISSING}\n")
    assert SQUAWK_MISSING == "squawk is not installed: pip install 'langlearn-data[lint]'"


def test_squawk_is_found_beside_this_python_first():
    assert find_squawk() == str(Path(sys.executable).with_name("squawk"))
