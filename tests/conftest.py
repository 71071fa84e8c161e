"""Test harness: a real PostgreSQL server, and a fresh database per test cloned from a template.

The server is DATABASE_URL's (its user needs CREATEDB) or the project's private server. Two
templates are built once per session: `empty` and `head` (migrated to head through the real
history). Cloning a template takes a few milliseconds, so every test that touches the schema
gets a database of its own, dropped when the test ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest

from langlearn import history
from langlearn.databases import ScratchDatabases, database_name
from langlearn.settings import database_url
from langlearn.urls import asyncpg_url

REPO_ROOT = Path(__file__).resolve().parent.parent
LANGLEARN = str(Path(sys.executable).with_name("langlearn"))  # the console script of the environment under test
PREFIX = f"lltest_{os.getpid()}_"
# the verification's spelling cache (langlearn/verify/spelling.py), private to this session and its subprocesses
os.environ["LANGLEARN_CACHE_DIR"] = tempfile.mkdtemp(prefix="langlearn-test-cache-")
# each test names its databases; an exported direct URL would send the commands and services it starts elsewhere
os.environ.pop("DATABASE_DIRECT_URL", None)
# pytest-xdist (`-n 2`, scripts/workflow_check.sh): each worker runs a private server of its own, inside the usual one's
# data directory, since a test stops and restarts "the" private server (tests/test_service_load.py)
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
OWN_WORKER_SERVER = bool(XDIST_WORKER) and not os.environ.get("DATABASE_URL")
if OWN_WORKER_SERVER:
    from langlearn.local_server import data_dir

    os.environ["LANGLEARN_DATA_DIR"] = str(data_dir() / "xdist" / str(XDIST_WORKER))


def pytest_configure(config):
    """LANGLEARN_TEST_STANDBY=self: every `database(...)` of the tests names its own primary as its standby too, so the
    suite runs with two connections, Tortoise's router and the LSN read after each write (what a replica changes in
    the process), without a second server: `LANGLEARN_TEST_STANDBY=self pytest tests/test_wallet_operations.py ...`."""
    if os.environ.get("LANGLEARN_TEST_STANDBY") == "self":
        import langlearn
        from langlearn import startup

        routed = startup.database

        def with_itself_as_standby(url=None, **options):
            options.setdefault("replica_url", None)
            options["replica_url"] = options["replica_url"] or url or database_url()
            return routed(url, **options)

        langlearn.database = startup.database = with_itself_as_standby


def pytest_sessionfinish(session):
    """A worker's own private server stops with the worker (the workflow check removes its clone afterwards)."""
    if OWN_WORKER_SERVER:
        from langlearn import local_server

        local_server.stop()


@pytest.fixture(scope="session")
async def server():
    server = ScratchDatabases(database_url(), PREFIX)
    connection = await server.admin()
    try:  # databases left by sessions that were killed
        for row in await connection.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'lltest\\_%'"):
            pid = int(row["datname"].split("_")[1])
            if not _process_alive(pid):
                await connection.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    finally:
        await connection.close()
    yield server


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
async def head_template(server):
    """A database at the head of the migration history, used only as a template."""
    url = await server.create(name=f"{PREFIX}tmpl_head")
    await history.upgrade(url)
    yield database_name(url)
    await server.drop(url)


@pytest.fixture(scope="session")
async def seeded_template(server, head_template):
    """A database at head holding the demo seed, used only as a template. Its anchor is yesterday (UTC), so its data
    follows the clock: tests find what they need by query (the anchor is in seed_runs), never from today's date, and
    scripts/clock_check.sh runs them with the clock, and so this anchor, on every weekday and the calendar's edges."""
    from datetime import datetime, timedelta, timezone

    url = await server.create(template=head_template, name=f"{PREFIX}tmpl_seeded")
    anchor = (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()
    seeded = run_cli("langlearn", "seed", "--anchor", anchor, "--no-progress", database=url)
    assert seeded.returncode == 0, seeded.stderr
    yield database_name(url)
    await server.drop(url)


@pytest.fixture(scope="module")
async def seeded_module_db(server, seeded_template):
    """A database at head holding the demo seed, shared by one module's tests (each works on its own users)."""
    url = await server.create(template=seeded_template)
    yield url
    await server.drop(url)


@pytest.fixture
async def seeded_db(server, seeded_template):
    """A new database at head holding the demo seed."""
    url = await server.create(template=seeded_template)
    yield url
    await server.drop(url)


@pytest.fixture
async def empty_db(server):
    """A new, empty database."""
    url = await server.create()
    yield url
    await server.drop(url)


@pytest.fixture
async def head_db(server, head_template):
    """A new database at the head of the migration history."""
    url = await server.create(template=head_template)
    yield url
    await server.drop(url)


@pytest.fixture
async def connect():
    """Open asyncpg connections to a test database; all are closed after the test."""
    opened: list[asyncpg.Connection] = []

    async def _connect(url: str) -> asyncpg.Connection:
        connection = await asyncpg.connect(asyncpg_url(url))
        opened.append(connection)
        return connection

    yield _connect
    for connection in opened:
        await connection.close()


def run_cli(*args: str, database: str | None = None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command from the repo root as a user would, with DATABASE_URL set to `database`."""
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database is not None:
        environment["DATABASE_URL"] = database
    environment.update(env or {})
    bin_dir = Path(sys.executable).parent
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"
    return subprocess.run(
        list(args), cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def replica_pair():
    """A primary and a streaming hot standby from the pgserver wheel's binaries (tests/replicas.py), for one module."""
    from langlearn.compat import pgserver_bin_dir
    from tests.replicas import replica_pair as started

    with started(pgserver_bin_dir()) as pair:
        yield pair
