"""The `langlearn` console script: every subcommand's --help, a bad argument, and its main path.

The migrate/check/status, verify and seed paths have files of their own (test_startup.py,
test_verify.py, test_seed.py); here are the shared shape and the server and db subcommands."""

from __future__ import annotations

import io
import re
import socket
import subprocess

import asyncpg
import pytest

from langlearn import history
from langlearn.cli import main
from langlearn.databases import database_name, with_database
from langlearn.urls import asyncpg_url
from tests.conftest import LANGLEARN, run_cli

SUBCOMMANDS = [
    ["upgrade"], ["downgrade"], ["check"], ["status"], ["verify"], ["seed"],
    ["migrations"], ["migrations", "check"], ["migrations", "plan"], ["migrations", "sql"], ["migrations", "lint"],
    ["migrations", "state-diff"], ["migrations", "repair"], ["migrations", "stamp"], ["migrations", "aerich-config"], ["leagues"], ["leagues", "close-week"],
    ["server"], ["server", "url"], ["server", "status"], ["server", "stop"],
    ["db"], ["db", "create"], ["db", "drop"], ["db", "reset"], ["backup"], ["restore"],
]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_top_level_help_lists_every_subcommand():
    result = run_cli(LANGLEARN, "--help")
    assert result.returncode == 0 and result.stderr == ""
    for name in ("upgrade", "downgrade", "check", "status", "migrations", "verify", "seed", "leagues", "server", "db", "backup", "restore"):
        assert re.search(rf"\n    {name}[ \n]", result.stdout), name  # argparse puts a long name on a line of its own


def test_python_dash_m_langlearn_is_the_same_command():
    import sys

    result = run_cli(sys.executable, "-m", "langlearn", "--help")
    assert result.returncode == 0 and result.stdout == run_cli(LANGLEARN, "--help").stdout


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(command):
    result = run_cli(LANGLEARN, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: langlearn {' '.join(command)}")


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        (["upgrade", "--lock-timeout", "-1"], "argument --lock-timeout: '-1' must be a finite number of seconds above 0"),
        (["check", "--bogus"], "unrecognized arguments: --bogus"),
        (["status", "extra"], "unrecognized arguments: extra"),
        (["verify", "--skip-schema", "--skip-migrations", "--skip-invariants"], "every check is skipped"),
        (["seed", "--users", "0"], "argument --users: must be a whole number from 1"),
        (["server", "restart"], "argument ACTION: invalid choice: 'restart'"),
        (["server"], "the following arguments are required: ACTION"),
        (["db", "create"], "the following arguments are required: NAME"),
        (["db", "create", "no spaces"], "'no spaces' is not a database name"),
        (["db", "drop", "template1", "--yes"], "'template1' is one of PostgreSQL's own databases"),
        (["upgrade", "--migrations", "/nonexistent"], "no migrations found at /nonexistent/models;"),
        (["check", "--migrations", "/nonexistent"], "no migrations found at /nonexistent/models;"),
        (["status", "--migrations", "/nonexistent"], "no migrations found at /nonexistent/models;"),
        (["backup", "--output"], "argument --output: expected one argument"),
        (["restore"], "the following arguments are required: FILE"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(command, complaint, head_db):
    result = run_cli(LANGLEARN, *command, database=head_db)
    assert result.returncode == 2
    assert complaint in one_line_error(result)


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        (["db", "drop", "scratch"], "deletes every row of scratch; add --yes to confirm"),
        (["db", "reset", "scratch"], "deletes every row of scratch; add --yes to confirm"),
        (["restore", "x.dump"], "fills the database with the backup; add --yes to confirm"),
        (["downgrade", "--steps", "1"], "nothing was done; confirm with --yes"),
    ],
)
def test_destruction_without_yes_is_refused_with_exit_1(command, complaint, head_db):
    """The legend: 1 is "refused" (a valid command the tool declines), 2 a command line it cannot run."""
    result = run_cli(LANGLEARN, *command, database=head_db)
    assert result.returncode == 1
    assert complaint in one_line_error(result)


async def test_main_writes_to_the_streams_it_is_given(head_db, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", head_db)
    out, err = io.StringIO(), io.StringIO()
    assert await main(["check"], out=out, err=err) == 0
    assert out.getvalue().startswith("database at ") and err.getvalue() == ""
    out, err = io.StringIO(), io.StringIO()
    assert await main(["db", "drop", "x"], out=out, err=err) == 1
    assert out.getvalue() == "" and err.getvalue().count("\n") == 1


def test_server_url_and_status_of_the_private_server():
    url = run_cli(LANGLEARN, "server", "url")
    assert url.returncode == 0 and url.stdout.startswith("postgres://postgres@127.0.0.1:")
    status = run_cli(LANGLEARN, "server", "status")
    assert status.returncode == 0 and status.stdout.startswith("running: data in ")


def test_server_psql_runs_the_wheels_client_against_database_url(head_db):
    result = run_cli(LANGLEARN, "server", "psql", "-X", "-tAc", "SELECT count(*) FROM aerich", database=head_db)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 6


async def test_db_create_reset_drop_round_trip(head_db):
    name = f"{database_name(head_db)}_cli"
    created = run_cli(LANGLEARN, "db", "create", name, database=head_db)
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == f"created {with_database(head_db, name)}"
    again = run_cli(LANGLEARN, "db", "create", name, database=head_db)
    assert again.returncode == 1 and f"database '{name}' already exists" in one_line_error(again)

    target = with_database(head_db, name)
    upgraded = run_cli(LANGLEARN, "upgrade", database=target)
    assert upgraded.returncode == 0, upgraded.stderr
    reset = run_cli(LANGLEARN, "db", "reset", name, "--yes", database=head_db)
    assert reset.returncode == 0 and reset.stdout.startswith("reset ")
    connection = await asyncpg.connect(asyncpg_url(target))
    try:
        assert await connection.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    finally:
        await connection.close()

    dropped = run_cli(LANGLEARN, "db", "drop", name, "--yes", database=head_db)
    assert dropped.returncode == 0 and dropped.stdout.strip() == f"dropped {name}"
    gone = run_cli(LANGLEARN, "db", "drop", name, "--yes", database=head_db)
    assert gone.returncode == 0 and gone.stdout.strip() == f"{name} does not exist; nothing to drop"


async def test_db_drop_refuses_a_database_marked_production(head_db, connect):
    name = database_name(head_db)
    connection = await connect(head_db)
    await connection.execute(f"ALTER DATABASE \"{name}\" SET langlearn.environment = 'Production'")
    refused = run_cli(LANGLEARN, "db", "drop", name, "--yes", database=head_db)
    assert refused.returncode == 1
    assert "is marked langlearn.environment = 'Production'" in one_line_error(refused)
    assert await connection.fetchval("SELECT count(*) FROM aerich") >= 6  # still there


def test_db_create_with_an_unknown_user_is_a_one_line_configuration_error(head_db):
    result = run_cli(LANGLEARN, "db", "create", "anything", database=head_db.replace("postgres@", "nobody@"))
    assert result.returncode == 2
    assert "refused user 'nobody'" in one_line_error(result)


async def test_db_create_by_a_user_without_createdb_is_refused_in_one_line(head_db, connect):
    role = f"{database_name(head_db)}_nocreatedb"
    admin = await connect(head_db)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    try:
        result = run_cli(LANGLEARN, "db", "create", f"{role}_db", database=head_db.replace("postgres@", f"{role}@"))
        assert result.returncode == 1
        assert "may not create databases" in one_line_error(result) and "grant it CREATEDB" in result.stderr
    finally:
        await admin.execute(f'DROP ROLE "{role}"')


@pytest.mark.slow
def test_server_url_status_stop_of_a_private_server_of_its_own(tmp_path):
    own = {"LANGLEARN_DATA_DIR": str(tmp_path / "pgdata")}
    before = run_cli(LANGLEARN, "server", "status", env=own)
    assert before.returncode == 1 and before.stdout.strip() == f"stopped: data in {tmp_path / 'pgdata'}"
    started = run_cli(LANGLEARN, "server", "url", env=own, timeout=180)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("postgres://postgres@127.0.0.1:") and "Started the private PostgreSQL server" in started.stderr
    try:
        assert run_cli(LANGLEARN, "server", "status", env=own).returncode == 0
        again = run_cli(LANGLEARN, "server", "url", env=own)
        assert again.stdout == started.stdout and again.stderr == ""  # reused, not restarted
        upgraded = run_cli(LANGLEARN, "upgrade", env=own)  # DATABASE_URL unset: this private server
        assert upgraded.returncode == 0 and upgraded.stdout.startswith(f"applied {len(history.version_files())} migration(s); ")
    finally:
        stopped = run_cli(LANGLEARN, "server", "stop", env=own)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
    after = run_cli(LANGLEARN, "server", "status", env=own)
    assert after.returncode == 1 and after.stdout.startswith("stopped: ")
    assert run_cli(LANGLEARN, "server", "stop", env=own).stdout.strip() == "not running"


@pytest.mark.slow
async def test_the_private_server_keeps_its_port_across_restarts_and_says_so_when_it_must_move(tmp_path):
    own = {"LANGLEARN_DATA_DIR": str(tmp_path / "pgdata")}
    first = run_cli(LANGLEARN, "server", "url", env=own, timeout=180)
    assert first.returncode == 0, first.stderr
    url = first.stdout.strip()
    try:
        # clients connected when it stops: their closed connections linger in TIME_WAIT on its port
        sessions = [await asyncpg.connect(asyncpg_url(url)) for _ in range(3)]
        assert run_cli(LANGLEARN, "server", "stop", env=own).returncode == 0
        for session in sessions:
            session.terminate()
        again = run_cli(LANGLEARN, "server", "url", env=own)
        assert again.returncode == 0 and again.stdout.strip() == url, again.stderr
        assert "moved" not in again.stderr

        assert run_cli(LANGLEARN, "server", "stop", env=own).returncode == 0
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with socket.socket() as squatter:  # another process takes the port meanwhile
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the last run's TIME_WAIT, as a server binds
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            moved = run_cli(LANGLEARN, "server", "url", env=own)
        assert moved.returncode == 0 and moved.stdout.strip() != url
        notice = [line for line in moved.stderr.splitlines() if "moved" in line]
        assert len(notice) == 1 and f"Its port {port} is taken by another process, so it moved to " in notice[0]
    finally:
        run_cli(LANGLEARN, "server", "stop", env=own)
