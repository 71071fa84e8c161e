"""The write API under concurrent load, with client retries and a database restart in the middle.

Unit tests prove each operation idempotent on its own; what only load shows is that retries racing
other users' writes, and a restart cutting transactions mid-flight, still leave every acknowledged
write in the database exactly once and every invariant intact. Clients behave as a mobile app
should: a 503 or a broken connection is retried with the same Idempotency-Key until acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from langlearn import local_server
from langlearn.verify import check_invariants
from tests.test_service import DatabaseProxy, start_service, stop, wait_until_up, written
from tests.test_startup import unused_port

pytestmark = pytest.mark.slow

USERS = 30
DEMO_EMAILS = ("linh@demo.langlearn.example", "minh@demo.langlearn.example", "hoa@demo.langlearn.example")
DEMO_PASSWORD = "langlearn-demo"  # seed/data/demo_accounts.json: these have words learnt to review
PASSWORD = "load test password 1234"
RUN_SECONDS = 20.0
OUTAGE_AFTER_SECONDS = 8.0
OUTAGE_SECONDS = 2.0
RECOVERY_GRACE_SECONDS = 3.0  # a 503 sent later than this after the restart means the pool did not recover
DUPLICATE_SHARE = 0.2
WRONG_ANSWER_SHARE = 0.1
MAX_TRIES = 12
RETRY_PAUSE_SECONDS = 0.3  # the service says Retry-After: 5; a test cannot wait that long, a real client would
OPERATIONS = {"lesson": 30, "review": 15, "purchase": 15, "activate": 5, "follow": 10, "unfollow": 5, "feed": 10, "wallet": 10}
EXPECTED = {  # every status an operation may answer while the database is up, and the 409s it may give
    "lesson": {201}, "review": {200}, "purchase": {201, 409}, "activate": {200, 409}, "follow": {204}, "unfollow": {204},
    "feed": {200}, "wallet": {200},
}
ALLOWED_CONFLICTS = {"purchase": {"insufficient_gems", "out_of_stock", "not_available", "freeze_limit"}, "activate": {"not_owned"}}


@dataclass(frozen=True)
class Exchange:
    """One HTTP request as sent (a retry is another exchange): its status, None for a transport error."""

    operation: str
    status: int | None
    sent_at: float


@dataclass(frozen=True)
class Learner:
    user_id: str
    token: str
    words: tuple[str, ...]  # vocabulary ids this user has learnt (a lesson taught them: only those are reviewed)


@dataclass(frozen=True)
class Acknowledged:
    """A keyed write the service confirmed (2xx): it must be in the database exactly once."""

    user_id: str
    key: str
    attempt_id: str | None = None  # lesson completions only


@dataclass(frozen=True)
class Catalogue:
    lessons: dict[str, list[tuple[str, str]]]  # lesson id -> its exercises (id, right answer): lessons with no prerequisite
    shop: list[str]
    activatable: list[str]
    others: list[str]  # seeded users to follow


@dataclass
class Outage:
    stopped_at: float = float("inf")
    started_at: float = float("inf")
    restarted: bool | None = None  # the private server restarted on its port; None: a DATABASE_URL server, only cut


@dataclass
class Record:
    exchanges: list[Exchange] = field(default_factory=list)
    lessons: list[Acknowledged] = field(default_factory=list)
    lesson_keys_sent: list[tuple[str, str]] = field(default_factory=list)
    purchases: list[Acknowledged] = field(default_factory=list)
    follows: dict[tuple[str, str], bool | None] = field(default_factory=dict)  # None: the last request was never acknowledged
    unexpected: list[str] = field(default_factory=list)
    transport_errors: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    retries: int = 0  # resent after a 503 or a transport error
    unacknowledged: int = 0


class Client:
    """One user's app: sends requests, retries on 503 or a broken connection with the same key, records the outcome."""

    def __init__(self, http: httpx.AsyncClient, learner: Learner, record: Record, rng: random.Random) -> None:
        self.http, self.learner, self.record, self.rng = http, learner, record, rng

    async def send(self, operation: str, method: str, url: str, body: Any = None, key: str | None = None, *, retry: bool = True) -> httpx.Response | None:
        """The first answer other than a 503, or None when no try got one."""
        headers = {"Authorization": f"Bearer {self.learner.token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        for number in range(MAX_TRIES if retry else 1):
            self.record.retries += number > 0
            sent_at = time.monotonic()
            try:
                response = await self.http.request(method, url, json=body, headers=headers)
            except httpx.TransportError as error:
                self.record.exchanges.append(Exchange(operation, None, sent_at))
                self.record.transport_errors[f"{operation}: {type(error).__name__} {error}"] += 1
            else:
                self.record.exchanges.append(Exchange(operation, response.status_code, sent_at))
                if response.status_code != 503:
                    self.check(operation, response)
                    return response
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
        self.record.unacknowledged += retry
        return None

    def check(self, operation: str, response: httpx.Response) -> None:
        status = response.status_code
        conflict = response.json().get("error") if status == 409 else None
        if status not in EXPECTED[operation] or (conflict is not None and conflict not in ALLOWED_CONFLICTS.get(operation, set())):
            self.record.unexpected.append(f"{operation} {response.request.method} {response.request.url.path}: {status} {response.text[:300]}")

    def duplicate(self) -> bool:
        return self.rng.random() < DUPLICATE_SHARE

    async def complete_lesson(self, catalogue: Catalogue) -> None:
        lesson_id = self.rng.choice(list(catalogue.lessons))
        now = datetime.now(timezone.utc)
        body = {"answers": self.play(catalogue.lessons[lesson_id]), "started_at": iso(now - timedelta(seconds=self.rng.randint(30, 600))),
                "finished_at": iso(now)}
        key = str(uuid.uuid4())
        url = f"/me/lessons/{lesson_id}/attempts"
        self.record.lesson_keys_sent.append((self.learner.user_id, key))
        first = await self.send("lesson", "POST", url, body, key)
        if first is None or first.status_code != 201:
            return
        self.record.lessons.append(Acknowledged(self.learner.user_id, key, first.json()["attempt_id"]))
        if self.duplicate():
            self.record.duplicates += 1
            again = await self.send("lesson", "POST", url, body, key)
            if again is not None and again.json() != first.json():
                self.record.unexpected.append(f"lesson retry answered {again.status_code} {again.text[:300]}, first {first.text[:300]}")

    def play(self, exercises: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """A play the rules accept: a wrong answer costs a heart and its exercise comes back; a right one ends it."""
        queue, answers, hearts = list(exercises), [], 5
        while queue and hearts:
            exercise_id, right = queue.pop(0)
            wrong = self.rng.random() < WRONG_ANSWER_SHARE
            answers.append({"question_id": exercise_id, "answer": "a wrong answer" if wrong else right,
                            "time_spent_ms": self.rng.randint(800, 9000), "hint_used": self.rng.random() < 0.1})
            if wrong:
                hearts -= 1
                queue.append((exercise_id, right))
        return answers

    async def review(self) -> None:
        body = {"vocab_id": self.rng.choice(self.learner.words), "quality": self.rng.randint(0, 5)}
        await self.send("review", "POST", "/me/reviews", body)

    async def purchase(self, catalogue: Catalogue) -> None:
        body = {"shop_item_id": self.rng.choice(catalogue.shop), "quantity": self.rng.choice((1, 1, 1, 2))}
        key = str(uuid.uuid4())
        first = await self.send("purchase", "POST", "/me/purchases", body, key)
        if first is None or first.status_code != 201:
            return
        self.record.purchases.append(Acknowledged(self.learner.user_id, key))
        if self.duplicate():
            self.record.duplicates += 1
            again = await self.send("purchase", "POST", "/me/purchases", body, key)
            if again is not None and again.status_code != 201:
                self.record.unexpected.append(f"purchase retry answered {again.status_code} {again.text[:300]}")

    async def activate(self, catalogue: Catalogue) -> None:
        # not idempotent (each call uses one more boost): never resent blindly
        await self.send("activate", "POST", f"/me/inventory/{self.rng.choice(catalogue.activatable)}/activate", retry=False)

    async def follow(self, catalogue: Catalogue, *, following: bool) -> None:
        other = self.rng.choice([user for user in catalogue.others if user != self.learner.user_id])
        operation, method = ("follow", "PUT") if following else ("unfollow", "DELETE")
        sends = 2 if self.duplicate() else 1
        self.record.duplicates += sends - 1
        for _ in range(sends):
            response = await self.send(operation, method, f"/me/following/{other}")
            self.record.follows[(self.learner.user_id, other)] = following if response is not None and response.status_code == 204 else None

    async def run(self, catalogue: Catalogue, deadline: float) -> None:
        names, weights = list(OPERATIONS), list(OPERATIONS.values())
        while time.monotonic() < deadline:
            match self.rng.choices(names, weights)[0]:
                case "lesson":
                    await self.complete_lesson(catalogue)
                case "review":
                    await self.review()
                case "purchase":
                    await self.purchase(catalogue)
                case "activate":
                    await self.activate(catalogue)
                case "follow" | "unfollow" as operation:
                    await self.follow(catalogue, following=operation == "follow")
                case "feed":
                    await self.send("feed", "GET", "/me/feed")
                case "wallet":
                    await self.send("wallet", "GET", "/me/wallet")


def unhandled(output: str) -> list[str]:
    """The exceptions of the service's tracebacks, each once: what a 500 was."""
    return sorted(set(re.findall(r"^[\w.]+(?:Error|Exception): .*$", output, flags=re.MULTILINE)))


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def read_catalogue(db) -> Catalogue:
    lessons = {}
    # lessons every learner may play: the rule book refuses one whose prerequisite is not passed (lesson_locked)
    for row in await db.fetch("SELECT l.id::text, l.content FROM lessons l JOIN courses c ON c.id = l.course_id "
                              "WHERE c.is_published AND l.prerequisite_lesson_id IS NULL"):
        content = json.loads(row["content"]) if isinstance(row["content"], str) else row["content"]
        exercises = [(str(e["id"]), str(e["answer"])) for e in (content or {}).get("exercises", [])]
        if exercises:
            lessons[row["id"]] = exercises
    shop = [row["id"] for row in await db.fetch("SELECT id::text FROM shop_items WHERE price_gems > 0")]
    activatable = [row["id"] for row in await db.fetch("SELECT id::text FROM shop_items WHERE item_type IN ('streak_freeze', 'double_xp')")]
    others = [row["id"] for row in await db.fetch("SELECT id::text FROM users ORDER BY id LIMIT 20")]
    assert lessons and shop and activatable and others
    return Catalogue(lessons, shop, activatable, others)


@dataclass(frozen=True)
class Account:
    email: str
    password: str


async def admitted(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    """The answer to a POST once the service admits it: a burst of sign-ups or sign-ins meets the bounded hashing pool
    (503 `busy`) and the throttling (429), and a client waits `Retry-After` as told."""
    for _ in range(20):
        response = await http.post(path, json=body)
        if response.status_code not in (429, 503) or "Retry-After" not in response.headers:
            return response
        await asyncio.sleep(int(response.headers["Retry-After"]))
    return response


async def sign_up(http: httpx.AsyncClient, number: int) -> Account:
    email = f"load{number}-{uuid.uuid4().hex[:8]}@example.com"
    registered = await admitted(http, "/auth/register", {"email": email, "username": email.split("@")[0], "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    return Account(email, PASSWORD)


async def sign_in(http: httpx.AsyncClient, account: Account) -> str:
    """An access token (argon2 makes this ~0.2 s: the callers sign in concurrently)."""
    signed_in = await admitted(
        http, "/auth/token", {"email": account.email, "password": account.password, "device_id": f"load-{account.email}", "device_type": "ios"}
    )
    assert signed_in.status_code == 200, signed_in.text
    return signed_in.json()["access_token"]


def teach_key(lesson_id: str) -> str:
    return f"teach-{lesson_id}"


async def teach(http: httpx.AsyncClient, token: str, catalogue: Catalogue) -> None:
    """Pass every lesson of the catalogue once: a new account's words to review are the words its lessons taught."""
    for lesson_id, exercises in catalogue.lessons.items():
        now = datetime.now(timezone.utc)
        answers = [{"question_id": exercise, "answer": right, "time_spent_ms": 2000, "hint_used": False} for exercise, right in exercises]
        body = {"answers": answers, "started_at": iso(now - timedelta(minutes=1)), "finished_at": iso(now)}
        response = await http.post(f"/me/lessons/{lesson_id}/attempts", json=body,
                                   headers={"Authorization": f"Bearer {token}", "Idempotency-Key": teach_key(lesson_id)})
        assert response.status_code == 201 and response.json()["passed"], response.text


async def as_learner(db, account: Account, token: str) -> Learner:
    user_id = await db.fetchval("SELECT id::text FROM users WHERE email = $1", account.email)
    learnt = [row["vocab_id"] for row in await db.fetch("SELECT vocab_id::text FROM user_vocab_knowledge WHERE user_id = $1", user_id)]
    assert learnt, f"{account.email} has no word to review"
    return Learner(user_id, token, tuple(learnt))


async def restart_database(proxy: DatabaseProxy, outage: Outage) -> None:
    """Cut every connection (the proxy) and, on the private server, restart PostgreSQL itself: its backends are
    killed mid-transaction. Against a DATABASE_URL server (not ours to restart) the cut alone stands for it."""
    await asyncio.sleep(OUTAGE_AFTER_SECONDS)
    outage.stopped_at = time.monotonic()
    await asyncio.to_thread(proxy.stop)
    if not os.environ.get("DATABASE_URL"):
        before = await asyncio.to_thread(local_server.ensure_running)
        assert await asyncio.to_thread(local_server.stop)
        outage.restarted = before == await asyncio.to_thread(local_server.ensure_running)  # the same port: the URL holds
    await asyncio.sleep(OUTAGE_SECONDS)
    await asyncio.to_thread(proxy.start)
    outage.started_at = time.monotonic()


@pytest.fixture
def service_log(tmp_path):
    """The service's output: a run this long logs more than a pipe nobody reads can hold."""
    with open(tmp_path / "service.log", "w") as log:
        yield log


async def test_acknowledged_writes_survive_load_retries_and_a_database_restart(seeded_db, connect, service_log):
    await run_load(seeded_db, seeded_db, connect, service_log)


async def run_load(seeded_db: str, service_db: str, connect, service_log, env: dict[str, str] | None = None) -> None:
    """The load, the restart and every check after it. The service connects to `service_db` through the cutting proxy:
    `seeded_db` itself, or the same database through a pooler (with `env` saying how to reach it directly)."""
    db = await connect(seeded_db)
    catalogue = await read_catalogue(db)
    proxy = DatabaseProxy(service_db)
    proxy.start()
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    record, outage = Record(), Outage()
    process = start_service(proxy.url, port, log=service_log, env=env)
    try:
        wait_until_up(process, base)
        # idle connections dropped before uvicorn's 5 s keep-alive timeout can close one under a request
        limits = httpx.Limits(max_connections=2 * USERS, max_keepalive_connections=2 * USERS, keepalive_expiry=2)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
            accounts = [
                *await asyncio.gather(*(sign_up(http, number) for number in range(USERS - len(DEMO_EMAILS)))),
                *(Account(email, DEMO_PASSWORD) for email in DEMO_EMAILS),
            ]
            tokens = await asyncio.gather(*(sign_in(http, account) for account in accounts))
            # the new accounts pass the lessons first, so that they have words to review (the demo accounts have theirs)
            await asyncio.gather(*(teach(http, token, catalogue) for token in tokens[: USERS - len(DEMO_EMAILS)]))
            learners = [await as_learner(db, account, token) for account, token in zip(accounts, tokens, strict=True)]
            for learner in learners[: USERS - len(DEMO_EMAILS)]:
                record.lesson_keys_sent.extend((learner.user_id, teach_key(lesson_id)) for lesson_id in catalogue.lessons)
            catalogue.others.extend(each.user_id for each in learners)
            started = time.monotonic()
            deadline = started + RUN_SECONDS
            clients = [Client(http, each, record, random.Random(number)) for number, each in enumerate(learners)]
            await asyncio.gather(restart_database(proxy, outage), *(client.run(catalogue, deadline) for client in clients))
            elapsed = time.monotonic() - started
    finally:
        stop(process)
        proxy.close()
    output = written(service_log)

    statuses = Counter(exchange.status for exchange in record.exchanges)
    unavailable = [exchange for exchange in record.exchanges if exchange.status == 503]
    late = [exchange for exchange in unavailable if exchange.sent_at > outage.started_at + RECOVERY_GRACE_SECONDS]
    acknowledged = sum(1 for exchange in record.exchanges if exchange.status is not None and 200 <= exchange.status < 300)
    print(
        f"\nload: {len(record.exchanges)} requests in {elapsed:.1f} s ({len(record.exchanges) / elapsed:.0f}/s), {acknowledged} acknowledged, "
        f"{record.retries} retries after 503/transport errors, {record.duplicates} duplicates sent on purpose, {len(unavailable)} 503s "
        f"({len(late)} later than {RECOVERY_GRACE_SECONDS:g} s after the restart), {statuses[None]} transport errors, "
        f"{record.unacknowledged} never acknowledged; server {'restarted' if outage.restarted else 'connections cut'}; "
        f"lessons {len(record.lessons)}, purchases {len(record.purchases)}; "
        f"statuses {dict(sorted(statuses.items(), key=lambda item: str(item[0])))}; transport errors {dict(record.transport_errors)}"
    )

    assert not record.unexpected, "\n".join([*record.unexpected[:20], "the service logged:", *unhandled(output)])
    # a request met the outage: it was answered 503, or the service retried it (keyed writes and the token check)
    assert unavailable or " again in " in output, "no request met the outage: it proves nothing"
    assert not [status for status in statuses if status is not None and status >= 500 and status != 503], statuses
    assert not late, f"{len(late)} requests still got 503 more than {RECOVERY_GRACE_SECONDS} s after the database came back"
    assert record.unacknowledged == 0, "some writes were never acknowledged within the retries"
    assert "Exception in ASGI application" not in output, unhandled(output)
    assert record.lessons and record.purchases

    assert outage.restarted in (True, None), "the private server came back on another port"
    db = await connect(seeded_db)  # the restart ended the test's own session too
    assert await check_invariants(db) == []

    user_ids = [learner.user_id for learner in learners]
    attempts = await db.fetch(
        "SELECT id::text, user_id::text, idempotency_key FROM lesson_attempts WHERE id = ANY($1::uuid[])", [a.attempt_id for a in record.lessons]
    )
    assert sorted((row["id"], row["user_id"], row["idempotency_key"]) for row in attempts) == sorted(
        (a.attempt_id, a.user_id, a.key) for a in record.lessons
    ), "an acknowledged lesson attempt is missing or not the one its key wrote"
    per_key = await db.fetch(
        "SELECT user_id::text, idempotency_key, count(*) AS n FROM lesson_attempts WHERE user_id = ANY($1::uuid[]) "
        "AND idempotency_key IS NOT NULL GROUP BY 1, 2",
        user_ids,
    )
    assert all(row["n"] == 1 for row in per_key), [dict(row) for row in per_key if row["n"] != 1]
    assert {(row["user_id"], row["idempotency_key"]) for row in per_key} <= set(record.lesson_keys_sent), "an attempt nobody sent"

    ledger = await db.fetch(
        "SELECT user_id::text, idempotency_key, count(*) AS n FROM wallet_transactions WHERE idempotency_key = ANY($1::text[]) GROUP BY 1, 2",
        [p.key for p in record.purchases],
    )
    assert sorted((row["user_id"], row["idempotency_key"], row["n"]) for row in ledger) == sorted(
        (p.user_id, p.key, 1) for p in record.purchases
    ), "an acknowledged purchase is missing from the ledger or there twice"

    following = {
        (row["follower_id"], row["following_id"])
        for row in await db.fetch("SELECT follower_id::text, following_id::text FROM user_following WHERE follower_id = ANY($1::uuid[])", user_ids)
    }
    settled = {pair: state for pair, state in record.follows.items() if state is not None}
    assert {pair for pair, state in settled.items() if state} <= following
    assert not {pair for pair, state in settled.items() if not state} & following
