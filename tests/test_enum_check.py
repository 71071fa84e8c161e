"""`langlearn migrations check` and the native enum types, which Aerich writes no SQL for: `check` replays the
history's CREATE TYPE / DROP TYPE / ALTER TYPE statements and compares the types and labels with the models'
columns. Through the real CLI, on copies of the history; a model change is a model module the subprocess
imports at start (`sitecustomize`), so the repo's models stay as they are for every other test."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from langlearn.history.enum_types import enum_types_at_head
from langlearn.history.files import load_history
from langlearn.settings import APP_LABEL
from langlearn.verify.expected import expected_schema
from tests.conftest import LANGLEARN, run_cli
from tests.test_migration_tools import copy_history, edit_sql
from tests.test_startup import history_with

HISTORY = load_history()
HEAD = HISTORY.versions[-1]
NEXT = HISTORY.head.number + 1 if HISTORY.head else 0
SEED_RUNS = "5_20261124041220_seed_runs.py"
CREATE_STATUS = """CREATE TYPE "seed_run_status" AS ENUM ('running', 'completed', 'failed');"""
CREATE_PRESET = """CREATE TYPE "seed_preset" AS ENUM ('demo', 'scale');"""

CHANGED_MODELS = '''"""The models as a developer changed them: a new table with a native enum column."""

from enum import Enum

from tortoise import fields

import langlearn.models
from langlearn.models.base import UUIDModel
from langlearn.models.enums import NativeEnumField, pg_enum


@pg_enum("badge_tier")
class BadgeTier(str, Enum):
    BRONZE = "bronze"
    GOLD = "gold"


class Badge(UUIDModel):
    name = fields.CharField(max_length=50)
    tier = NativeEnumField(BadgeTier)

    class Meta:
        table = "badges"


langlearn.models.Badge = Badge  # Tortoise finds an app's models among its module's attributes
'''
OFFLINE_CONFIG = '''from langlearn.history.review import OFFLINE_URL
from langlearn.settings import tortoise_config

TORTOISE_ORM = tortoise_config(OFFLINE_URL)  # `aerich migrate --offline` connects to nothing
'''


def check(location: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = run_cli(LANGLEARN, "migrations", "check", "--migrations", location, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def red(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 1 and result.stderr == "", (result.stdout, result.stderr)
    return result.stdout.splitlines()


def green(result: subprocess.CompletedProcess[str], head: str) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (0, f"models agree with {head}: `aerich migrate` would generate nothing\n", "")


def header(head: str) -> str:
    return f"models agree with {head}, but the native enum types differ from those the history creates (Aerich writes no SQL for them):"


def test_the_shipped_history_creates_exactly_the_types_and_labels_of_the_models():
    at_head = {name: enum_type.labels for name, enum_type in enum_types_at_head(HISTORY).items()}
    assert at_head == expected_schema().enums  # what `verify` expects of a database at head
    green(check(str(Path(HISTORY.folder).parent)), HEAD)
    green(run_cli(LANGLEARN, "migrations", "check"), HEAD)


# --- a history that lacks or keeps a type ---------------------------------------------------------


def test_a_type_no_migration_creates_names_its_columns_and_the_create_type_for_the_migration_that_first_uses_it(tmp_path):
    location, folder = copy_history(tmp_path)
    edit_sql(folder / SEED_RUNS, CREATE_STATUS, "")
    assert red(check(location)) == [
        header(HEAD),
        f"+ SeedRun.status (seed_runs.status): enum type \"seed_run_status\" is created by no migration; add `{CREATE_STATUS}` "
        f"to {SEED_RUNS}, before its first use (and `DROP TYPE \"seed_run_status\";` to its downgrade)",
    ]


def test_a_label_the_history_lacks_names_the_add_value_that_puts_it_where_the_model_has_it(tmp_path):
    location, folder = copy_history(tmp_path)
    edit_sql(folder / SEED_RUNS, CREATE_STATUS, """CREATE TYPE "seed_run_status" AS ENUM ('completed');""")
    assert red(check(location)) == [
        header(HEAD),
        f"+ SeedRun.status (seed_runs.status): enum type \"seed_run_status\" lacks the label 'running' at {HEAD}; "
        f"add `ALTER TYPE \"seed_run_status\" ADD VALUE 'running' BEFORE 'completed';` to {HEAD} if no database has applied it yet, else to a new migration",
        f"+ SeedRun.status (seed_runs.status): enum type \"seed_run_status\" lacks the label 'failed' at {HEAD}; "
        f"add `ALTER TYPE \"seed_run_status\" ADD VALUE 'failed' AFTER 'completed';` to {HEAD} if no database has applied it yet, else to a new migration",
    ]


def test_a_type_the_history_keeps_that_no_model_uses_names_the_drop_type(tmp_path):
    location = history_with(tmp_path, "scratch_type", """CREATE TYPE "scratch" AS ENUM ('a', 'it''s');""")
    newest = load_history(location).versions[-1]
    assert red(check(location)) == [
        header(newest),
        f"- enum type \"scratch\" is created by {newest} but used by no model field; add `DROP TYPE \"scratch\";` "
        f"to {newest} if no database has applied it yet, else to a new migration (and `CREATE TYPE \"scratch\" AS ENUM ('a', 'it''s');` to its downgrade)",
    ]


@pytest.mark.parametrize(("edit", "appended"), [
    pytest.param((CREATE_STATUS, f"DO $$ BEGIN {CREATE_STATUS} EXCEPTION WHEN duplicate_object THEN NULL; END $$;"), None, id="inside-a-DO-block"),
    pytest.param((CREATE_STATUS, """CREATE TYPE seed_run_state AS ENUM ('running', 'completed', 'failed');
        ALTER TYPE seed_run_state RENAME TO "seed_run_status";"""), None, id="renamed"),
    pytest.param((CREATE_PRESET, """CREATE TYPE public."seed_preset" AS ENUM ('demo', 'big');
        ALTER TYPE "seed_preset" RENAME VALUE 'big' TO 'scale';"""), None, id="label-renamed"),
    pytest.param(
        (CREATE_PRESET, """CREATE TYPE "seed_preset" AS ENUM ('scale');"""), """ALTER TYPE "seed_preset" ADD VALUE IF NOT EXISTS 'demo' BEFORE 'scale';""",
        id="label-added-later",
    ),
    pytest.param(None, """-- CREATE TYPE "in_a_comment" AS ENUM ('x');
        COMMENT ON TABLE "seed_runs" IS 'CREATE TYPE "in_a_string" AS ENUM (''x'')';
        CREATE TYPE "scratch" AS ENUM ('x');
        DROP TYPE IF EXISTS "nothing", scratch CASCADE;""", id="created-and-dropped"),
])
def test_check_replays_what_the_statements_do_to_the_types(tmp_path, edit, appended):
    """Each history leaves the models' types and labels at its head, however its statements get there."""
    location = history_with(tmp_path, "types", appended) if appended else copy_history(tmp_path)[0]
    if edit:
        edit_sql(Path(location) / APP_LABEL / SEED_RUNS, *edit)
    green(check(location), load_history(location).versions[-1])


# --- a model change, through Aerich's own workflow --------------------------------------------------


async def test_a_model_change_adding_a_native_enum_fails_check_until_its_create_type_is_added_and_so_does_its_removal(head_db, connect, tmp_path):
    """The issue's case: `aerich migrate` writes the table but no CREATE TYPE, which `check` used to pass and
    `upgrade` to fail on. The statements `check` names are added as printed; then upgrade and downgrade work.
    Removing the model again needs the DROP TYPE that `check` names, in the migration that drops the table."""
    location, folder = copy_history(tmp_path)
    changed_code, config_code = tmp_path / "changed", tmp_path / "config"
    changed_code.mkdir()
    config_code.mkdir()
    (changed_code / "changed_models.py").write_text(CHANGED_MODELS)
    (changed_code / "sitecustomize.py").write_text("import changed_models  # noqa: F401\n")
    (config_code / "offline_config.py").write_text(OFFLINE_CONFIG)
    config = tmp_path / "pyproject.toml"
    config.write_text(f'[tool.aerich]\ntortoise_orm = "offline_config.TORTOISE_ORM"\nlocation = "{location}"\nsrc_folder = "{config_code}"\n')
    changed, unchanged = {"PYTHONPATH": f"{changed_code}:{config_code}"}, {"PYTHONPATH": str(config_code)}
    create_line = "+ Badge.tier (badges.tier): enum type \"badge_tier\" is created by no migration; add `CREATE TYPE \"badge_tier\" AS ENUM ('bronze', 'gold');` to"

    # before its migration: the table, what Aerich would write, and the type it would not
    before = red(check(location, changed))
    assert before[:2] == [f"{HEAD} → the models: 1 table added", "+ table badges (model Badge): 4 fields"]
    enum_block = before.index("and the native enum types, which Aerich writes no SQL for (one line each):")
    assert before[enum_block + 1] == f"{create_line} the new migration, before its first use (and `DROP TYPE \"badge_tier\";` to its downgrade)"
    assert before[-1].startswith("fix: run `aerich migrate --name <verb_object>`")

    # Aerich's migration: the state agrees, the type is still missing, and `check` names the file it goes in
    aerich_migrate(config, "add_badges", changed)
    added = next(folder.glob(f"{NEXT}_*_add_badges.py"))
    after = red(check(location, changed))
    assert after == [header(added.name), f"{create_line} {added.name}, before its first use (and `DROP TYPE \"badge_tier\";` to its downgrade)"]
    failed = run_cli(LANGLEARN, "upgrade", "--migrations", location, database=head_db, env=changed)
    assert failed.returncode == 1 and 'type "badge_tier" does not exist' in failed.stderr, failed.stderr

    create_type, drop_type = statements_named(after[1])
    prepend(added, "upgrade", create_type)
    edit_sql(added, 'DROP TABLE IF EXISTS "badges";', f'DROP TABLE IF EXISTS "badges";\n        {drop_type}')
    green(check(location, changed), added.name)
    upgraded = run_cli(LANGLEARN, "upgrade", "--migrations", location, database=head_db, env=changed)
    assert upgraded.returncode == 0 and upgraded.stdout.endswith("schema matches the models\n"), upgraded.stderr

    # the model removed again: Aerich drops its table, and `check` names the DROP TYPE it does not write
    drop_line = "- enum type \"badge_tier\" is created by {} but used by no model field; add `DROP TYPE \"badge_tier\";` to {}"
    recreate = " (and `CREATE TYPE \"badge_tier\" AS ENUM ('bronze', 'gold');` to its downgrade)"
    removed = red(check(location, unchanged))
    assert removed[:2] == [f"{added.name} → the models: 1 table removed", "- table badges (model Badge): 4 fields"]
    assert drop_line.format(added.name, "the new migration") + recreate in removed
    aerich_migrate(config, "remove_badges", unchanged)
    dropped = next(folder.glob(f"{NEXT + 1}_*_remove_badges.py"))
    after_removal = red(check(location, unchanged))
    assert after_removal == [header(dropped.name), drop_line.format(added.name, dropped.name) + ", after the statements that drop its columns" + recreate]

    drop_type, create_type = statements_named(after_removal[1])
    edit_sql(dropped, 'DROP TABLE IF EXISTS "badges";', f'DROP TABLE IF EXISTS "badges";\n        {drop_type}')
    prepend(dropped, "downgrade", create_type)
    green(check(location, unchanged), dropped.name)
    upgraded = run_cli(LANGLEARN, "upgrade", "--migrations", location, database=head_db, env=unchanged)
    # no warning either (an enum type left over would be one: "…, 1 warning(s)")
    assert upgraded.returncode == 0 and upgraded.stdout.endswith("schema matches the models\n"), upgraded.stderr
    reverted = run_cli(LANGLEARN, "downgrade", "--steps", "2", "--yes", "--migrations", location, database=head_db, env=unchanged)
    assert reverted.returncode == 0, reverted.stderr
    assert await (await connect(head_db)).fetchval("SELECT count(*) FROM pg_type WHERE typname = 'badge_tier'") == 0


def aerich_migrate(config: Path, name: str, env: dict[str, str]) -> None:
    """The real `aerich migrate`, offline, into the copy of the history."""
    result = run_cli("aerich", "-c", str(config), "migrate", "--offline", "--name", name, env=env)
    assert result.returncode == 0 and "Success creating migration file" in result.stdout, (result.stdout, result.stderr)


def prepend(migration: Path, function: str, statement: str) -> None:
    """Put a statement first in a generated migration's upgrade or downgrade."""
    opening = f'async def {function}(db: BaseDBAsyncClient) -> str:\n    return """'
    edit_sql(migration, opening, f"{opening}\n        {statement}")


def statements_named(line: str) -> list[str]:
    """The statements a `check` line says to add, in order: the upgrade's, then its downgrade's."""
    return re.findall(r"`([^`]+;)`", line)
