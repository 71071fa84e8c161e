"""Whose table is whose (langlearn.verify.ownership): a service's own app beside the package's models.

The service's table here is built by hand (SQL) as its own migration would build it; the package's
history and Aerich's table say which app owns what."""

from __future__ import annotations

import json
import os

import pytest

from langlearn import database
from langlearn.verify import check_schema
from langlearn.verify.ownership import unclaimed_table
from tests.conftest import LANGLEARN, run_cli

NOTES_MODELS = '''
from tortoise import fields
from tortoise.models import Model


class Note(Model):
    """The embedding service's own table, pointing at one of langlearn's users."""

    id = fields.IntField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="notes", on_delete=fields.CASCADE)
    body = fields.CharField(max_length=200)

    class Meta:
        table = "svc_notes"
'''
NOTES_TABLE = """CREATE TABLE svc_notes (id SERIAL PRIMARY KEY, body VARCHAR(200) NOT NULL,
                                        user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE)"""


@pytest.fixture
def notes_module(tmp_path, monkeypatch) -> tuple[str, str]:
    """(module name, the folder holding it): importable here and, through PYTHONPATH, by the CLI."""
    module = f"svc_notes_models_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(NOTES_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return module, str(tmp_path)


def kinds(findings) -> set[tuple[str, str]]:
    return {(finding.kind, finding.subject) for finding in findings}


def verify_schema(database_url: str, *arguments: str, path: str = "") -> tuple[int, dict]:
    result = run_cli(LANGLEARN, "verify", "--skip-invariants", "--skip-migrations", "--json", *arguments,
                     database=database_url, env={"PYTHONPATH": path} if path else None)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


async def test_an_unclaimed_table_is_reported_without_advice_to_drop_it(head_db, connect):
    await (await connect(head_db)).execute(NOTES_TABLE)
    [finding] = [f for f in await check_schema(await connect(head_db)) if f.kind == "extra_table"]
    assert finding.subject == "svc_notes" and finding.severity == "warning"
    assert "DROP" not in finding.message and "--ignore-table svc_notes" in finding.message and "apps=" in finding.message


def test_only_a_table_the_packages_history_had_gets_the_advice_to_drop_it():
    formerly = unclaimed_table("legacy_hearts", {"legacy_hearts": "12_20270101000000_add_hearts.py"})
    assert 'DROP TABLE "legacy_hearts"' in formerly.message and "12_20270101000000_add_hearts.py" in formerly.message
    assert "DROP" not in unclaimed_table("svc_notes", {"users": "0_baseline.py"}).message


async def test_a_registered_app_is_compared_with_its_own_models(head_db, connect, notes_module):
    module, path = notes_module
    connection = await connect(head_db)
    await connection.execute(NOTES_TABLE)
    assert kinds(await check_schema(connection, apps={"notes": [module]})) == set()
    assert verify_schema(head_db, "--app", f"notes={module}", path=path)[0] == 0

    await connection.execute("ALTER TABLE svc_notes ALTER COLUMN body TYPE VARCHAR(50)")  # drift in the service's own table
    assert ("type_differs", "svc_notes.body") in kinds(await check_schema(connection, apps={"notes": [module]}))
    code, report = verify_schema(head_db, "--app", f"notes={module}", path=path)
    assert code == 1 and {(f["kind"], f["subject"]) for f in report["findings"]} == {("type_differs", "svc_notes.body")}


async def test_a_table_another_apps_aerich_history_records_is_left_to_that_app(head_db, connect):
    connection = await connect(head_db)
    await connection.execute(NOTES_TABLE)
    state = {"notes.Note": {"name": "notes.Note", "app": "notes", "table": "svc_notes"}}
    await connection.execute("INSERT INTO aerich (version, app, content) VALUES ('0_20270101000000_init.py', 'notes', $1::jsonb)",
                             json.dumps(state))
    assert kinds(await check_schema(connection)) == set()
    assert verify_schema(head_db)[0] == 0
    async with database(head_db, migrate="check", global_fallback=False) as startup:  # no apps=: no warning either
        assert startup.warnings == ()


async def test_ignored_tables_are_left_alone(head_db, connect):
    connection = await connect(head_db)
    await connection.execute(NOTES_TABLE)
    await connection.execute("CREATE TABLE tmp_import (id int)")
    assert kinds(await check_schema(connection, ignore=("svc_notes", "tmp_*"))) == set()
    assert verify_schema(head_db, "--ignore-table", "svc_notes", "--ignore-table", "tmp_*")[0] == 0
    async with database(head_db, migrate="check", global_fallback=False, ignore_tables=["svc_notes", "tmp_*"]) as startup:
        assert startup.warnings == ()


def test_a_malformed_app_argument_is_one_line(head_db):
    result = run_cli(LANGLEARN, "verify", "--app", "notes=", database=head_db)
    assert result.returncode == 2 and "is neither an app's NAME nor LABEL=MODULE[,MODULE]" in result.stderr and result.stderr.count("\n") == 1
    undeclared = run_cli(LANGLEARN, "verify", "--app", "notes", database=head_db)  # a NAME: declared in pyproject.toml, here none is
    assert undeclared.returncode == 2 and undeclared.stderr == (
        "error: no app 'notes' with a migration history; known: none (declare a service's app in pyproject.toml under [tool.langlearn.apps.notes])\n"
    )
