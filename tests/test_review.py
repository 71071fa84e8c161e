"""`langlearn migrations check` and `state-diff`: the real history's model states, the real models, Aerich's
real diff engine, and no database (except where the real `aerich migrate` is run for comparison)."""

from __future__ import annotations

import argparse
import copy
import io
import shutil
import socket
import time
from pathlib import Path

import pytest

from langlearn.cli import Parser, Streams, review
from langlearn.errors import UsageError
from langlearn.history.files import load_history, load_migration, split_statements
from langlearn.history.review import AttributeChange, StateChange, describe_current_models, model_changes, render_state_diff, state_diff
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION
from tests.conftest import REPO_ROOT, run_cli

HISTORY = load_history()
STATES = {migration.number: migration.models_state for migration in HISTORY}
HEAD = HISTORY.versions[-1]
NEWEST = HISTORY.get(HEAD).number
# the newest migration that changed the models: a later one may change only the SQL (as the partitioning did)
MODEL_CHANGE = next(
    migration for migration in reversed(HISTORY.migrations[1:]) if state_diff(STATES[migration.number - 1], migration.models_state)
)
BEFORE_MODEL_CHANGE = HISTORY.versions[HISTORY.versions.index(MODEL_CHANGE.version) - 1]
SEED_RUNS = "5_20261124041220_seed_runs.py"


def parse(*argv: str) -> argparse.Namespace:
    """The two subcommands as `langlearn migrations` registers them."""
    parser = Parser(prog="langlearn migrations")
    review.register(parser.add_subparsers(dest="migrations_command", required=True, parser_class=Parser))
    return parser.parse_args(argv)


async def run(*argv: str) -> tuple[int, str]:
    options = parse(*argv)
    out, err = io.StringIO(), io.StringIO()
    code = await options.handler(options, Streams(out, err))
    assert err.getvalue() == ""
    return code, out.getvalue()


@pytest.fixture
def without_head(tmp_path: Path) -> str:
    """A copy of the history up to the newest migration that changed the models, without it: the models have what
    that one added."""
    folder = tmp_path / "migrations" / APP_LABEL
    folder.mkdir(parents=True)
    for migration in HISTORY.migrations[: HISTORY.versions.index(MODEL_CHANGE.version)]:
        shutil.copy(migration.path, folder)
    return str(folder.parent)


# --- state_diff on the real history --------------------------------------------------------------


def test_state_diff_4_to_5_is_the_seed_runs_table_with_its_fields():
    changes = state_diff(STATES[4], STATES[5])
    assert [(change.kind, change.table, change.model) for change in changes] == [("table added", "seed_runs", "SeedRun")]
    fields = [line.partition(":")[0] for line in changes[0].contents]
    assert fields == [
        "id", "created_at", "updated_at", "preset", "seed", "code_version", "parameters", "anchor_at", "status",
        "steps_total", "steps_done", "counts", "resumes", "error", "started_at", "finished_at",
    ]
    text = render_state_diff(changes, "4", "5").splitlines()
    assert text[0] == "4 → 5: 1 table added"
    assert text[1].startswith("+ table seed_runs (model SeedRun): 16 fields, comment ")
    assert "    id: UUID, primary key, db default gen_random_uuid()" in text
    assert "    status: \"seed_run_status\", not null, default 'running', db default 'running', comment 'seed_run_status: running, completed, failed'" in text
    assert "    finished_at: TIMESTAMPTZ, null" in text


def test_state_diff_0_to_1_is_what_phase_1_added():
    changes = state_diff(STATES[0], STATES[1])
    assert {(change.kind, change.table, change.subject) for change in changes} == {
        ("table added", "refresh_tokens", ""),
        ("table added", "user_devices", ""),
        ("field added", "users", "provider"),
        ("field added", "users", "last_login_ip"),
    }
    text = render_state_diff(changes, HISTORY.versions[0], HISTORY.versions[1]).splitlines()
    assert text[0] == f"{HISTORY.versions[0]} → {HISTORY.versions[1]}: 2 tables added, 2 fields added"
    assert "+ users.provider: \"auth_provider\", not null, default 'local', db default 'local', comment 'auth_provider: local, google, facebook, apple'" in text
    assert "+ users.last_login_ip: VARCHAR(45), null, comment 'IPv4 or IPv6, as text'" in text
    # a foreign key shows once, with its column, not once more as its `user_id` data field
    assert "    user: column user_id, UUID, not null, references users on delete CASCADE" in text
    assert not any(line.strip().startswith("user_id") for line in text)
    assert "    index idx_refresh_token_user on (user_id)" in text


def test_state_diff_backwards_is_the_removal():
    changes = state_diff(STATES[5], STATES[4])
    assert render_state_diff(changes, "5", "4") == "5 → 4: 1 table removed\n- table seed_runs (model SeedRun): 16 fields"


@pytest.mark.parametrize("number", sorted(STATES))
def test_state_diff_of_a_state_with_itself_is_no_change(number):
    assert state_diff(STATES[number], copy.deepcopy(STATES[number])) == []
    assert render_state_diff([], "A", "B") == "A → B: no schema change"


def test_state_diff_names_each_attribute_that_changed():
    """The head's real state, edited as a model change would: every kind of change, rendered."""
    new = copy.deepcopy(STATES[5])
    user = new["models.User"]
    email = next(field for field in user["data_fields"] if field["name"] == "email")
    email["constraints"]["max_length"] = 320
    email["db_field_types"][""] = "VARCHAR(320)"
    email["nullable"] = True
    user["data_fields"] = [field for field in user["data_fields"] if field["name"] != "display_name"]
    user["indexes"].append({"fields": ["username", "email"], "expressions": [], "name": "idx_users_name_email", "type": "", "extra": ""})
    user["unique_together"].append(["username", "email"])
    user["description"] = "An account."
    new["models.UserFollowing"]["fk_fields"][0]["on_delete"] = "RESTRICT"
    new["models.Course"]["indexes"][0]["fields"] = ["level"]
    new["models.SeedRun"]["table"] = "seed_history"

    text = render_state_diff(state_diff(STATES[5], new), "5", "edited")
    assert text == "\n".join([
        "5 → edited: 1 table renamed, 1 table changed, 1 field removed, 2 fields changed, 1 index added, 1 index changed, 1 unique together added",
        "~ courses: index idx_course_level_published: definition idx_course_level_published on (level, is_published) → idx_course_level_published on (level)",
        "~ table seed_history (model SeedRun): table seed_runs → seed_history",
        "~ user_following.follower: on delete CASCADE → RESTRICT",
        "~ table users (model User): comment \"A learner's account.\" → 'An account.'",
        "- users.display_name: VARCHAR(100), null",
        "~ users.email: db type VARCHAR(255) → VARCHAR(320), max_length 255 → 320, null no → yes",
        "+ users: index idx_users_name_email on (username, email)",
        "+ users: unique together (username, email)",
    ])


def test_state_diff_takes_a_model_class_renamed_over_its_table_as_a_rename():
    new = copy.deepcopy(STATES[5])
    new["models.Account"] = dict(new.pop("models.User"), name="models.Account")
    assert state_diff(STATES[5], new) == [StateChange("model renamed", "users", "Account", attributes=(AttributeChange("model", "User", "Account"),))]


def test_state_diff_ignores_what_does_not_reach_the_database():
    new = copy.deepcopy(STATES[5])
    user = new["models.User"]
    user["docstring"] = "Rewritten."
    created_at = user["data_fields"][0]
    created_at.update(python_type="str", docstring="when", auto_now=True)
    created_at["constraints"]["readOnly"] = False  # a validator: no CHECK is generated for it
    created_at["db_field_types"]["oracle"] = "DATE"  # another database's type
    user["pk_field"]["default"] = "<function uuid.uuid1>"  # Python fills it in
    new["models.Aerich"]["table"] = "aerich_history"  # Aerich's own table
    assert state_diff(STATES[5], new) == []


# --- check: the models against the newest migration ---------------------------------------------


async def test_check_is_green_on_the_repo():
    changes = await model_changes()
    assert changes.agree and changes.head == HEAD
    assert (changes.changes, changes.upgrade_sql, changes.downgrade_sql, changes.aerich_warnings) == ((), (), (), ())
    assert await run("check") == (0, f"models agree with {HEAD}: `aerich migrate` would generate nothing\n")


async def test_check_is_red_before_the_migration_of_a_model_change_and_green_after_it(without_head):
    changes = await model_changes(without_head)
    assert not changes.agree and changes.head == BEFORE_MODEL_CHANGE
    # what that migration recorded is exactly what the models have beyond the one before it
    assert list(changes.changes) == state_diff(STATES[MODEL_CHANGE.number - 1], STATES[MODEL_CHANGE.number])
    assert changes.upgrade_sql and changes.downgrade_sql

    code, out = await run("check", "--migrations", without_head)
    assert code == 1
    lines = out.splitlines()
    diff = render_state_diff(changes.changes, BEFORE_MODEL_CHANGE, "the models").splitlines()
    assert lines[: len(diff)] == diff
    assert "`aerich migrate` would generate, to upgrade:" in lines and "and to downgrade:" in lines
    for statement in changes.upgrade_sql:
        assert any(line.startswith(f"    {statement.splitlines()[0]}") for line in lines), statement
    assert lines[-1] == "fix: run `aerich migrate --name <verb_object>`, review and complete it by hand (docs/migrations.md), then commit it with the model change"

    shutil.copy(MODEL_CHANGE.path, Path(without_head) / APP_LABEL)  # its migration, committed
    assert (await model_changes(without_head)).agree
    assert await run("check", "--migrations", without_head) == (0, f"models agree with {MODEL_CHANGE.version}: `aerich migrate` would generate nothing\n")


async def test_check_is_red_for_a_change_aerich_writes_no_sql_for(tmp_path):
    """The newest file records `on_delete='RESTRICT'` where the model says CASCADE: Aerich only warns, and
    `check` still fails, asking for a migration written by hand."""
    from aerich.utils import get_formatted_compressed_data

    shutil.copytree(Path(MIGRATIONS_LOCATION) / APP_LABEL, tmp_path / APP_LABEL)
    state = copy.deepcopy(STATES[NEWEST])
    state["models.UserFollowing"]["fk_fields"][0]["on_delete"] = "RESTRICT"
    newest = tmp_path / APP_LABEL / HEAD
    text = newest.read_text()
    newest.write_text(text[: text.index("MODELS_STATE = (")] + f"MODELS_STATE = (\n    {get_formatted_compressed_data(state)}\n)\n")

    changes = await model_changes(str(tmp_path))
    assert not changes.agree and changes.upgrade_sql == () and changes.downgrade_sql == ()
    assert [(change.kind, change.table, change.subject) for change in changes.changes] == [("field changed", "user_following", "follower")]
    assert any("on_delete" in warning for warning in changes.aerich_warnings)
    code, out = await run("check", "--migrations", str(tmp_path))
    assert code == 1
    assert out.splitlines()[:4] == [
        f"{HEAD} → the models: 1 field changed",
        "~ user_following.follower: on delete RESTRICT → CASCADE",
        "",
        "`aerich migrate` would generate no SQL for these changes (Aerich does not handle them)",
    ]
    assert out.splitlines()[-1].startswith("fix: run `aerich migrate --empty --name <verb_object>` (it records the models' state), write its SQL")


async def test_check_reports_what_aerich_migrate_offline_writes(head_db, without_head, tmp_path):
    """The real `aerich migrate --offline` on the same history: its file holds the same SQL, and the state
    it records is the current models as `describe_current_models` reads them."""
    expected = await model_changes(without_head)
    config = tmp_path / "pyproject.toml"
    config.write_text(f'[tool.aerich]\ntortoise_orm = "langlearn.history.aerich.TORTOISE_ORM"\nlocation = "{without_head}"\nsrc_folder = "{REPO_ROOT}"\n')
    result = run_cli("aerich", "-c", str(config), "migrate", "--offline", "--name", "written_again", database=head_db)
    assert result.returncode == 0, result.stderr
    written = load_migration(next((Path(without_head) / APP_LABEL).glob(f"{MODEL_CHANGE.number}_*_written_again.py")))

    def statements(sql: str) -> list[str]:
        return [" ".join(statement.rstrip(";").split()) for statement in split_statements(sql)]

    # Aerich orders the columns one change adds or drops differently from run to run (a set): compare as multisets
    assert sorted(statements(written.upgrade_sql)) == sorted(statements(";\n".join(expected.upgrade_sql)))
    assert sorted(statements(written.downgrade_sql)) == sorted(statements(";\n".join(expected.downgrade_sql)))
    assert state_diff(written.models_state, await describe_current_models()) == []


async def test_repeated_checks_do_not_accumulate_aerichs_operators(without_head):
    from aerich.migrate import Migrate

    first = await model_changes(without_head)
    assert await model_changes(without_head) == first
    assert (await model_changes()).agree  # nothing left over from the red ones
    assert Migrate.upgrade_operators == [] and Migrate.downgrade_operators == [] and Migrate._upgrade_fk_m2m_index_operators == []


async def test_check_and_state_diff_never_connect_nor_start_the_private_server(monkeypatch, tmp_path):
    """DATABASE_URL points at a socket that would see any connection; unset, the private server's data
    folder would fill up if one were started. Neither happens, and both commands are quick."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    try:
        monkeypatch.setenv("DATABASE_URL", f"postgres://nobody@127.0.0.1:{listener.getsockname()[1]}/nothing")
        started = time.monotonic()
        assert (await run("check"))[0] == 0
        assert (await run("state-diff", "4", "models"))[0] == 0
        assert time.monotonic() - started < 10
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("LANGLEARN_DATA_DIR", str(tmp_path / "server"))
    assert (await run("check"))[0] == 0
    assert (await run("state-diff", "models", "5"))[0] == 0
    assert not (tmp_path / "server").exists()


# --- state-diff: the command -----------------------------------------------------------------------


async def test_state_diff_command_names_migrations_by_number_file_name_base_or_models():
    code, out = await run("state-diff", "4", SEED_RUNS)
    assert code == 0 and out == render_state_diff(state_diff(STATES[4], STATES[5]), HISTORY.versions[4], SEED_RUNS) + "\n"
    assert (await run("state-diff", str(NEWEST), "models")) == (0, f"{HEAD} → the models: no schema change\n")
    code, out = await run("state-diff", "base", "0")
    assert code == 0 and out.startswith(f"base → {HISTORY.versions[0]}: 6 tables added\n")
    code, out = await run("state-diff", "--migrations", MIGRATIONS_LOCATION, "models", "4")
    # the models are the newest migration's state, whatever later migrations add
    assert code == 0 and out == render_state_diff(state_diff(STATES[NEWEST], STATES[4]), "the models", HISTORY.versions[4]) + "\n"
    fields = len(STATES[NEWEST]["models.SeedRun"]["data_fields"]) + 1  # and the primary key, as the state counts it
    assert f"- table seed_runs (model SeedRun): {fields} fields" in out.splitlines()


async def test_state_diff_command_refuses_an_unknown_version_and_needs_both():
    with pytest.raises(UsageError, match=rf"no migration '99' .*by number \({', '.join(str(m.number) for m in HISTORY)}\).*`base`, or `models` for the current models"):
        await run("state-diff", "99", "models")
    with pytest.raises(UsageError, match="required: B"):
        parse("state-diff", "4")
