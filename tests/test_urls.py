"""Host lists in a URL (`postgres://u:p@h1:5432,h2:5433/db`) and `target_session_attrs`: validated,
normalised and redacted like a single host, handed to every driver, and named in one-line errors."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from langlearn.errors import ConfigError
from langlearn.settings import check_reachable, server_address
from langlearn.urls import Host, HostListConnect, asyncpg_url, connect_args, hosts, libpq_url, redact, tortoise_connection, validate_url
from tests.conftest import run_cli


def test_a_host_list_is_normalised_host_by_host_and_handed_to_every_driver():
    url = validate_url("postgresql://app:s3cret@h1,[::1]:5433,%2Ftmp/langlearn?target_session_attrs=read-write&maxsize=3")
    assert url == "postgres://app:s3cret@h1:5432,[::1]:5433,%2Ftmp:5432/langlearn?target_session_attrs=read-write&maxsize=3"
    assert hosts(url) == (Host("h1", 5432), Host("::1", 5433), Host("/tmp", 5432))
    assert server_address(url) == "h1:5432,[::1]:5433,/tmp:5432"
    assert redact(url) == "postgres://app:***@h1:5432,[::1]:5433,%2Ftmp:5432/langlearn?target_session_attrs=read-write&maxsize=3"
    assert connect_args(url) == ("postgresql://app:s3cret@h1:5432,[::1]:5433,%2Ftmp:5432/langlearn", {"target_session_attrs": "read-write"})
    assert asyncpg_url(url) == "postgresql://app:s3cret@h1:5432,[::1]:5433,%2Ftmp:5432/langlearn?target_session_attrs=read-write"
    assert libpq_url(url) == "postgresql://app:s3cret@h1:5432,[::1]:5433,%2Ftmp:5432/langlearn?target_session_attrs=read-write"
    credentials = tortoise_connection(url)["credentials"]
    assert (credentials["host"], credentials["port"], credentials["connect"]) == (["h1", "::1", "/tmp"], 5432, HostListConnect((5432, 5433, 5432)))


def test_a_single_host_is_handed_over_as_before():
    credentials = tortoise_connection("postgres://app@db/x")["credentials"]
    assert credentials == {"host": "db", "port": 5432, "user": "app", "password": None, "database": "x"}
    assert hosts(validate_url("postgres://app@[::1]/x")) == (Host("::1", 5432),)


@pytest.mark.parametrize(
    ("hosts_text", "problem"),
    [
        ("h1,,h2", "is malformed (a host of its host list is empty)"),
        ("h1,", "is malformed (a host of its host list is empty)"),
        ("h1:port,h2", "is malformed (Port could not be cast to integer value as 'port')"),
        ("h1:70000,h2", "is malformed (Port out of range 0-65535)"),
        ("h1,[::1:5432", "is malformed (Invalid IPv6 URL)"),
    ],
)
def test_a_bad_host_list_is_refused_in_one_line_without_the_password(hosts_text, problem):
    with pytest.raises(ConfigError) as refused:
        validate_url(f"postgres://app:s3cret@{hosts_text}/x")
    message = str(refused.value)
    assert problem in message and "expected postgres://user:password@host:port/database" in message
    assert "s3cret" not in message and "\n" not in message


def _dead_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _with_hosts(url: str, hosts_text: str, query: str = "") -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{credentials}@{hosts_text}", query=query).geturl()


async def test_the_orm_and_the_migration_connection_reach_the_server_that_answers_in_a_host_list(head_db):
    from langlearn.startup import connect, database

    port = urlsplit(head_db).port
    url = _with_hosts(head_db, f"127.0.0.1:{_dead_port()},127.0.0.1:{port}", "target_session_attrs=read-write")
    await check_reachable(url)
    connection = await connect(url, timeout=5)
    try:
        assert await connection.fetchval("SELECT inet_server_port()") == port
    finally:
        await connection.close()
    async with database(url, migrate="check") as startup:  # the ports differ: Tortoise's pool needs HostListConnect
        assert startup.context is not None
        assert await startup.context.db().execute_query_dict("SELECT inet_server_port() AS port") == [{"port": port}]


async def test_a_host_list_without_the_asked_role_is_named_in_one_line(head_db):
    port = urlsplit(head_db).port
    url = _with_hosts(head_db, f"127.0.0.1:{port},localhost:{port}", "target_session_attrs=standby")
    with pytest.raises(ConfigError) as refused:
        await check_reachable(url)
    assert str(refused.value).startswith(
        f"no server of 127.0.0.1:{port},localhost:{port} is what target_session_attrs=standby asks for (a failover under way?); "
    )
    dead = _with_hosts(head_db, f"127.0.0.1:{_dead_port()},127.0.0.1:{_dead_port()}")
    with pytest.raises(ConfigError) as unreachable:
        await check_reachable(dead)
    assert str(unreachable.value).startswith(f"cannot reach PostgreSQL at {server_address(validate_url(dead))} (")


def test_the_cli_takes_a_host_list(head_db):
    port = urlsplit(head_db).port
    url = _with_hosts(head_db, f"127.0.0.1:{_dead_port()},127.0.0.1:{port}", "target_session_attrs=primary")
    result = run_cli("langlearn", "check", database=url)
    assert result.returncode == 0, result.stderr
    refused = run_cli("langlearn", "check", database=_with_hosts(head_db, f"127.0.0.1:{port}", "target_session_attrs=standby"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "is what target_session_attrs=standby asks for" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
