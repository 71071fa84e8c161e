"""A password in DATABASE_URL never shows: not in messages, logs or any command's output.

Passwords made of every character a URL reserves or mangles go through `redact()` and
`validate_url()` (all at once, and each alone), and through every command that reads DATABASE_URL,
raw (refused: it must be percent-encoded) and percent-encoded (it reaches the server intact), against
a server that refuses the password and against an address where nothing listens.
"""

from __future__ import annotations

import os
import re
import socket
import socketserver
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

from langlearn.settings import ConfigError
from langlearn.startup import connect
from langlearn.urls import asyncpg_url, connect_args, redact, tortoise_connection, validate_url
from tests.conftest import REPO_ROOT, run_cli

RESERVED = ":/?#[]@!$&'()*+,;=%"
UNUSUAL = ' é日\\"'  # a space, non-ASCII letters, a backslash, a double quote
EVERY = RESERVED + UNUSUAL
# Characters a URL allows unencoded in a password (RFC 3986 sub-delims): accepted as they are.
ALLOWED_UNENCODED = set("!$&'()*+,;=")


def wrapped(chars: str) -> str:
    """A password holding `chars` between letters nothing prints by chance."""
    return f"Kq{chars}7v"


def leaks(secret: str, text: str) -> bool:
    """Whether any piece of `secret` of 3 characters or more (the whole of a shorter one) is in `text`."""
    if len(secret) < 3:
        return secret in text
    return any(secret[start : start + 3] in text for start in range(len(secret) - 2))


def needs_encoding(password: str) -> bool:
    return not all(char.isascii() and (char.isalnum() or char in "-._~:" or char in ALLOWED_UNENCODED) for char in password)


# --- the pure functions ------------------------------------------------------------------------------

ONE_AT_A_TIME = [wrapped(char) for char in EVERY]
ALL_AT_ONCE = [wrapped(EVERY), wrapped(EVERY[::-1]), EVERY, wrapped(EVERY + EVERY)]
EVERY_PASSWORD = ONE_AT_A_TIME + ALL_AT_ONCE + list(EVERY)  # each character wrapped, all together, each alone

# (URL with PASSWORD in it, what redact must print)
SHAPES = [
    ("postgres://app:PASSWORD@db.example:5432/langlearn", "postgres://app:***@db.example:5432/langlearn"),
    ("postgresql://app:PASSWORD@db.example/langlearn?sslmode=require&connect_timeout=3", "postgresql://app:***@db.example/langlearn?sslmode=require&connect_timeout=3"),
    ("postgres://app:PASSWORD@[::1:5432/langlearn", "postgres://app:***@[::1:5432/langlearn"),  # IPv6 literal missing its bracket
    ("postgres://app:PASSWORD@[::1]:5432/langlearn", "postgres://app:***@[::1]:5432/langlearn"),
    ("postgres://:PASSWORD@db/langlearn", "postgres://:***@db/langlearn"),
    ("postgres://app:PASSWORD@db:port/langlearn", "postgres://app:***@db:port/langlearn"),
    ("postgres://app:PASSWORD@db1:5432,db2:5433/langlearn?target_session_attrs=read-write", "postgres://app:***@db1:5432,db2:5433/langlearn?target_session_attrs=read-write"),
    ("  postgres://us%40er:PASSWORD@db/x", "  postgres://us%40er:***@db/x"),
    ("app:PASSWORD@db/x", "app:***@db/x"),  # no scheme
]


@pytest.mark.parametrize(("shape", "expected"), SHAPES)
def test_redact_hides_every_password_in_every_shape(shape, expected):
    for password in EVERY_PASSWORD:
        assert redact(shape.replace("PASSWORD", password)) == expected, password
        assert redact(shape.replace("PASSWORD", quote(password, safe=""))) == expected, password


def test_redact_never_shows_a_password_however_broken_the_url():
    for password in ONE_AT_A_TIME + ALL_AT_ONCE:
        encoded = quote(password, safe="")
        broken = [
            f"postgres://app:{password}@",
            f"postgres:app:{password}@db/x",  # no //
            f"postgres://app:{password}@db/x?application_name=me@box",  # an @ in the query: hides too much, never too little
            f"postgres://app@db/x?password={encoded}&sslmode=require",
            f"postgres://app@db/x?sslmode=require&sslpassword={encoded}",
            f"postgres://app:{password}@db/x\n",
        ]
        if "@" not in password:  # with an @, these are well-formed URLs naming a host after it
            broken += [f"postgres://app:{password}", f"postgres://app:{password}/langlearn"]  # user:password and no host
        for url in broken:
            shown = redact(url)
            assert not leaks(password, shown) and not leaks(encoded, shown), (url, shown)
            shown = redact(url.replace(password, encoded))
            assert not leaks(encoded, shown), (url, shown)


def test_redact_leaves_urls_without_a_password_alone():
    for url in ("postgres://app@db:5432/x", "postgres://db/x?sslmode=require", "postgres://[::1]:5432/x", "postgres://[::1:5432/x", "not a url"):
        assert redact(url) == url


def test_validate_url_refuses_unencoded_reserved_characters_without_echoing_them():
    for password in EVERY_PASSWORD:
        url = f"postgres://app:{password}@db.example:5432/langlearn"
        if not needs_encoding(password):
            assert unquote(urlsplit(validate_url(url)).password or "") == password
            continue
        with pytest.raises(ConfigError) as refused:
            validate_url(url)
        message = str(refused.value)
        assert "percent-encode" in message and "urllib.parse.quote(sys.argv[1], safe='')" in message and "\n" not in message
        if len(password) > 1:  # a lone character (say `:`) is in any message; redact's exact output covers those
            assert not leaks(password, message), message


def test_a_percent_encoded_password_reaches_both_drivers_intact():
    for password in EVERY_PASSWORD:
        url = validate_url(f"postgres://app:{quote(password, safe='')}@db.example/langlearn?connect_timeout=2&minsize=1")
        dsn, _ = connect_args(url)
        assert unquote(urlsplit(dsn).password or "") == password
        assert unquote(urlsplit(asyncpg_url(url)).password or "") == password
        assert tortoise_connection(url)["credentials"]["password"] == password


def test_other_refusals_of_a_url_with_an_encoded_password_do_not_show_it():
    for password in ONE_AT_A_TIME + ALL_AT_ONCE:
        encoded = quote(password, safe="")
        for url in (f"postgres://app:{encoded}@db:port/x", f"postgres://app:{encoded}@db:5432/", f"postgres://app:{encoded}@/x",
                    f"postgres://app:{encoded}@[::1:5432/x", f"postgres://app:{encoded}@db/x?sslmode=bogus", f"postgres://app:{encoded}@db/x?foo=1"):
            with pytest.raises(ConfigError) as refused:
                validate_url(url)
            assert not leaks(encoded, str(refused.value)) and not leaks(password, str(refused.value)), str(refused.value)


# --- every command --------------------------------------------------------------------------------

SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102


class RefusingServer(socketserver.ThreadingTCPServer):
    """Speaks just enough PostgreSQL to refuse: asks for a cleartext password, records it, answers
    `password authentication failed` (or, with `code="57P03"`, "the database system is starting up")."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, code: str = "28P01") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.code = code
        self.passwords: list[str] = []
        self.port: int = self.server_address[1]


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    return data


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, RefusingServer)
        sock: socket.socket = self.request
        sock.settimeout(10)
        try:
            while True:
                length, code = struct.unpack("!ii", _receive(sock, 8))
                body = _receive(sock, length - 8)
                if code in (SSL_REQUEST, GSSENC_REQUEST):
                    sock.sendall(b"N")
                    continue
                if code == CANCEL_REQUEST:
                    return
                break
            fields = body.split(b"\0")
            user = dict(zip(fields[0::2], fields[1::2])).get(b"user", b"").decode()
            if server.code == "57P03":
                message = "the database system is starting up"
            else:
                sock.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
                _receive(sock, 1)
                (length,) = struct.unpack("!i", _receive(sock, 4))
                server.passwords.append(_receive(sock, length - 4).rstrip(b"\0").decode("utf-8", "replace"))
                message = f'password authentication failed for user "{user}"'
            error = b"".join(key + value.encode() + b"\0" for key, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", server.code), (b"M", message))) + b"\0"
            sock.sendall(b"E" + struct.pack("!i", 4 + len(error)) + error)
        except (OSError, struct.error):
            pass


@contextmanager
def serving(code: str = "28P01") -> Iterator[RefusingServer]:
    server = RefusingServer(code)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def refusing() -> Iterator[RefusingServer]:
    with serving() as server:
        yield server


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_refused_password_fails_at_once_without_retrying(refusing):
    refusing.passwords.clear()
    started = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        await connect(f"postgres://app:{quote(wrapped(EVERY), safe='')}@127.0.0.1:{refusing.port}/langlearn", timeout=30)
    assert time.monotonic() - started < 3 and refusing.passwords == [wrapped(EVERY)]
    assert str(refused.value) == (
        f"password authentication failed for user 'app' at 127.0.0.1:{refusing.port}/langlearn; fix the credentials in DATABASE_URL"
    )


async def test_the_retry_log_never_shows_the_password(caplog):
    password = wrapped(EVERY)
    encoded = quote(password, safe="")
    caplog.set_level("DEBUG", logger="langlearn")
    with pytest.raises(ConfigError) as refused:
        await connect(f"postgres://app:{encoded}@127.0.0.1:{closed_port()}/langlearn", timeout=0.5)
    assert "not reachable yet" in caplog.text and "app:***@127.0.0.1" in caplog.text
    for text in (caplog.text, str(refused.value)):
        assert not leaks(password, text) and not leaks(encoded, text), text


async def test_a_server_still_starting_up_is_retried_until_the_timeout():
    with serving("57P03") as starting:
        started = time.monotonic()
        with pytest.raises(ConfigError) as refused:
            await connect(f"postgres://app@127.0.0.1:{starting.port}/langlearn", timeout=1.5)
        elapsed = time.monotonic() - started
    message = str(refused.value)
    assert message.startswith(f"PostgreSQL at 127.0.0.1:{starting.port} is not accepting connections (the database system is starting up); ")
    assert int(message.rsplit("(gave up after ", 1)[1].split()[0]) >= 3 and 1.5 <= elapsed < 5


# Every command that reads DATABASE_URL (the three that retry give up after 1 s where nothing listens).
COMMANDS = {
    "upgrade": ("langlearn", "upgrade", "--connect-timeout", "1"),
    "check": ("langlearn", "check", "--connect-timeout", "1"),
    "status": ("langlearn", "status", "--connect-timeout", "1"),
    "verify": ("langlearn", "verify"),
    "seed": ("langlearn", "seed", "--no-progress"),
    "db create": ("langlearn", "db", "create", "x"),
    "server psql": ("langlearn", "server", "psql"),
    "backup": ("langlearn", "backup", "--output", str(Path(tempfile.gettempdir()) / f"langlearn-secrets-{os.getpid()}.dump")),
    "restore": ("langlearn", "restore", str(REPO_ROOT / "README.md"), "--yes"),
    "aerich heads": ("aerich", "heads"),
}
# `langlearn backup` reports a server it cannot reach or log in to as a failed dump (exit 1), through pg_dump's words
EXIT_CODE = {"backup": (1, 2)}


def run_every_command(url: str) -> dict[str, object]:
    """Run every command at once with DATABASE_URL=url; their results by name."""
    with ThreadPoolExecutor(len(COMMANDS)) as pool:
        running = {name: pool.submit(run_cli, *command, database=url, timeout=60) for name, command in COMMANDS.items()}
        return {name: future.result() for name, future in running.items()}


def assert_refused_without_leaking(results, secrets: list[str], *fragments: str, multiline_ok: tuple[str, ...] = ()) -> None:
    for name, result in results.items():
        output = result.stdout + result.stderr
        # the server's address is named on purpose; its random port may hold three characters of a password ("407")
        shown = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", output)
        for secret in secrets:
            assert not leaks(secret, shown), f"{name} shows a piece of the password: {output!r}"
        assert result.returncode in EXIT_CODE.get(name, (2,)), f"{name}: exit {result.returncode}: {output!r}"
        assert "Traceback" not in output, f"{name}: {output}"
        if name not in multiline_ok:
            assert result.stdout == "" and len(result.stderr.splitlines()) == 1, f"{name}: {output!r}"
            if name != "server psql" and not (name == "backup" and result.returncode == 1):  # psql and pg_dump word their own errors
                assert result.stderr.startswith("error: ") and all(fragment in result.stderr for fragment in fragments), f"{name}: {output!r}"


PASSWORDS = [
    pytest.param(wrapped(":/?#"), id="colon-slash-question-hash"),
    pytest.param(wrapped("[]@"), id="brackets-at"),
    pytest.param(wrapped("!$&'()*+,;="), id="sub-delims"),  # legal unencoded: reaches the server as is
    pytest.param(wrapped('% é日\\"'), id="percent-space-unicode-backslash-quote"),
    pytest.param(wrapped(EVERY), id="every-character"),
]


@pytest.mark.parametrize("password", PASSWORDS)
def test_every_command_refuses_an_unencoded_password_in_one_line_without_showing_it(password, refusing):
    refusing.passwords.clear()
    results = run_every_command(f"postgres://app:{password}@127.0.0.1:{refusing.port}/langlearn")
    if needs_encoding(password):
        assert_refused_without_leaking(results, [password], "percent-encode")
        assert refusing.passwords == []  # refused before connecting
    else:
        assert_refused_without_leaking(results, [password], "password authentication failed for user 'app'")
        assert refusing.passwords and set(refusing.passwords) == {password}


@pytest.mark.parametrize("password", PASSWORDS)
def test_every_command_sends_an_encoded_password_intact_and_never_shows_it(password, refusing):
    refusing.passwords.clear()
    encoded = quote(password, safe="")
    results = run_every_command(f"postgres://app:{encoded}@127.0.0.1:{refusing.port}/langlearn")
    assert_refused_without_leaking(results, [password, encoded], "password authentication failed for user 'app'")
    assert len(refusing.passwords) >= len(COMMANDS) and set(refusing.passwords) == {password}


def test_every_command_where_nothing_listens_never_shows_the_password():
    password = wrapped(EVERY)
    encoded = quote(password, safe="")
    results = run_every_command(f"postgres://app:{encoded}@127.0.0.1:{closed_port()}/langlearn")
    # psql explains a refused connection on two lines of its own
    assert_refused_without_leaking(results, [password, encoded], "cannot reach PostgreSQL at 127.0.0.1:", multiline_ok=("server psql",))


@pytest.mark.parametrize("value", ["", "  \n"])
def test_every_command_refuses_a_set_but_empty_database_url(value):
    results = run_every_command(value)
    assert_refused_without_leaking(results, [], "DATABASE_URL is set but empty; unset it to use the private server, or set it to postgres://")
    assert results["server psql"].stderr.startswith("error: DATABASE_URL is set but empty")  # before psql starts
