"""Faults and fairness of the example service, as a real uvicorn process under real concurrent connections.

- sessions ended under load (pg_terminate_backend, what a failover or an operator does): 503 + Retry-After, never a 500;
- a user's rows locked by another transaction: the request gives up after the pool's lock_timeout (503 `busy`),
  instead of holding its pooled connection for the whole request budget;
- one user's stuck requests cannot take a worker's pool: past USER_CONCURRENCY_LIMIT they are 429 at once,
  and the other users keep their latency;
- the server itself stopped under load (fast, then immediate: a power cut) and started again: 503s, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from langlearn import history, local_server, rules
from tests.test_service import WITH_SCHEMA, start_service, stop, wait_until_up, written
from tests.test_startup import unused_port

# Not `clock`-marked: what these tests measure (lock waits, pool fairness, lost connections) does not depend on the date,
# and under the clock check's libfaketime the server's lock_timeout did not fire within the request budget.
PASSWORD = "correct horse battery staple"
RETRYABLE = {429, 503}


@pytest.fixture(scope="module")
def service_log(tmp_path_factory):
    with open(tmp_path_factory.mktemp("faults") / "service.log", "w") as log:
        yield log


@pytest.fixture(scope="module")
def base(seeded_module_db, service_log):
    """The service with its defaults (pool of 5, lock_timeout 2 s, 4 requests per user), its clean stop checked after."""
    port = unused_port()
    process = start_service(seeded_module_db, port, env=WITH_SCHEMA, log=service_log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base)
        yield base
    finally:
        stop(process)
    output = written(service_log)
    assert "Application shutdown complete." in output, output
    assert "Exception in ASGI application" not in output, output  # no request was a 500


async def signed_in(client: httpx.AsyncClient, name: str) -> tuple[uuid.UUID, dict[str, str]]:
    """A new account and the headers of its access token."""
    email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
    registered = await client.post("/auth/register", json={"email": email, "username": email.split("@")[0], "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    tokens = await client.post("/auth/token", json={"email": email, "password": PASSWORD, "device_id": "d1", "device_type": "ios"})
    return uuid.UUID(registered.json()["user_id"]), {"Authorization": f"Bearer {tokens.json()['access_token']}"}


async def cheap_item(connection) -> str:
    return str(await connection.fetchval(
        "SELECT id FROM shop_items WHERE is_available AND price_gems BETWEEN 1 AND $1 AND stock_quantity IS NULL ORDER BY price_gems, id LIMIT 1",
        rules.WELCOME_GEMS,
    ))


async def holding_the_wallet(connection, user_id: uuid.UUID):
    """Another transaction that holds the user's wallet row lock (a stuck request, a long close) until rolled back."""
    transaction = connection.transaction()
    await transaction.start()
    assert await connection.fetchval("SELECT id FROM user_wallets WHERE user_id = $1 FOR UPDATE", user_id)
    return transaction


def assert_retry_after(response: httpx.Response) -> None:
    assert response.status_code in RETRYABLE, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"] in {"database_unavailable", "busy", "too_many_requests"}


# --- bounded lock waits ------------------------------------------------------------------------------------


async def test_a_purchase_behind_a_held_wallet_lock_gives_up_after_the_lock_timeout(base, seeded_module_db, connect, service_log):
    admin, holder = await connect(seeded_module_db), await connect(seeded_module_db)
    item = await cheap_item(admin)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        user_id, headers = await signed_in(client, "locked")
        request = {"json": {"shop_item_id": item, "quantity": 1}, "headers": {**headers, "Idempotency-Key": "behind-the-lock"}}
        held = await holding_the_wallet(holder, user_id)
        started = time.monotonic()
        refused = await client.post("/me/purchases", **request)
        waited = time.monotonic() - started
        assert (refused.status_code, refused.json()["error"]) == (503, "busy"), refused.text
        assert_retry_after(refused)
        assert 1.5 < waited < 5, waited  # the pool's lock_timeout (2 s), not the request's budget (10 s)
        assert "busy (LockNotAvailableError" in written(service_log)
        await held.rollback()

        again = await client.post("/me/purchases", **request)  # the retry the Retry-After asks for: nothing was written before
        assert again.status_code == 201, again.text
    assert await admin.fetchval("SELECT count(*) FROM wallet_transactions WHERE user_id = $1 AND idempotency_key = 'behind-the-lock'",
                                user_id) == 1


async def test_a_lesson_completion_behind_a_held_wallet_lock_gives_up_after_the_lock_timeout(base, seeded_module_db, connect):
    admin, holder = await connect(seeded_module_db), await connect(seeded_module_db)
    lesson = await admin.fetchrow("SELECT id, content FROM lessons WHERE content ? 'exercises' AND prerequisite_lesson_id IS NULL ORDER BY id LIMIT 1")
    now = datetime.now(timezone.utc)
    body = {
        "answers": [{"question_id": e["id"], "answer": e.get("answer", ""), "time_spent_ms": 1000, "hint_used": False}
                    for e in json.loads(lesson["content"])["exercises"]],
        "started_at": (now - timedelta(minutes=3)).isoformat(), "finished_at": now.isoformat(),
    }
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        user_id, headers = await signed_in(client, "lesson-locked")
        held = await holding_the_wallet(holder, user_id)
        started = time.monotonic()
        refused = await client.post(f"/me/lessons/{lesson['id']}/attempts", json=body, headers={**headers, "Idempotency-Key": "l1"})
        waited = time.monotonic() - started
        await held.rollback()
    assert (refused.status_code, refused.json()["error"]) == (503, "busy"), refused.text
    assert_retry_after(refused)
    assert waited < 5, waited
    assert await admin.fetchval("SELECT count(*) FROM lesson_attempts WHERE user_id = $1", user_id) == 0


# --- fairness ------------------------------------------------------------------------------------------------


async def test_one_users_stuck_requests_cannot_take_the_pool_from_the_others(base, seeded_module_db, connect):
    """The attack: one account sends many requests at once while its rows are locked (here by another transaction,
    as a stuck request or a slow close would hold them). Before the bound, its requests took the worker's 5 pooled
    connections for the whole request budget and everyone else waited for one."""
    admin, holder = await connect(seeded_module_db), await connect(seeded_module_db)
    item = await cheap_item(admin)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=100)) as client:
        attacker, attacker_headers = await signed_in(client, "attacker")
        others = [await signed_in(client, f"other{n}") for n in range(3)]
        held = await holding_the_wallet(holder, attacker)

        async def attack(n: int) -> httpx.Response:
            return await client.post("/me/purchases", json={"shop_item_id": item, "quantity": 1},
                                     headers={**attacker_headers, "Idempotency-Key": f"attack-{n}"})

        async def other(headers: dict[str, str]) -> list[tuple[int, float]]:
            await asyncio.sleep(0.3)  # once the attack is in flight
            timed = []
            for _ in range(5):
                started = time.monotonic()
                response = await client.get("/me/wallet", headers=headers)
                timed.append((response.status_code, time.monotonic() - started))
            return timed

        results = await asyncio.gather(*(attack(n) for n in range(16)), *(other(headers) for _, headers in others))
        await held.rollback()
    attacks, latencies = results[:16], [timing for timings in results[16:] for timing in timings]
    assert {status for status, _ in latencies} == {200}, latencies
    assert max(seconds for _, seconds in latencies) < 1.5, latencies
    for response in attacks:
        assert_retry_after(response)
    refused = Counter(response.json()["error"] for response in attacks)
    assert refused["too_many_requests"] >= 16 - 4 and refused["busy"] >= 1, refused


async def test_the_429_is_declared_on_every_route_that_takes_a_token(base):
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            throttled = operation["responses"].get("429")
            if operation.get("security") or (method, path) == ("post", "/auth/token"):  # sign-in is throttled, token or not
                assert throttled["headers"]["Retry-After"]["required"] is True, (method, path)
                assert throttled["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
            else:
                assert throttled is None, (method, path)


async def test_a_bad_user_concurrency_limit_refuses_the_start_in_one_line(seeded_module_db):
    process = start_service(seeded_module_db, unused_port(), env={"USER_CONCURRENCY_LIMIT": "0"})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "error: USER_CONCURRENCY_LIMIT='0' is not a positive whole number; unset it for 4" in stderr
    assert "Traceback" not in stderr, stderr


# --- connections lost ---------------------------------------------------------------------------------------


async def test_sessions_terminated_under_load_answer_503_with_retry_after_never_500(base, seeded_module_db, connect):
    """Found by this test: a session ended while its connection sat idle in the pool fails the next query with
    asyncpg's InternalClientError ("cannot switch to state 12; another operation (2) is in progress"), and the
    rollback after it with InterfaceError: both were 500s (and the 500 closed the client's connection). And a
    transaction whose BEGIN failed so kept its connection (Tortoise, see langlearn.compat): the pool ran dry and
    the service hung, every request a 503 after 10 s, after the terminations had stopped."""
    admin = await connect(seeded_module_db)
    item = await cheap_item(admin)
    statuses: Counter[tuple[str, int]] = Counter()
    terminated = 0
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        users = [await signed_in(client, f"load{n}") for n in range(6)]
        until = time.monotonic() + 8

        async def learner(headers: dict[str, str]) -> None:
            while time.monotonic() < until:
                route = random.choice(["purchase", "wallet", "me", "courses", "health"])
                if route == "purchase":
                    response = await client.post("/me/purchases", json={"shop_item_id": item, "quantity": 1},
                                                 headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
                else:
                    response = await client.get({"wallet": "/me/wallet", "me": "/me", "courses": "/courses", "health": "/health"}[route],
                                                headers=headers)
                statuses[route, response.status_code] += 1
                if response.status_code == 503:
                    assert_retry_after(response)

        async def operator() -> None:
            nonlocal terminated
            while time.monotonic() < until:
                await asyncio.sleep(random.uniform(0.005, 0.1))
                terminated += await admin.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )

        await asyncio.gather(*(learner(headers) for _, headers in users * 2), operator())

        # and once the operator stops, the service is whole again: every pooled connection came back
        await asyncio.sleep(0.5)
        started = time.monotonic()
        after = await asyncio.gather(*(client.get("/me/wallet", headers=headers) for _, headers in users * 2),
                                     signed_in(client, "after"))
        assert [response.status_code for response in after[:-1]] == [200] * len(users) * 2
        assert time.monotonic() - started < 3
    assert terminated > 20
    assert {status for _, status in statuses} <= {200, 201, 409, 503}, statuses  # 409: the welcome gems spent
    assert sum(count for (_, status), count in statuses.items() if status == 503) > 0, statuses  # the terminations did hit requests
    assert sum(count for (_, status), count in statuses.items() if status < 300) > 100, statuses  # and the service kept serving


# --- the server itself stops ------------------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path, monkeypatch):
    """A PostgreSQL server of this test's own (the private server's code, in a temporary data directory), free to stop."""
    monkeypatch.setenv("LANGLEARN_DATA_DIR", str(tmp_path / "pgdata"))
    url = local_server.ensure_running()
    yield url
    local_server.stop()


@pytest.fixture
def own_log(tmp_path):
    with open(tmp_path / "service.log", "w") as log:
        yield log


def stop_immediately() -> None:
    """`pg_ctl stop -m immediate`: every backend killed at once, crash recovery at the next start (a power cut)."""
    local_server._pg("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(local_server.server_files().cluster))


async def test_a_server_stopped_fast_or_immediately_under_load_costs_503s_never_a_500(own_server, own_log):
    await history.upgrade(own_server)
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    process = start_service(own_server, port, log=own_log)
    statuses: Counter[tuple[str, int]] = Counter()
    try:
        wait_until_up(process, base)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            users = [await signed_in(client, f"stop{n}") for n in range(4)]
            running = True

            async def learner(headers: dict[str, str], other: uuid.UUID) -> None:
                while running:
                    route = random.choice(["follow", "wallet", "me", "health"])
                    if route == "follow":
                        response = await client.put(f"/me/following/{other}", headers=headers)
                    else:
                        response = await client.get({"wallet": "/me/wallet", "me": "/me", "health": "/health"}[route], headers=headers)
                    statuses[route, response.status_code] += 1
                    if response.status_code == 503:
                        assert_retry_after(response)
                    await asyncio.sleep(0.01)

            async def operator() -> None:
                nonlocal running
                for stop_server in (local_server.stop, stop_immediately):
                    await asyncio.sleep(1)
                    await asyncio.to_thread(stop_server)
                    await asyncio.sleep(1)
                    assert await asyncio.to_thread(local_server.ensure_running) == own_server  # back on its port
                await asyncio.sleep(1)
                running = False

            await asyncio.gather(*(learner(headers, users[n - 1][0]) for n, (_, headers) in enumerate(users)), operator())
            after = [await client.get("/me/wallet", headers=headers) for _, headers in users]
            assert [response.status_code for response in after] == [200] * len(users)  # the pool reconnected by itself
    finally:
        stop(process)
    output = written(own_log)
    assert {status for _, status in statuses} <= {200, 204, 503}, statuses
    assert sum(count for (_, status), count in statuses.items() if status == 503) > 0, statuses  # the stops did hit requests
    assert "Exception in ASGI application" not in output, output
