"""Settings: DATABASE_URL validation, one-line errors, and the private server."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from langlearn.databases import with_database
from langlearn.settings import ConfigError, redact, validate_url
from tests.conftest import run_cli


def test_postgresql_scheme_and_missing_port_are_normalised():
    assert validate_url("postgresql://app:secret@db.internal/langlearn") == "postgres://app:secret@db.internal:5432/langlearn"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not a url", "scheme '(none)' is not PostgreSQL"),
        ("mysql://app@db/langlearn", "scheme 'mysql' is not PostgreSQL"),
        ("postgres://app@db:port/langlearn", "is malformed"),
        ("postgres://app@db:5432/", "names no database"),
        ("postgres:///langlearn", "names no host"),
    ],
)
def test_malformed_urls_are_rejected_with_the_problem_and_the_expected_shape(url, problem):
    with pytest.raises(ConfigError) as error:
        validate_url(url)
    assert problem in str(error.value)
    assert "expected postgres://user:password@host:port/database" in str(error.value)


def test_passwords_never_appear_in_messages():
    assert redact("postgres://app:s3cret@db:5432/x") == "postgres://app:***@db:5432/x"
    with pytest.raises(ConfigError) as error:
        validate_url("postgres://app:s3cret@db:5432/")
    assert "s3cret" not in str(error.value)


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("url", "fragments"),
    [
        ("mysql://app@db/langlearn", ["not PostgreSQL"]),
        ("postgres://app:pw@127.0.0.1:1/langlearn", ["cannot reach PostgreSQL at 127.0.0.1:1", "is the server running"]),
    ],
)
def test_aerich_with_a_bad_database_url_exits_with_one_line(url, fragments):
    _assert_one_line_error(run_cli("aerich", "heads", database=url), *fragments)


async def test_aerich_against_a_missing_database_names_it(server):
    missing = with_database(server.url, "no_such_database_here")
    _assert_one_line_error(run_cli("aerich", "upgrade", database=missing), "database 'no_such_database_here' does not exist")


def test_private_server_is_reused_and_says_how_to_reach_it():
    first = run_cli("langlearn", "server", "url")
    second = run_cli("langlearn", "server", "url")
    assert first.returncode == 0 and first.stdout == second.stdout
    url = urlsplit(first.stdout.strip())
    assert url.scheme == "postgres" and url.hostname == "127.0.0.1" and url.path == "/langlearn"
    status = run_cli("langlearn", "server", "status")
    assert status.returncode == 0 and status.stdout.startswith("running: data in ")
    assert "/.pgdata" in status.stdout


def test_private_server_cli_rejects_unknown_commands():
    result = run_cli("langlearn", "server", "explode")
    assert result.returncode == 2 and "invalid choice: 'explode'" in result.stderr and result.stderr.count("\n") == 1


# --- where the private server keeps its data ---------------------------------------------------


def test_private_server_data_dir_is_langlearn_data_dir_when_set(monkeypatch, tmp_path):
    from langlearn.local_server import data_dir

    monkeypatch.setenv("LANGLEARN_DATA_DIR", str(tmp_path / "pg"))
    assert data_dir() == tmp_path / "pg"


def test_private_server_data_dir_is_the_checkouts_pgdata_in_a_checkout(monkeypatch):
    from langlearn.local_server import data_dir
    from tests.conftest import REPO_ROOT

    monkeypatch.delenv("LANGLEARN_DATA_DIR", raising=False)
    assert data_dir() == REPO_ROOT / ".pgdata"


def test_private_server_data_dir_outside_a_checkout_is_the_users_xdg_data_dir(monkeypatch, tmp_path):
    from langlearn import local_server

    monkeypatch.delenv("LANGLEARN_DATA_DIR", raising=False)
    monkeypatch.setattr(local_server, "_checkout_root", lambda: None)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert local_server.data_dir() == tmp_path / "xdg" / "langlearn"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert local_server.data_dir() == tmp_path / "home" / ".local" / "share" / "langlearn"
