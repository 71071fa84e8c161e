"""A service's own Tortoise app beside the package's: its history written by plain Aerich, both histories run by one
runner under one lock (the CLI, Aerich's CLI, `database(migrate="apply")`), and checked by `check` and `verify`.

The service is what a user writes (docs/startup-and-deploy.md): a `pyproject.toml` declaring its app under
[tool.langlearn.apps] and pointing Aerich at langlearn's config, a models module that imports `User` for its
foreign key, and a `migrations/` folder holding only its own app's history."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from langlearn import database, history
from langlearn.errors import SchemaDrift, UsageError

pytestmark = pytest.mark.slow
HEAD = history.version_files()[-1]

PYPROJECT = """\
[tool.aerich]
tortoise_orm = "langlearn.history.aerich.TORTOISE_ORM"
location = "./migrations"
src_folder = "./."

[tool.langlearn.apps.notes]
models = ["notes_service.models"]
"""

MODELS = """\
from tortoise import fields
from tortoise.models import Model

from langlearn.models import User  # imported as services do: Tortoise keeps it in the `models` app


class Note(Model):
    id = fields.IntField(primary_key=True)
    # related_name not "notes": tests/test_ownership.py's model takes that name on User in the same pytest process
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField("models.User", related_name="service_notes", on_delete=fields.CASCADE)
    body = fields.TextField()

    class Meta:
        table = "svc_notes"
"""
PINNED = "    body = fields.TextField()\n    pinned = fields.BooleanField(default=False, db_default=False)\n"


@pytest.fixture
def service(tmp_path: Path) -> Path:
    folder = tmp_path / "service"
    (folder / "notes_service").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (folder / "notes_service" / "__init__.py").write_text("")
    (folder / "notes_service" / "models.py").write_text(MODELS)
    return folder


def command(*args: str, cwd: Path, database: str) -> subprocess.CompletedProcess[str]:
    """A command run in the service's folder, as its developer runs it."""
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")}
    environment["DATABASE_URL"] = database
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    return subprocess.run(list(args), cwd=cwd, env=environment, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def first_migration(service: Path, database: str) -> Path:
    """`aerich --app notes init-migrations`, then the hand edit every first migration needs: Aerich writes no downgrade."""
    ok(command("aerich", "--app", "notes", "init-migrations", cwd=service, database=database))
    [path] = (service / "migrations" / "notes").glob("0_*.py")
    text = path.read_text()
    empty = 'async def downgrade(db: BaseDBAsyncClient) -> str:\n    return """\n        """'
    assert empty in text, text
    path.write_text(text.replace(empty, 'async def downgrade(db: BaseDBAsyncClient) -> str:\n'
                                        '    # hand edit: Aerich writes no downgrade for a first migration\n'
                                        '    return """\n        DROP TABLE IF EXISTS "svc_notes";"""'))
    return path


def upgrade_sql(path: Path) -> str:
    return next(iter(history.load_history(str(path.parent.parent), path.parent.name))).upgrade_sql


async def applied(connect, url: str) -> list[tuple[str, str]]:
    connection = await connect(url)
    return [(row["app"], row["version"]) for row in await connection.fetch("SELECT app, version FROM aerich ORDER BY id")]


async def tables(connect, url: str) -> set[str]:
    connection = await connect(url)
    return {row["tablename"] for row in await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_aerich_writes_only_the_apps_own_tables_first_and_after_a_model_change(service, empty_db):
    first = first_migration(service, empty_db)
    sql = upgrade_sql(first)
    assert sql.count("CREATE TABLE") == 1 and 'CREATE TABLE IF NOT EXISTS "svc_notes"' in sql, sql  # not the package's 24
    assert 'REFERENCES "users" ("id") ON DELETE CASCADE' in sql
    assert "applied" in ok(command("langlearn", "upgrade", cwd=service, database=empty_db))

    models = service / "notes_service" / "models.py"
    models.write_text(models.read_text().replace("    body = fields.TextField()\n", PINNED))
    unmigrated = command("langlearn", "migrations", "check", cwd=service, database=empty_db)  # CI's offline gate sees it
    assert unmigrated.returncode == 1 and unmigrated.stdout.startswith(f"app models: models agree with {HEAD}"), unmigrated.stdout
    assert "app notes: " in unmigrated.stdout and unmigrated.stdout.rstrip().splitlines()[-1].startswith("fix: run `aerich --app notes migrate --name")
    ok(command("aerich", "--app", "notes", "migrate", "--name", "pinned", cwd=service, database=empty_db))
    assert "app notes: models agree with" in ok(command("langlearn", "migrations", "check", cwd=service, database=empty_db))
    [second] = (service / "migrations" / "notes").glob("1_*_pinned.py")
    text = second.read_text()
    assert 'ALTER TABLE "svc_notes" ADD "pinned" BOOL NOT NULL DEFAULT False' in text and "users" not in text.split("MODELS_STATE")[0]
    upgraded = ok(command("langlearn", "upgrade", cwd=service, database=empty_db))
    assert upgraded.strip() == f"applied 1 migration(s); database at {HEAD} (head); notes at {second.name} (head); schema matches the models"


async def test_one_runner_takes_both_histories_up_together_and_down_in_reverse(service, empty_db, connect):
    first = first_migration(service, empty_db)
    # two deploys at once: one lock for both apps, so each version is applied once
    runs = await asyncio.gather(*(asyncio.to_thread(command, "langlearn", "upgrade", cwd=service, database=empty_db) for _ in range(2)))
    for run in runs:
        ok(run)
    rows = await applied(connect, empty_db)
    assert rows == [*(("models", version) for version in history.version_files()), ("notes", first.name)]  # models first
    status = ok(command("langlearn", "status", cwd=service, database=empty_db)).splitlines()
    assert status[0].startswith("app models (") and f"  at head: {HEAD}" in status
    assert f"app notes ({service / 'migrations' / 'notes'}):" in status and f"  at head: {first.name}" in status

    one_version = command("langlearn", "downgrade", "--to", "3", "--yes", cwd=service, database=empty_db)
    assert one_version.returncode == 2 and "--app models or --app notes" in one_version.stderr and one_version.stderr.count("\n") == 1
    ok(command("langlearn", "downgrade", "--app", "notes", "--to", "base", "--yes", cwd=service, database=empty_db))
    assert "svc_notes" not in await tables(connect, empty_db) and "users" in await tables(connect, empty_db)

    # plain Aerich runs the service's history too, and the digests it ran are recorded as langlearn records them
    assert ok(command("aerich", "--app", "notes", "upgrade", cwd=service, database=empty_db)).strip() == f"Success upgrading to {first.name}"
    checked = ok(command("langlearn", "check", cwd=service, database=empty_db))
    assert checked.strip() == f"database at {HEAD} (head); notes at {first.name} (head); schema matches the models", checked
    connection = await connect(empty_db)
    assert await connection.fetchval("SELECT recorded_by FROM aerich_checksums WHERE app = 'notes'") == "adopt"

    stranding = command("langlearn", "downgrade", "--app", "models", "--to", "base", "--yes", cwd=service, database=empty_db)
    assert stranding.returncode == 2 and stranding.stderr == (
        "error: reverting the package's whole history drops `users`, which app 'notes' builds on (1 of its migration(s) applied); "
        "nothing was reverted: run `langlearn downgrade --app notes --to base` first, or drop --app to revert every app\n"
    )
    assert len(await applied(connect, empty_db)) == len(history.version_files()) + 1
    # everything down: the service's table first, or dropping `users` would fail on its foreign key
    ok(command("langlearn", "downgrade", "--to", "base", "--yes", cwd=service, database=empty_db))
    assert await tables(connect, empty_db) <= {"aerich", "aerich_checksums"}
    assert await applied(connect, empty_db) == []


async def test_verify_checks_each_declared_apps_history_and_tables(service, head_db, connect):
    first = first_migration(service, head_db)
    behind = command("langlearn", "verify", "--skip-invariants", cwd=service, database=head_db)
    assert behind.returncode == 1 and f"pending_migration: {first.name}" in behind.stdout, behind.stdout
    ok(command("langlearn", "upgrade", cwd=service, database=head_db))
    assert ok(command("langlearn", "verify", "--skip-invariants", cwd=service, database=head_db)).strip().endswith("clean (schema, migrations)")
    connection = await connect(head_db)
    await connection.execute('ALTER TABLE "svc_notes" DROP COLUMN "body"')
    drifted = command("langlearn", "verify", "--skip-invariants", cwd=service, database=head_db)
    assert drifted.returncode == 1 and "missing_column: svc_notes.body" in drifted.stdout, drifted.stdout
    unknown = command("langlearn", "verify", "--app", "shop", cwd=service, database=head_db)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no app 'shop' with a migration history; known: notes")


async def test_startup_applies_and_checks_an_app_with_a_history(service, empty_db, connect, monkeypatch):
    first_migration(service, empty_db)
    monkeypatch.syspath_prepend(str(service))
    monkeypatch.delitem(sys.modules, "notes_service.models", raising=False)
    monkeypatch.delitem(sys.modules, "notes_service", raising=False)
    notes = {"models": ["notes_service.models"], "migrations": str(service / "migrations")}
    async with database(empty_db, migrate="apply", apps={"notes": notes}) as startup:
        assert startup.state is not None and startup.state.current == HEAD
        assert startup.states["notes"].at_head and len(startup.applied) == len(history.version_files()) + 1
        from notes_service.models import Note  # type: ignore[import-not-found]

        assert await Note.all().count() == 0
    connection = await connect(empty_db)
    await connection.execute('ALTER TABLE "svc_notes" DROP COLUMN "body"')
    with pytest.raises(SchemaDrift, match="svc_notes.body"):
        async with database(empty_db, migrate="check", apps={"notes": notes}):
            pass
    # without its history, the app's table is the service's business: left alone
    async with database(empty_db, migrate="check", apps={"notes": {"models": ["notes_service.models"]}}) as startup:
        assert "notes" not in startup.states


async def test_the_python_runner_takes_the_same_apps_mapping(service, empty_db, connect):
    first = first_migration(service, empty_db)
    notes = {"notes": {"models": ["notes_service.models"], "migrations": str(service / "migrations")}}
    with pytest.raises(UsageError, match="one app's history; name the app: migrate one of models, notes at a time"):
        await history.upgrade(empty_db, to=3, apps=notes)
    assert await history.upgrade(empty_db, apps=notes) == [*history.version_files(), first.name]
    reverted = await history.downgrade(empty_db, to="base", apps=notes)
    assert reverted == [first.name, *reversed(history.version_files())]  # the service's first: its table points at users
    assert await applied(connect, empty_db) == []


async def test_refusals_name_the_app_and_repair_and_stamp_take_it(service, head_db, connect):
    first = first_migration(service, head_db)
    behind = command("langlearn", "check", cwd=service, database=head_db)
    assert behind.returncode == 1 and behind.stderr == (
        f"error: app 'notes' in the database is behind the code: 1 migration(s) pending, the first {first.name}; "
        "run `langlearn upgrade` (`langlearn status` lists them)\n"
    )
    # tables built outside the history (a schema-only restore): stamped, then compared with the app's models
    connection = await connect(head_db)
    await connection.execute('CREATE TABLE "svc_notes" ("id" SERIAL PRIMARY KEY, "body" TEXT NOT NULL, '
                             '"user_id" UUID NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE)')
    stamped = ok(command("langlearn", "migrations", "stamp", "head", "--app", "notes", cwd=service, database=head_db))
    assert f"recorded {first.name}" in stamped and stamped.splitlines()[-1] == "schema matches the models", stamped
    await connection.execute('ALTER TABLE "svc_notes" DROP COLUMN "body"')
    assert "svc_notes.body" in command("langlearn", "check", cwd=service, database=head_db).stderr
    await connection.execute('ALTER TABLE "svc_notes" ADD COLUMN "body" TEXT NOT NULL')

    first.write_text(first.read_text().replace('DROP TABLE IF EXISTS "svc_notes";', 'DROP TABLE IF EXISTS "svc_notes"; -- reviewed'))
    edited = command("langlearn", "check", cwd=service, database=head_db)
    assert edited.returncode == 1 and f"migration {first.name} of app 'notes' was edited" in edited.stderr
    assert edited.stderr.rstrip().endswith("run `langlearn migrations repair --app notes`"), edited.stderr
    repaired = ok(command("langlearn", "migrations", "repair", "--app", "notes", cwd=service, database=head_db))
    assert repaired.splitlines()[0] == f"re-recorded {first.name}: its downgrade SQL as the file now has it"
    ok(command("langlearn", "check", cwd=service, database=head_db))
