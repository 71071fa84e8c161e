"""A PgBouncer rig: Debian's pgbouncer in front of the test server, in transaction mode unless told otherwise.

    with running_pgbouncer(server_url) as bouncer:
        pooled = await bouncer.pooled(direct_url)   # the same database through PgBouncer, pool_mode=transaction

One `[databases] * = ...` entry sends every database name to the test server, so each test's scratch
database is reachable through one PgBouncer. It authenticates clients against a userlist holding the
test server's user (trust when the server's URL has no password, md5 otherwise) and logs in to the
server with the same credentials. As root it runs as the `pgserver` user (PgBouncer refuses root).
Its files live in a folder of its own under the system's temporary directory (pytest's is root's alone).
The context manager stops it however the test ends (SIGTERM, then SIGKILL) and removes that folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from langlearn.local_server import SYSTEM_USER
from langlearn.urls import asyncpg_url
from tests.test_startup import unused_port

BINARY_PLACES = ("pgbouncer", "/usr/sbin/pgbouncer")
MISSING = "pgbouncer is not installed (Debian's package); run scripts/install_rigs.sh"
# The lock_timeout a pooled service session gets from its role (the pool's default, langlearn.settings)
ROLE_LOCK_TIMEOUT = "2000ms"
START_SECONDS = 10.0


def pgbouncer_binary() -> str:
    """The pgbouncer executable, or the test fails in one line naming the installer (never a silent skip)."""
    for place in BINARY_PLACES:
        if found := shutil.which(place):
            return found
    pytest.fail(MISSING, pytrace=False)


@dataclass(frozen=True)
class PgBouncer:
    port: int
    pool_mode: str
    log: Path

    def url_for(self, direct_url: str, *, say_pool_mode: bool = True) -> str:
        """`direct_url`'s database through PgBouncer, saying `pool_mode=transaction` unless told not to."""
        parts = urlsplit(direct_url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        query = "&".join(filter(None, [parts.query, f"pool_mode={self.pool_mode}" if say_pool_mode else ""]))
        return parts._replace(netloc=netloc, query=query).geturl()

    def logins(self, direct_url: str) -> int:
        """How many client connections PgBouncer let in to `direct_url`'s database (its log names each)."""
        database = unquote(urlsplit(direct_url).path.lstrip("/"))
        return self.log.read_text().count(f"login attempt: db={database} ")

    async def pooled(self, direct_url: str) -> str:
        """The URL through PgBouncer, after giving the role the pool's lock_timeout in that database (a service behind
        a transaction pooler gets it from the role: langlearn.settings.check_pooled_lock_timeout)."""
        connection = await asyncpg.connect(asyncpg_url(direct_url))
        try:
            database = await connection.fetchval("SELECT current_database()")
            await connection.execute(f"ALTER ROLE CURRENT_USER IN DATABASE \"{database}\" SET lock_timeout = '{ROLE_LOCK_TIMEOUT}'")
        finally:
            await connection.close()
        return self.url_for(direct_url)


def _config(server_url: str, folder: Path, port: int, pool_mode: str, pool_size: int) -> Path:
    parts = urlsplit(server_url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    (folder / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    host = parts.hostname or "127.0.0.1"
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"""[databases]
* = host={host} port={parts.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = {"md5" if password else "trust"}
auth_file = {folder / "userlist.txt"}
pool_mode = {pool_mode}
max_client_conn = 500
default_pool_size = {pool_size}
logfile = {folder / "pgbouncer.log"}
pidfile = {folder / "pgbouncer.pid"}
server_login_retry = 1
"""
    )
    return config


def _hand_to_system_user(folder: Path) -> str | None:
    """As root: the folder and its files belong to the unprivileged account PgBouncer runs as."""
    if os.geteuid() != 0:
        return None
    import pwd

    from pgserver.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    entry = pwd.getpwnam(SYSTEM_USER)
    for path in (folder, *folder.iterdir()):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return SYSTEM_USER


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"pgbouncer exited with {process.returncode}: {log.read_text() if log.exists() else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"pgbouncer did not listen on {port} within {START_SECONDS:g} s")


@contextmanager
def running_pgbouncer(server_url: str, pool_mode: str = "transaction", pool_size: int = 20) -> Iterator[PgBouncer]:
    """PgBouncer in front of the server of `server_url`, in `pool_mode`, with at most `pool_size` backends per database;
    stopped on exit, whatever happened."""
    binary = pgbouncer_binary()
    folder = Path(tempfile.mkdtemp(prefix="langlearn-pgbouncer-"))
    port = unused_port()
    config = _config(server_url, folder, port, pool_mode, pool_size)
    process = subprocess.Popen([binary, str(config)], user=_hand_to_system_user(folder), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd="/")
    try:
        _wait_listening(process, port, folder / "pgbouncer.log")
        yield PgBouncer(port, pool_mode, folder / "pgbouncer.log")
    finally:
        process.send_signal(signal.SIGTERM)  # PgBouncer's immediate shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
