"""Throughput and latency of the example service's write path over HTTP, per operation, at concurrency 1, 8 and 32.

    python bench/bench_operations.py                                          # bench_queries_20000 (created and seeded if missing)
    python bench/bench_operations.py --users 2000 --database-name NAME --seconds 5  # a smaller database of its own

Why: bench_queries.py times single statements; what a client sees is a request through uvicorn,
FastAPI, the bearer check, the connection pool and the operation's transaction. Each operation is
measured beside floors taken in the same run, so that the share of the framework is visible:
an unrouted path (404: uvicorn and routing only), the trivial authenticated request (`GET /me`: the
token and the one-row user read), and `/health`.

The database is bench_queries.py's (its helper `prepare_database`: created, migrated to head and seeded
the first time, else reused, at head). The service runs under uvicorn, one worker, with a generated
LANGLEARN_SECRET_KEY. A pool of bench users is registered and signed in through the API, granted gems
(so that purchases measure the success path), made to follow seeded users (so that feeds have items) and made
to pass every lesson without a prerequisite (so that their words are theirs to review: the rule book reviews only
taught words; the lesson completions measured are then replays, which write everything a first pass does but the words).
Each (operation, concurrency) runs `--seconds`, one worker per user, each worker sending its next request
when the previous one is answered. Latency is measured by the client, loopback included.

Round trips per request: a second service instance (same key, same database) is started behind a
loopback proxy that counts each Sync and simple Query message the service sends to PostgreSQL (every one
is a wait for the server's answer); after a few warm-up requests per operation (statement caches, pool),
`--count` sequential requests of each operation are sent and the round trips divided by them. Everything
the request causes counts: the token's user read, the operation, the pool's reset of the released connection.

Afterwards: `check_invariants` on the database, and every acknowledged lesson completion looked up
by its attempt id and idempotency key (lost and doubled must be 0). Users registered by a run stay in
the database (they are few and marked `bench-ops-` in their email).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from bench_queries import prepare_database  # the same database handling as the other scale bench

from langlearn import database
from langlearn.databases import database_name
from langlearn.errors import LanglearnError
from langlearn.operations import wallet
from langlearn.settings import database_url, open_connection
from langlearn.verify import check_invariants

REPO_ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 8, 32)
PASSWORD = "bench operations password"
GRANT_GEMS = 1_000_000
FOLLOWED_PER_USER = 20
WARM_UP = 3  # requests per operation before round trips are counted: statement caches filled, pool connections made
REQUEST_TIMEOUT_SECONDS = 60.0
# idle client connections are dropped before uvicorn's 5 s keep-alive timeout closes them under a request being sent
KEEPALIVE_EXPIRY_SECONDS = 2.0


@dataclass(frozen=True)
class BenchUser:
    user_id: str
    token: str


@dataclass(frozen=True)
class Fixtures:
    """What the requests draw from, read once."""

    lessons: dict[str, list[tuple[str, str]]]  # lesson id -> its exercises (id, right answer): lessons with no prerequisite
    words: list[str]  # the words those lessons teach (a bench user passes each of them first: `teach`)
    seeded_users: list[str]
    purchasable: str  # an item sold without a stock limit or a holding limit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any = None
    key: str | None = None
    authenticated: bool = True


@dataclass(frozen=True)
class Operation:
    name: str
    expected: int
    make: Callable[[random.Random], Request]


@dataclass
class Result:
    operation: str
    concurrency: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)  # of the expected answers
    other: Counter[str] = field(default_factory=Counter)  # unexpected statuses, and transport errors by name

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


@dataclass
class Acknowledgements:
    """Lesson completions the service confirmed: (user id, idempotency key) -> attempt id."""

    attempts: dict[tuple[str, str], str] = field(default_factory=dict)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lesson_request(fixtures: Fixtures, lesson_id: str, rng: random.Random) -> Request:
    """A play of the lesson with every answer right, each in a plausible time (the rule book refuses 0-ms plays)."""
    now = datetime.now(timezone.utc)
    answers = [{"question_id": exercise, "answer": right, "time_spent_ms": rng.randint(800, 9000), "hint_used": False}
               for exercise, right in fixtures.lessons[lesson_id]]
    body = {"answers": answers, "started_at": iso(now - timedelta(minutes=2)), "finished_at": iso(now)}
    return Request("POST", f"/me/lessons/{lesson_id}/attempts", body, key=str(uuid.uuid4()))


def operations(fixtures: Fixtures) -> list[Operation]:
    def lesson(rng: random.Random) -> Request:  # after `teach`, a replay: the completion path, practice XP once a day
        return lesson_request(fixtures, rng.choice(list(fixtures.lessons)), rng)

    return [
        Operation("floor: unrouted path (404)", 404, lambda rng: Request("GET", "/bench-no-such-route", authenticated=False)),
        Operation("floor: authenticated GET /me", 200, lambda rng: Request("GET", "/me")),
        Operation("/health (unauthenticated)", 200, lambda rng: Request("GET", "/health", authenticated=False)),
        Operation("wallet read", 200, lambda rng: Request("GET", "/me/wallet")),
        Operation("feed read", 200, lambda rng: Request("GET", "/me/feed")),
        Operation("follow", 204, lambda rng: Request("PUT", f"/me/following/{rng.choice(fixtures.seeded_users)}")),
        Operation("review", 200, lambda rng: Request("POST", "/me/reviews", {"vocab_id": rng.choice(fixtures.words), "quality": rng.randint(3, 5)})),
        Operation("purchase", 201, lambda rng: Request("POST", "/me/purchases", {"shop_item_id": fixtures.purchasable, "quantity": 1},
                                                        key=str(uuid.uuid4()))),
        Operation("lesson completion", 201, lesson),
    ]


async def send(http: httpx.AsyncClient, user: BenchUser, request: Request) -> httpx.Response:
    headers = {"Authorization": f"Bearer {user.token}"} if request.authenticated else {}
    if request.key is not None:
        headers["Idempotency-Key"] = request.key
    return await http.request(request.method, request.path, json=request.body, headers=headers)


def acknowledge(acks: Acknowledgements, user: BenchUser, request: Request, response: httpx.Response) -> None:
    if request.path.endswith("/attempts") and response.status_code == 201 and request.key is not None:
        acks.attempts[(user.user_id, request.key)] = response.json()["attempt_id"]


async def measure(http: httpx.AsyncClient, users: list[BenchUser], operation: Operation, concurrency: int, seconds: float,
                  acks: Acknowledgements, seed: int) -> Result:
    """`concurrency` workers, one user each, sending back to back for `seconds`."""
    started = time.perf_counter()
    deadline = started + seconds
    result = Result(operation.name, concurrency, seconds)

    async def worker(user: BenchUser, rng: random.Random) -> None:
        while time.perf_counter() < deadline:
            request = operation.make(rng)
            sent = time.perf_counter()
            try:
                response = await send(http, user, request)
            except httpx.TransportError as error:
                result.other[type(error).__name__] += 1
                continue
            elapsed_ms = (time.perf_counter() - sent) * 1000
            acknowledge(acks, user, request, response)
            if response.status_code == operation.expected:
                result.latencies_ms.append(elapsed_ms)
            else:
                result.other[str(response.status_code)] += 1

    await asyncio.gather(*(worker(users[index], random.Random(seed + index)) for index in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


class RoundTripCounter:
    """A loopback TCP proxy in front of the database counting the round trips of the connections through it:
    each Sync (the end of an extended-protocol exchange) or simple Query message a client sends."""

    SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104  # untyped, like the StartupMessage that follows them

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.round_trips = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """The URL that connects through the proxy."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self.url)
        credentials = f"{parts.netloc.rsplit('@', 1)[0]}@" if "@" in parts.netloc else ""
        return parts._replace(netloc=f"{credentials}127.0.0.1:{port}").geturl()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        try:
            await asyncio.gather(self._frontend(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))
        except OSError:
            pass
        finally:
            client_writer.transport.abort()
            upstream_writer.transport.abort()

    async def _frontend(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending, typed = bytearray(), False
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
            pending += data
            while True:
                if not typed:  # int32 length, int32 code
                    if len(pending) < 8 or len(pending) < (length := int.from_bytes(pending[:4], "big")):
                        break
                    typed = int.from_bytes(pending[4:8], "big") not in (self.SSL_REQUEST, self.GSSENC_REQUEST)
                    del pending[:length]
                else:  # type byte, int32 length (itself included)
                    if len(pending) < 5 or len(pending) < 1 + (length := int.from_bytes(pending[1:5], "big")):
                        break
                    self.round_trips += pending[0] in b"SQ"
                    del pending[:1 + length]
        writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.transport.abort()


async def round_trips_per_request(url: str, key: str, user: BenchUser, ops: list[Operation], count: int, acks: Acknowledgements,
                                  seed: int) -> dict[str, float]:
    """`count` sequential requests per operation through a second service behind a `RoundTripCounter`."""
    rng = random.Random(seed)
    counter = RoundTripCounter(url)
    proxied = await counter.start()
    log_path = Path(tempfile.mkdtemp(prefix="bench-operations-counted-")) / "service.log"
    port = free_port()
    process = start_service(proxied, port, key, log_path)
    counted: dict[str, float] = {}
    try:
        limits = httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT_SECONDS, limits=limits) as http:
            await wait_until_up(http, process, log_path)
            for operation in ops:
                for number in range(WARM_UP + count):
                    if number == WARM_UP:
                        before = counter.round_trips
                    request = operation.make(rng)
                    acknowledge(acks, user, request, await send(http, user, request))
                counted[operation.name] = (counter.round_trips - before) / count
                print(f"  {operation.name}: {counted[operation.name]:.1f} round trips per request", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
        await counter.close()
    return counted


# --- setup -----------------------------------------------------------------------------------------


POOL_SIZE = 32  # the highest concurrency measured: no request waits for a pooled connection (Tortoise's default is 5)


def start_service(url: str, port: int, key: str, log_path: Path) -> subprocess.Popen[str]:
    """uvicorn, one worker, a connection pool as large as the highest concurrency; its output goes to `log_path`
    (a pipe nobody reads would fill up)."""
    pooled = f"{url}{'&' if '?' in url else '?'}maxsize={POOL_SIZE}"
    environment = {**os.environ, "DATABASE_URL": pooled, "MIGRATE_ON_START": "check", "LANGLEARN_SECRET_KEY": key}
    with open(log_path, "w") as log:  # the child holds its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", "examples", "service.app:app", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--no-access-log", "--log-level", "warning"],
            cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True,
        )


async def wait_until_up(http: httpx.AsyncClient, process: subprocess.Popen[str], log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if (await http.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"the service did not answer /health within {timeout:g} s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def read_fixtures(url: str, seed: int) -> Fixtures:
    connection = await open_connection(url)
    try:
        lessons = {}
        # lessons anyone may play (no prerequisite, a published course) and their words, which a bench user may review
        # once it has passed them
        playable = "SELECT l.id FROM lessons l JOIN courses c ON c.id = l.course_id WHERE c.is_published AND l.prerequisite_lesson_id IS NULL"
        for row in await connection.fetch(f"SELECT id::text, content FROM lessons WHERE id IN ({playable})"):
            content = json.loads(row["content"]) if isinstance(row["content"], str) else row["content"]
            exercises = [(str(e["id"]), str(e["answer"])) for e in (content or {}).get("exercises", [])]
            if exercises:
                lessons[row["id"]] = exercises
        words = [row["id"] for row in await connection.fetch(f"SELECT id::text FROM vocabulary_items WHERE lesson_id IN ({playable})")]
        seeded = [row["id"] for row in await connection.fetch("SELECT id::text FROM users WHERE email NOT LIKE 'bench-ops-%' ORDER BY id")]
        purchasable = await connection.fetchval(
            "SELECT id::text FROM shop_items WHERE is_available AND stock_quantity IS NULL AND price_gems > 0 "
            "AND item_type <> 'streak_freeze' ORDER BY price_gems, id LIMIT 1"
        )
    finally:
        await connection.close()
    return Fixtures(lessons, words, random.Random(seed).sample(seeded, min(len(seeded), 1000)), purchasable)


async def sign_up(http: httpx.AsyncClient, gate: asyncio.Semaphore) -> BenchUser:
    """A new account through the API (argon2: ~0.2 s each, hence the gate), and its access token."""
    email = f"bench-ops-{uuid.uuid4().hex[:12]}@example.com"
    async with gate:
        registered = await http.post("/auth/register", json={"email": email, "username": email.split("@")[0], "password": PASSWORD})
        if registered.status_code != 201:
            raise SystemExit(f"register answered {registered.status_code}: {registered.text}")
        signed_in = await http.post("/auth/token", json={"email": email, "password": PASSWORD, "device_id": "bench", "device_type": "web"})
        if signed_in.status_code != 200:
            raise SystemExit(f"sign-in answered {signed_in.status_code}: {signed_in.text}")
    return BenchUser(registered.json()["user_id"], signed_in.json()["access_token"])


async def grant_gems(url: str, users: list[BenchUser]) -> None:
    """Enough gems that every purchase of the run succeeds, paid through the ledger (so the invariants hold)."""
    async with database(url, migrate="check"):
        for user in users:
            await wallet.earn(uuid.UUID(user.user_id), GRANT_GEMS, "bench", "bench-ops-grant", kind="reward", description="bench gems")


async def teach(http: httpx.AsyncClient, users: list[BenchUser], fixtures: Fixtures, seed: int) -> None:
    """Each bench user passes every playable lesson once: its words become theirs to review, and later plays are replays."""
    rng = random.Random(seed)
    for user in users:
        for lesson_id in fixtures.lessons:
            response = await send(http, user, lesson_request(fixtures, lesson_id, rng))
            if response.status_code != 201:
                raise SystemExit(f"a first lesson answered {response.status_code}: {response.text}")


async def follow_seeded(http: httpx.AsyncClient, users: list[BenchUser], fixtures: Fixtures, seed: int) -> None:
    rng = random.Random(seed)
    for user in users:
        for other in rng.sample(fixtures.seeded_users, min(FOLLOWED_PER_USER, len(fixtures.seeded_users))):
            response = await send(http, user, Request("PUT", f"/me/following/{other}"))
            if response.status_code != 204:
                raise SystemExit(f"follow answered {response.status_code}: {response.text}")


# --- afterwards ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audit:
    findings: list[str]
    acknowledged: int
    lost: int
    doubled: int


async def audit(url: str, users: list[BenchUser], acks: Acknowledgements) -> Audit:
    connection = await open_connection(url)
    try:
        findings = [str(finding) for finding in await check_invariants(connection)]
        rows = await connection.fetch(
            "SELECT user_id::text, idempotency_key, id::text FROM lesson_attempts WHERE id = ANY($1::uuid[])", list(acks.attempts.values())
        )
        found = {(row["user_id"], row["idempotency_key"]): row["id"] for row in rows}
        doubled = await connection.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM lesson_attempts WHERE user_id = ANY($1::uuid[]) AND idempotency_key IS NOT NULL "
            "GROUP BY user_id, idempotency_key HAVING count(*) > 1) AS twice",
            [user.user_id for user in users],
        )
    finally:
        await connection.close()
    lost = sum(1 for key, attempt in acks.attempts.items() if found.get(key) != attempt)
    return Audit(findings, len(acks.attempts), lost, doubled)


def print_table(results: list[Result], round_trips: dict[str, float]) -> None:
    print("\n| operation | concurrency | ok | other statuses | req/s | p50 ms | p99 ms | DB round trips/request |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for result in results:
        other = ", ".join(f"{kind}: {count}" for kind, count in sorted(result.other.items())) or "-"
        counted = f"{round_trips[result.operation]:.1f}" if result.operation in round_trips else "-"
        print(f"| {result.operation} | {result.concurrency} | {len(result.latencies_ms)} | {other} | {result.throughput:,.0f} | "
              f"{result.percentile(0.5):.1f} | {result.percentile(0.99):.1f} | {counted} |")


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000, help="users to seed when the database is created (default 20000)")
    parser.add_argument("--database-name", help="the seeded database, created and seeded if missing, else reused (default bench_queries_<users>)")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the data and of the requests (default 42)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per operation and concurrency (default 5)")
    parser.add_argument("--count", type=int, default=20, help="sequential requests per operation whose database round trips are counted; 0 skips it (default 20)")
    args = parser.parse_args(argv)
    server = database_url()
    name = args.database_name or f"bench_queries_{args.users}"
    try:
        url = await prepare_database(server, name, args.users, args.seed)
    except LanglearnError as error:  # e.g. its history no longer matches the migration files: nothing to measure
        raise SystemExit(f"{name}: {error}") from None
    fixtures = await read_fixtures(url, args.seed)
    ops = operations(fixtures)
    key = secrets.token_urlsafe(48)  # LANGLEARN_SECRET_KEY, shared with the counting instance (the same tokens)
    log_path = Path(tempfile.mkdtemp(prefix="bench-operations-")) / "service.log"
    acks = Acknowledgements()
    port = free_port()
    process = start_service(url, port, key, log_path)
    try:
        limits = httpx.Limits(max_connections=2 * max(CONCURRENCY), max_keepalive_connections=2 * max(CONCURRENCY),
                              keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT_SECONDS, limits=limits) as http:
            await wait_until_up(http, process, log_path)
            started = time.perf_counter()
            gate = asyncio.Semaphore(8)
            users = await asyncio.gather(*(sign_up(http, gate) for _ in range(max(CONCURRENCY))))
            print(f"database {database_name(url)}; {len(users)} bench users registered and signed in in "
                  f"{time.perf_counter() - started:.1f} s; service log {log_path}", flush=True)
            await grant_gems(url, users)
            await follow_seeded(http, users, fixtures, args.seed)
            await teach(http, users, fixtures, args.seed)
            results = []
            for concurrency in CONCURRENCY:
                for operation in ops:
                    result = await measure(http, users, operation, concurrency, args.seconds, acks, args.seed)
                    results.append(result)
                    print(f"  {operation.name} x{concurrency}: {result.throughput:,.0f} req/s, p50 {result.percentile(0.5):.1f} ms, "
                          f"p99 {result.percentile(0.99):.1f} ms{f', other {dict(result.other)}' if result.other else ''}", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    output = log_path.read_text()
    round_trips = {}
    if args.count:
        print(f"counting round trips ({args.count} sequential requests per operation, a second service behind a counting proxy) ...", flush=True)
        round_trips = await round_trips_per_request(url, key, users[0], ops, args.count, acks, args.seed)
    print_table(results, round_trips)
    checked = await audit(url, users, acks)
    print(f"\ninvariants: {'clean' if not checked.findings else '; '.join(checked.findings)}")
    print(f"lesson completions acknowledged: {checked.acknowledged}; lost: {checked.lost}; doubled: {checked.doubled}")
    print(f"unhandled exceptions in the service log: {output.count('Exception in ASGI application')}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
