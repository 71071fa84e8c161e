"""The example service as a real uvicorn process, over HTTP, against a database filled by `langlearn seed`.

Every answer is compared with what plain SQL reads from the same database, so the assertions hold
for whatever the seed produced. Outages are staged with a TCP proxy between the service and the
shared test server (which stays up for the other tests); the contract is fuzzed with schemathesis.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from langlearn import history
from tests.conftest import REPO_ROOT, run_cli
from tests.test_startup import unused_port

HEAD = history.version_files()
SCHEMATHESIS = str(Path(sys.executable).with_name("st"))  # the CLI of the environment under test
SECRET_KEY = "test-only-signing-key-of-the-example-service"  # LANGLEARN_SECRET_KEY: the service refuses to start without one
OPERATOR_TOKEN = "test-only-operator-token-of-the-example-service"  # LANGLEARN_OPERATOR_TOKEN: /health's schema version
OPERATOR = {"X-Operator-Token": OPERATOR_TOKEN}
WITH_SCHEMA = {"SERVICE_OPENAPI": "1"}  # /openapi.json is off unless asked for


def start_service(
    database_url: str, port: int, mode: str = "check", *, env: dict[str, str] | None = None, log: IO[str] | None = None
) -> subprocess.Popen:
    """The example under its runner (`python -m service`: uvicorn as documented); its output is piped, or written
    to `log` (for long runs that log a lot)."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT / "examples"), os.environ.get("PYTHONPATH")]))  # where `service` is
    return subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": path, "DATABASE_URL": database_url, "MIGRATE_ON_START": mode,
             "LANGLEARN_SECRET_KEY": SECRET_KEY, "LANGLEARN_OPERATOR_TOKEN": OPERATOR_TOKEN, **(env or {})},
        stdout=subprocess.PIPE if log is None else log,
        stderr=subprocess.PIPE if log is None else subprocess.STDOUT,
        text=True,
    )


def wait_until_up(process: subprocess.Popen, base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}")
        try:
            httpx.get(f"{base}/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the service did not start listening in time")


class DatabaseProxy:
    """A loopback TCP proxy in front of a test database, on an event loop in a thread of its own (so
    the tests' blocking HTTP calls cannot stall it). The service under test connects through it:

    - `stop()` closes the listener and every connection through it: the database server went away
      (new connections are refused, the pooled ones are dead);
    - `start()` listens again on the same port: the server is back (a restart, when it follows a stop);
    - `freeze()` stops forwarding while keeping every connection open, and holds new ones: a
      database that no longer answers (a network partition); `stop()` ends it.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = unused_port()
        credentials = f"{parts.netloc.rsplit('@', 1)[0]}@" if "@" in parts.netloc else ""
        self.url = parts._replace(netloc=f"{credentials}127.0.0.1:{self.port}").geturl()
        self.connections = 0  # accepted since the proxy was made
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="database-proxy", daemon=True)
        self._thread.start()

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._stop())

    def freeze(self) -> None:
        self._call(self._freeze())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for handler in self._handlers:
            handler.cancel()  # each aborts both of its sockets on the way out
        await asyncio.gather(*self._handlers, return_exceptions=True)
        self._flowing.set()

    async def _freeze(self) -> None:
        self._flowing.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self.connections += 1
        upstream_writer = None
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
            await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))
        except OSError:  # the server refused, or did not answer within 5 s (TimeoutError)
            pass
        finally:
            client_writer.transport.abort()
            if upstream_writer is not None:
                upstream_writer.transport.abort()
            self._handlers.discard(handler)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()  # one side closed: so does the other, whose pipe then ends too


@pytest.fixture(scope="module")
async def seeded(server, head_template):
    """A database at head filled by the real seed (demo preset), shared by this module's read-only tests."""
    url = await server.create(template=head_template)
    seeding = run_cli("langlearn", "seed", "--no-progress", database=url)
    assert seeding.returncode == 0, seeding.stderr
    yield url
    await server.drop(url)


@pytest.fixture(scope="module")
async def service(seeded):
    """The service under uvicorn on a free port; stopped (and its clean shutdown checked) afterwards."""
    port = unused_port()
    process = start_service(seeded, port, env=WITH_SCHEMA)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base)
        with httpx.Client(base_url=base, timeout=10) as client:
            yield client
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "Application shutdown complete." in stderr, stderr  # the lifespan closed the models


async def test_health_reports_the_schema_version_and_nothing_pending_to_the_operator(service):
    response = service.get("/health", headers=OPERATOR)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "reachable", "version": HEAD[-1], "head": HEAD[-1], "pending": 0, "unknown": []}


async def test_courses_lists_the_published_catalogue(service, seeded, connect):
    rows = await (await connect(seeded)).fetch(
        "SELECT id::text, title FROM courses WHERE is_published ORDER BY language, level, title"
    )
    response = service.get("/courses")
    assert response.status_code == 200
    assert [(course["id"], course["title"]) for course in response.json()] == [(row["id"], row["title"]) for row in rows]
    assert rows  # the seed published something


async def test_a_course_comes_with_its_units_and_lessons_in_order(service, seeded, connect):
    db = await connect(seeded)
    course_id = await db.fetchval(
        "SELECT c.id::text FROM courses c JOIN units u ON u.course_id = c.id WHERE c.is_published GROUP BY c.id ORDER BY count(*) DESC, c.id LIMIT 1"
    )
    units = await db.fetch("SELECT id::text, title FROM units WHERE course_id = $1 ORDER BY order_index", course_id)
    lessons = await db.fetch("SELECT unit_id::text, title FROM lessons WHERE course_id = $1 ORDER BY order_index", course_id)

    response = service.get(f"/courses/{course_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == course_id
    assert [(unit["id"], unit["title"]) for unit in body["units"]] == [(row["id"], row["title"]) for row in units]
    for unit in body["units"]:
        assert [lesson["title"] for lesson in unit["lessons"]] == [row["title"] for row in lessons if row["unit_id"] == unit["id"]]
    assert [lesson["title"] for lesson in body["lessons_without_unit"]] == [row["title"] for row in lessons if row["unit_id"] is None]


async def test_an_unknown_course_is_404_and_a_malformed_id_422(service):
    assert service.get("/courses/00000000-0000-0000-0000-000000000000").status_code == 404
    assert service.get("/courses/not-a-uuid").status_code == 422


async def bearer_of(db, user_id: str) -> dict[str, str]:
    """An access token for a seeded learner (who has no password to sign in with), signed with the service's key, for a
    session (a refresh token row) opened here: an access token names its refresh token, and ends with it."""
    session = await db.fetchval(
        "INSERT INTO refresh_tokens (user_id, token_hash, expires_at) VALUES ($1, encode(sha256(gen_random_uuid()::text::bytea), 'hex'), "
        "now() + interval '1 day') RETURNING id::text",
        uuid.UUID(user_id),
    )
    now = datetime.now(timezone.utc)
    claims = {"sub": user_id, "sid": session, "iat": now, "exp": now + timedelta(minutes=15), "jti": uuid.uuid4().hex, "type": "access"}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET_KEY, algorithm='HS256')}"}


@pytest.mark.clock
async def test_due_reviews_are_the_users_items_due_by_now_oldest_first(service, seeded, connect):
    db = await connect(seeded)
    user_id = await db.fetchval(
        "SELECT k.user_id::text FROM user_vocab_knowledge k JOIN users u ON u.id = k.user_id AND u.is_active "  # a token acts for an active account
        "WHERE k.next_review_date <= now() GROUP BY k.user_id ORDER BY count(*) DESC, k.user_id LIMIT 1"
    )
    due = await db.fetch(
        "SELECT k.vocab_id::text, v.word FROM user_vocab_knowledge k JOIN vocabulary_items v ON v.id = k.vocab_id "
        "WHERE k.user_id = $1 AND k.next_review_date <= now() ORDER BY k.next_review_date",
        user_id,
    )

    response = service.get("/me/reviews/due", params={"limit": 500}, headers=await bearer_of(db, user_id))

    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == user_id and body["due"] == len(due) > 0
    assert [(review["vocab_id"], review["word"]) for review in body["reviews"]] == [(row["vocab_id"], row["word"]) for row in due[:500]]
    assert all(datetime.fromisoformat(review["next_review_date"]) <= datetime.now(timezone.utc) for review in body["reviews"])


@pytest.mark.clock
async def test_due_reviews_respect_the_limit_and_need_the_learners_token(service, seeded, connect):
    db = await connect(seeded)
    user_id = await db.fetchval("SELECT user_id::text FROM user_vocab_knowledge WHERE next_review_date <= now() LIMIT 1")
    limited = service.get("/me/reviews/due", params={"limit": 1}, headers=await bearer_of(db, user_id)).json()
    assert len(limited["reviews"]) == 1 and limited["due"] >= 1
    assert service.get("/me/reviews/due").status_code == 401
    assert service.get(f"/users/{user_id}/reviews/due").status_code == 404  # the public route is gone


@pytest.mark.clock
@pytest.mark.parametrize("which", ["open", "closed"])
async def test_a_league_table_lists_the_week_by_rank(service, seeded, connect, which):
    """A closed week shows the ranks its close wrote; the open week, not ranked yet, the order they would have now."""
    db = await connect(seeded)
    week, league = await db.fetchrow(
        "SELECT week_start, league::text FROM leaderboard_entries GROUP BY week_start, league "
        f"HAVING count(current_rank) {'= 0' if which == 'open' else '> 0'} ORDER BY week_start DESC, count(*) DESC LIMIT 1"
    )
    rows = await db.fetch(
        "SELECT coalesce(e.current_rank, row_number() OVER (ORDER BY e.xp_earned DESC, e.user_id)) AS rank, u.username, e.xp_earned "
        "FROM leaderboard_entries e JOIN users u ON u.id = e.user_id "
        "WHERE e.week_start = $1 AND e.league = $2::league_type ORDER BY e.xp_earned DESC, e.user_id",
        week, league,
    )

    response = service.get(f"/leagues/{league}", params={"week": week.isoformat()})

    assert response.status_code == 200
    body = response.json()
    assert (body["week_start"], body["week_end"], body["closed"]) == (week.isoformat(), (week + timedelta(days=6)).isoformat(), which == "closed")
    standings = [(s["rank"], s["username"], s["xp_earned"]) for s in body["standings"]]
    assert standings == [(row["rank"], row["username"], row["xp_earned"]) for row in rows]
    assert [rank for rank, _, _ in standings] == list(range(1, len(standings) + 1))
    assert [xp for _, _, xp in standings] == sorted((xp for _, _, xp in standings), reverse=True)


@pytest.mark.clock
async def test_any_day_names_its_league_week_and_an_unknown_league_is_422(service, seeded, connect):
    week, league = await (await connect(seeded)).fetchrow(
        "SELECT week_start, league::text FROM leaderboard_entries GROUP BY week_start, league ORDER BY week_start DESC LIMIT 1"
    )
    monday = service.get(f"/leagues/{league}", params={"week": week.isoformat()}).json()
    for day in range(1, 7):  # every date is a valid `week` (as the schema says): it names the week it falls in
        response = service.get(f"/leagues/{league}", params={"week": (week + timedelta(days=day)).isoformat()})
        assert response.status_code == 200
        assert response.json() == monday

    unknown = service.get("/leagues/wood")
    assert unknown.status_code == 422
    assert [error["loc"] for error in unknown.json()["detail"]] == [["path", "league"]]  # FastAPI's own body, as declared


async def test_health_answers_503_when_the_database_goes_away(server, head_db):
    port = unused_port()
    process = start_service(head_db, port)
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}")
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        await server.drop(head_db)  # terminates the service's connections too; reconnecting finds no database
        response = httpx.get(f"http://127.0.0.1:{port}/health", headers=OPERATOR, timeout=10)
        courses = httpx.get(f"http://127.0.0.1:{port}/courses", timeout=10)
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert response.status_code == 503
    body = response.json()
    assert body == {"status": "unavailable", "database": "unreachable", "error": "database_unavailable"}
    assert int(response.headers["Retry-After"]) >= 1
    assert (courses.status_code, courses.json()["error"]) == (503, "database_unavailable")
    assert_no_internals(response, head_db)


async def test_the_service_refuses_to_start_on_a_database_behind_the_code(empty_db):
    await history.upgrade(empty_db, to=2)
    process = start_service(empty_db, unused_port())
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "langlearn.errors.DatabaseBehind: database is behind the code:" in stderr
    assert "Application startup failed. Exiting." in stderr


async def test_the_service_in_apply_mode_migrates_an_empty_database_then_serves(empty_db):
    port = unused_port()
    process = start_service(empty_db, port, mode="apply")
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}")
        health = httpx.get(f"http://127.0.0.1:{port}/health", headers=OPERATOR, timeout=10).json()
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert (health["status"], health["version"], health["pending"]) == ("ok", HEAD[-1], 0)


# ---- the database goes away: every route answers 503, and the service recovers by itself ----


def assert_no_internals(response: httpx.Response, *urls: str) -> None:
    """Nothing in the answer names the database's host, port, user or name, nor repeats the driver's words."""
    text = " ".join([response.text, *(f"{name}: {value}" for name, value in response.headers.items())])
    for url in urls:
        parts = urlsplit(url)
        for secret in (parts.hostname, str(parts.port), parts.username, parts.path.lstrip("/")):
            assert not secret or secret not in text, f"{secret!r} leaked in {text!r}"
    for word in ("Errno", "Connect call", "connection", "asyncpg", "postgres"):
        assert word.lower() not in text.lower(), f"{word!r} leaked in {text!r}"


async def requests_for_every_operation(base: str, seeded: str, connect) -> tuple[dict[str, str], dict[str, str]]:
    """One URL per operation of the service's OpenAPI document, with identifiers of real rows, so that
    each answers 200 while the database is up (and every route the service grows is covered); and
    the path parameters used."""
    db = await connect(seeded)
    values = {
        "course_id": await db.fetchval("SELECT c.id::text FROM courses c JOIN units u ON u.course_id = c.id WHERE c.is_published LIMIT 1"),
        "league": await db.fetchval("SELECT league::text FROM leaderboard_entries ORDER BY week_start DESC LIMIT 1"),
    }
    document = httpx.get(f"{base}/openapi.json", timeout=10).json()
    urls = {}
    for path, operations in document["paths"].items():
        if "get" not in operations or "security" in operations["get"]:
            continue  # the write path and the bearer-protected reads: tests/test_service_api.py
        urls[path] = base + path.format_map(values)  # a KeyError names a path parameter to add above
    return urls, values


def schema_checks(base: str, values: dict[str, str]):
    """A function validating a live response against the service's OpenAPI document with schemathesis' own
    checks: the status is declared, and the body, its content type and the required headers match it."""
    import schemathesis
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    checks = [status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]

    def validate(path: str, response: httpx.Response) -> None:
        case = schema[path]["GET"].Case(path_parameters={name: values[name] for name in re.findall(r"{(\w+)}", path)})
        case.validate_response(response, checks=checks)

    return validate


@pytest.fixture
def proxy(seeded):
    proxy = DatabaseProxy(seeded)
    proxy.start()
    yield proxy
    proxy.close()


@pytest.fixture
def service_log(tmp_path):
    """A file for the service's output: an outage makes it log more than a pipe nobody reads can hold."""
    with open(tmp_path / "service.log", "w") as log:
        yield log


def written(log: IO[str]) -> str:
    return Path(log.name).read_text()


@contextmanager
def serving(database_url: str, *, env: dict[str, str] | None = None, log: IO[str] | None = None) -> Iterator[httpx.Client]:
    """A client of the service started on a free port (output to `log`); the service is stopped when the block ends."""
    port = unused_port()
    process = start_service(database_url, port, env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base)
        with httpx.Client(base_url=base, timeout=20) as client:
            yield client
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop the service as a deployment would: SIGTERM, and SIGKILL if it has not exited 30 s later."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        raise


def answers(urls: dict[str, str]) -> dict[str, int]:
    return {path: httpx.get(url, timeout=30).status_code for path, url in urls.items()}


async def test_every_route_answers_503_while_the_database_is_down_and_recovers_when_it_returns(seeded, connect, proxy, service_log):
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    process = start_service(proxy.url, port, env=WITH_SCHEMA, log=service_log)
    try:
        wait_until_up(process, base)
        urls, values = await requests_for_every_operation(base, seeded, connect)
        validate = schema_checks(base, values)
        assert answers(urls) == dict.fromkeys(urls, 200)

        proxy.stop()  # the database server goes away: connections refused, the pooled one dead
        for path, url in urls.items():
            response = httpx.get(url, timeout=30)
            assert response.status_code == 503, (path, response.text)
            assert int(response.headers["Retry-After"]) >= 1
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"] == "database_unavailable"
            assert_no_internals(response, seeded, proxy.url)
            validate(path, response)  # the 503 and its Retry-After are what the document declares
        health = httpx.get(f"{base}/health", headers=OPERATOR, timeout=30).json()
        assert health == {"status": "unavailable", "database": "unreachable", "error": "database_unavailable"}
        assert httpx.get(f"{base}/openapi.json", timeout=30).status_code == 200  # needs no database
        assert httpx.get(f"{base}/courses/not-a-uuid", timeout=30).status_code == 422  # a bad request stays the client's error

        proxy.start()  # it is back: the pool reconnects on the next request, nobody restarts the service
        assert answers(urls) == dict.fromkeys(urls, 200)

        seen = proxy.connections
        proxy.stop()  # a restart between two requests: the pool only holds dead connections now
        proxy.start()
        assert answers(urls) == dict.fromkeys(urls, 200)  # the very first requests after it succeed
        assert proxy.connections > seen  # on connections made after the restart
    finally:
        stop(process)
    output = written(service_log)
    assert "Application shutdown complete." in output, output
    assert "Exception in ASGI application" not in output, output  # no request failed unhandled (a 500)
    assert "database unavailable (ConnectionRefusedError" in output  # the operator's log keeps the driver's reason


async def test_a_database_that_stops_answering_costs_a_request_seconds_not_minutes(seeded, connect, proxy, service_log):
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    process = start_service(proxy.url, port, env={**WITH_SCHEMA, "DATABASE_TIMEOUT_SECONDS": "1"}, log=service_log)
    try:
        wait_until_up(process, base)
        urls, _ = await requests_for_every_operation(base, seeded, connect)
        assert answers(urls) == dict.fromkeys(urls, 200)

        proxy.freeze()  # nothing gets through any more, and nothing is refused either (a network partition)
        for path, url in urls.items():
            started = time.monotonic()
            response = httpx.get(url, timeout=30)
            elapsed = time.monotonic() - started
            assert (response.status_code, response.json()["error"]) == (503, "database_unavailable"), path
            assert int(response.headers["Retry-After"]) >= 1
            assert elapsed < 5, f"{path} took {elapsed:.1f} s"  # 1 s (2 s for /health), not asyncpg's 60 s connect timeout

        proxy.stop()  # the partition ends as the stuck connections are cut
        proxy.start()
        assert answers(urls) == dict.fromkeys(urls, 200)
    finally:
        stop(process)
    output = written(service_log)
    assert "Application shutdown complete." in output, output
    assert "Exception in ASGI application" not in output, output


# ---- the OpenAPI contract ----


async def test_the_openapi_document_declares_every_status_with_its_model(service):
    document = service.get("/openapi.json").json()
    read = {path: operations for path, operations in document["paths"].items() if not path.startswith(("/auth/", "/me"))}
    declared = {path: sorted(operations["get"]["responses"]) for path, operations in read.items()}
    assert declared == {
        "/health": ["200", "503"],
        "/courses": ["200", "503"],
        "/courses/{course_id}": ["200", "404", "422", "503"],
        "/leagues/{league}": ["200", "404", "422", "503"],
    }
    for path, operations in read.items():
        for status, response in operations["get"]["responses"].items():
            assert "$ref" in str(response["content"]["application/json"]["schema"]), (path, status)  # a named model
        assert operations["get"]["responses"]["503"]["headers"]["Retry-After"]["required"] is True


@pytest.mark.slow  # about 80 s: a few thousand generated requests
async def test_the_service_keeps_its_openapi_contract_under_fuzzing(service, seeded, connect, tmp_path):
    """schemathesis, every check, against the live service; real identifiers are offered half of the time so
    that the fuzzing reaches the 200 answers as well as the 404s and 422s."""
    db = await connect(seeded)
    courses = [row["id"] for row in await db.fetch("SELECT id::text FROM courses ORDER BY id LIMIT 20")]
    users = [row["user_id"] for row in await db.fetch("SELECT DISTINCT user_id::text FROM user_vocab_knowledge ORDER BY 1 LIMIT 20")]
    # a signed-in learner, so that the fuzzing gets past the 401s of the /me routes
    service.post("/auth/register", json={"email": "fuzz@example.com", "username": "fuzzer", "password": "fuzzing-password"})
    token = service.post("/auth/token", json={"email": "fuzz@example.com", "password": "fuzzing-password", "device_id": "fuzz",
                                              "device_type": "web"}).json()["access_token"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f"[dictionaries.courses]\nvalues = {courses!r}\n[dictionaries.users]\nvalues = {users!r}\n"
        "[parameters]\n"
        '"path.course_id" = { dictionary = "courses", probability = 0.5 }\n'
        '"path.user_id" = { dictionary = "users", probability = 0.5 }\n'
        # 400 is a well-formed request the data refuses (following oneself, a page cursor the API never issued);
        # 429 a sign-in throttled (the fuzzing's wrong guesses all come from one address)
        '[checks.positive_data_acceptance]\nexpected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]\n'
    )
    run = subprocess.run(
        [
            SCHEMATHESIS, "--config-file", str(config), "run", f"{service.base_url}/openapi.json",
            "--checks", "all", "--max-examples", "50", "--request-timeout", "10", "--generation-database", "none", "--no-color",
            "--header", f"Authorization: Bearer {token}",
        ],
        cwd=tmp_path,  # its caches and reports stay out of the repository
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    operations = sum(len(methods) for methods in service.get("/openapi.json").json()["paths"].values())
    assert f"Selected: {operations}/{operations}" in run.stdout and "Failures:" not in run.stdout, run.stdout[-3000:]
