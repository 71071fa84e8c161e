"""Settings: DATABASE_URL validation, one-line errors, and the private server."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from langlearn.databases import with_database
from langlearn.settings import ConfigError, database_url, tortoise_config
from langlearn.urls import asyncpg_url, connect_args, redact, tortoise_connection, validate_url
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


# --- DATABASE_URL set but empty ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_a_set_but_empty_database_url_is_refused_instead_of_starting_the_private_server(monkeypatch, value):
    from langlearn import settings

    monkeypatch.setenv("DATABASE_URL", value)
    monkeypatch.setattr(settings, "ensure_running", lambda announce=None: pytest.fail("started the private server"))
    with pytest.raises(ConfigError) as refused:
        database_url()
    assert str(refused.value) == (
        "DATABASE_URL is set but empty; unset it to use the private server, or set it to postgres://user:password@host:port/database"
    )


# --- query parameters ----------------------------------------------------------------------------

EVERYDAY = (
    "connect_timeout=2.5&minsize=1&maxsize=3&max_queries=100&max_inactive_connection_lifetime=60&application_name=svc"
    "&options=-c%20search_path%3Dx&sslmode=require&target_session_attrs=read-write&statement_cache_size=0"
)


def test_query_parameters_go_where_they_belong():
    url = validate_url(f"postgresql://app:p%40ss@db/x?{EVERYDAY}")
    assert url == f"postgres://app:p%40ss@db:5432/x?{EVERYDAY}"
    dsn, kwargs = connect_args(url)
    assert dsn == "postgresql://app:p%40ss@db:5432/x"  # nothing asyncpg would send the server as a setting
    assert kwargs == {
        "timeout": 2.5,
        "server_settings": {"application_name": "svc", "options": "-c search_path=x"},
        "ssl": "require",
        "target_session_attrs": "read-write",
        "statement_cache_size": 0,
    }
    connection = tortoise_connection(url)
    assert connection == {
        "engine": "tortoise.backends.asyncpg",
        "credentials": {
            "host": "db", "port": 5432, "user": "app", "password": "p@ss", "database": "x", **kwargs,
            "minsize": 1, "maxsize": 3, "max_queries": 100, "max_inactive_connection_lifetime": 60.0,
        },
    }
    assert tortoise_config(url)["connections"]["default"] == connection
    assert tortoise_connection(url, {"lock_timeout": "5000ms"})["credentials"]["server_settings"] == {
        "application_name": "svc", "options": "-c search_path=x", "lock_timeout": "5000ms",
    }
    assert asyncpg_url(url) == (
        "postgresql://app:p%40ss@db:5432/x?application_name=svc&options=-c+search_path%3Dx&sslmode=require&target_session_attrs=read-write"
    )


def test_tortoise_spellings_of_the_pool_sizes_and_ipv6_hosts():
    credentials = tortoise_connection("postgres://app@[::1]:6543/x?min_size=2&max_size=4")["credentials"]
    assert (credentials["host"], credentials["port"], credentials["minsize"], credentials["maxsize"]) == ("::1", 6543, 2, 4)
    assert credentials["password"] is None and "server_settings" not in credentials


A_FILE = __file__


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmode=bogus", "DATABASE_URL parameter 'sslmode' must be one of disable, allow, prefer, require, verify-ca, verify-full, not 'bogus'"),
        ("sslmode=", "DATABASE_URL parameter 'sslmode' must be one of disable, allow, prefer, require, verify-ca, verify-full, not ''"),
        ("connect_timeout=0", "DATABASE_URL parameter 'connect_timeout' must be a number above 0, not '0'"),
        ("connect_timeout=soon", "DATABASE_URL parameter 'connect_timeout' must be a number above 0, not 'soon'"),
        ("minsize=5&maxsize=2", "DATABASE_URL parameter 'minsize' (5) must not exceed maxsize (2)"),
        ("maxsize=0", "DATABASE_URL parameter 'maxsize' must be a whole number of at least 1, not '0'"),
        ("max_queries=1.5", "DATABASE_URL parameter 'max_queries' must be a whole number of at least 1, not '1.5'"),
        ("target_session_attrs=master", "DATABASE_URL parameter 'target_session_attrs' must be one of any, primary, standby, prefer-standby, read-write, read-only, not 'master'"),
        ("foo=1", "DATABASE_URL parameter 'foo' is not supported; the supported ones are sslmode, sslrootcert, "),
        ("timeout=3", "DATABASE_URL parameter 'timeout' is not supported; use connect_timeout=SECONDS"),
        ("ssl=true", "DATABASE_URL parameter 'ssl' is not supported; use sslmode=require (or verify-ca, verify-full)"),
        ("password=s3cret", "DATABASE_URL parameter 'password' is not supported; put the password in the URL (user:password@host), percent-encoded"),
        ("sslmode=verify-full&sslrootcert=/no/such/root.crt", "DATABASE_URL parameter 'sslrootcert' names '/no/such/root.crt', which is not a readable file"),
        (f"sslrootcert={A_FILE}", "DATABASE_URL parameter 'sslrootcert' needs sslmode=require, verify-ca or verify-full (sslmode=prefer, the default, would not use it)"),
        (f"sslmode=allow&sslcert={A_FILE}", "DATABASE_URL parameter 'sslcert' needs sslmode=require, verify-ca or verify-full (sslmode=allow would not use it)"),
        (f"sslmode=require&sslkey={A_FILE}", "DATABASE_URL parameter 'sslkey' needs sslcert=FILE, the certificate of that key"),
        ("sslnegotiation=direct", "DATABASE_URL parameter 'sslnegotiation' direct needs sslmode=require, verify-ca or verify-full"),
    ],
)
def test_unusable_query_parameters_are_refused_in_one_line_naming_them(query, message):
    with pytest.raises(ConfigError) as refused:
        validate_url(f"postgres://app:s3cret@db/x?{query}")
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "fragments"),
    [
        ("postgres://app@127.0.0.1:1/x?sslmode=bogus", ["parameter 'sslmode' must be one of"]),
        ("postgres://app@127.0.0.1:1/x?connect_timeout=soon", ["parameter 'connect_timeout' must be a number above 0"]),
        ("postgres://app@127.0.0.1:1/x?minsize=1&foo=bar", ["parameter 'foo' is not supported"]),
        ("postgres://app@[::1:5432/x", ["is malformed (Invalid IPv6 URL)", "'postgres://app@[::1:5432/x'"]),
        ("postgres://app@db/x#frag", ["holds a #, which ends a URL"]),
    ],
)
def test_the_cli_refuses_unusable_urls_in_one_line(url, fragments):
    _assert_one_line_error(run_cli("langlearn", "check", database=url), *fragments)


async def test_the_orm_and_the_raw_connection_honour_the_query_parameters(head_db):
    from langlearn.startup import connect, database

    url = f"{head_db}?connect_timeout=3&minsize=1&maxsize=3&application_name=from-url&options=-c%20statement_timeout%3D4321&statement_cache_size=0"
    async with database(url, migrate="check") as startup:
        assert startup.context is not None
        client = startup.context.db()
        assert await client.execute_query_dict("SELECT current_setting('application_name') AS a, current_setting('statement_timeout') AS s") == [
            {"a": "from-url", "s": "4321ms"}
        ]
        assert (client._pool.get_min_size(), client._pool.get_max_size()) == (1, 3)
    connection = await connect(url)
    try:
        assert await connection.fetchval("SELECT current_setting('application_name') || ' ' || current_setting('statement_timeout')") == "from-url 4321ms"
    finally:
        await connection.close()
    connection = await connect(url, application_name="explicit")  # the caller's name wins
    try:
        assert await connection.fetchval("SELECT current_setting('application_name')") == "explicit"
    finally:
        await connection.close()


@pytest.mark.parametrize("command", [("langlearn", "check"), ("langlearn", "verify"), ("aerich", "heads")])
async def test_commands_accept_everyday_query_parameters(head_db, command):
    result = run_cli(*command, database=f"{head_db}?connect_timeout=3&minsize=1&maxsize=3&sslmode=disable&application_name=x&statement_cache_size=0")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


# --- SSL files -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A self-signed certificate with its key, plain and encrypted (made by the openssl command)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("certificates")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", folder / "key.pem", "-out", folder / "cert.pem",
         "-days", "1", "-subj", "/CN=langlearn-test"], check=True, capture_output=True,
    )
    subprocess.run(["openssl", "rsa", "-in", folder / "key.pem", "-aes256", "-passout", "pass:k3y-s3cret", "-out", folder / "encrypted.pem"],
                   check=True, capture_output=True)
    return folder


def test_ssl_files_make_one_context_for_both_drivers(certificates):
    import ssl

    files = f"sslrootcert={certificates / 'cert.pem'}&sslcert={certificates / 'cert.pem'}&sslkey={certificates / 'key.pem'}"
    for mode, verify, hostname in (("verify-full", ssl.CERT_REQUIRED, True), ("verify-ca", ssl.CERT_REQUIRED, False), ("require", ssl.CERT_REQUIRED, False)):
        url = f"postgres://app@db/x?sslmode={mode}&{files}&ssl_min_protocol_version=TLSv1.3"
        context = connect_args(url)[1]["ssl"]
        assert isinstance(context, ssl.SSLContext)
        assert (context.verify_mode, context.check_hostname, context.minimum_version) == (verify, hostname, ssl.TLSVersion.TLSv1_3)
        assert isinstance(tortoise_connection(url)["credentials"]["ssl"], ssl.SSLContext)
    client_only = connect_args(f"postgres://app@db/x?sslmode=require&sslcert={certificates / 'cert.pem'}&sslkey={certificates / 'key.pem'}")[1]["ssl"]
    assert client_only.verify_mode == ssl.CERT_NONE  # require without a root certificate encrypts without verifying, as libpq


def test_an_encrypted_key_needs_its_sslpassword_which_never_shows(certificates):
    key = f"sslmode=require&sslcert={certificates / 'cert.pem'}&sslkey={certificates / 'encrypted.pem'}"
    assert connect_args(f"postgres://app@db/x?{key}&sslpassword=k3y-s3cret")[1]["ssl"] is not None
    with pytest.raises(ConfigError) as refused:
        connect_args(f"postgres://app@db/x?{key}&sslpassword=wr0ng-s3cret")
    assert str(refused.value).startswith("the SSL files named by DATABASE_URL could not be loaded (")
    assert "s3cret" not in str(refused.value)
    assert "s3cret" not in redact(f"postgres://app@db/x?{key}&sslpassword=wr0ng-s3cret")


def test_verify_full_without_a_root_certificate_is_refused(certificates, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    with pytest.raises(ConfigError, match=r"'sslmode' verify-full needs the server's CA certificate: add sslrootcert=FILE"):
        connect_args(f"postgres://app@db/x?sslmode=verify-full&sslcert={certificates / 'cert.pem'}&sslkey={certificates / 'key.pem'}")


# --- which failures are retried ------------------------------------------------------------------


def test_only_a_server_not_up_yet_is_retried():
    import errno
    import socket
    import ssl

    import asyncpg

    from langlearn.startup import retryable

    not_up_yet = [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"), ConnectionResetError(), TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"), asyncpg.TooManyConnectionsError("too many clients"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432, 0, 0), [Errno 99] Cannot assign requested address"),
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
    ]
    permanent = [
        ConnectionError('PostgreSQL server at "db:5432" rejected SSL upgrade'), socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol"), OSError(errno.EHOSTUNREACH, "No route to host"),
        ssl.SSLCertVerificationError("certificate verify failed"), asyncpg.InvalidPasswordError("password authentication failed"),
        asyncpg.InvalidCatalogNameError("database does not exist"), FileNotFoundError(errno.ENOENT, "No such file or directory"),
    ]
    assert [error for error in not_up_yet if not retryable(error)] == []
    assert [error for error in permanent if retryable(error)] == []


async def test_permanent_connection_errors_fail_at_once(server):
    from langlearn.startup import connect

    private = urlsplit(server.url)
    cases = [
        (f"{server.url}?sslmode=require", f"PostgreSQL at 127.0.0.1:{private.port} does not accept SSL connections, which DATABASE_URL's sslmode requires; "),
        (private._replace(netloc=f"postgres@no-such-host.invalid:{private.port}").geturl(), "cannot resolve the host 'no-such-host.invalid' of DATABASE_URL ("),
    ]
    for url, message in cases:
        started = time.monotonic()
        with pytest.raises(ConfigError) as refused:
            await connect(url, timeout=30)
        assert time.monotonic() - started < 3, url
        assert str(refused.value).startswith(message) and "gave up" not in str(refused.value)


def test_the_cli_fails_at_once_when_the_server_refuses_ssl(server):
    started = time.monotonic()
    result = run_cli("langlearn", "check", database=f"{server.url}?sslmode=require")  # --connect-timeout defaults to 30 s
    assert time.monotonic() - started < 5
    _assert_one_line_error(result, "does not accept SSL connections", "use sslmode=prefer or disable")
    assert result.returncode == 2


async def test_libpq_tools_get_only_the_parameters_libpq_knows(head_db):
    import subprocess

    from langlearn.local_server import client_tool
    from langlearn.urls import libpq_url

    url = f"{head_db}?connect_timeout=2.5&minsize=1&maxsize=3&statement_cache_size=0&application_name=tool&options=-c%20statement_timeout%3D4321"
    converted = libpq_url(url)
    assert urlsplit(converted).query == "connect_timeout=3&application_name=tool&options=-c%20statement_timeout%3D4321"
    psql = subprocess.run(
        [str(client_tool("psql")), "-d", converted, "-tAc", "SELECT current_setting('application_name') || ' ' || current_setting('statement_timeout')"],
        capture_output=True, text=True, timeout=30,
    )
    assert (psql.returncode, psql.stdout.strip()) == (0, "tool 4321ms"), psql.stderr
