"""A Patroni failover under the service's load loses no acknowledged write and doubles none (issue 22, item 5).

A two-node cluster (tests/patroni.py) at head with the demo seed; the example service under uvicorn reaches it
through a multi-host URL with target_session_attrs=read-write; the load of tests/test_service_load.py runs, and
the leader's PostgreSQL is killed with SIGKILL mid-run. The service retries keyed writes itself
(`langlearn.operations.retry`); the clients retry 503s and broken connections with the same Idempotency-Key.
Afterwards: every acknowledged lesson and purchase is in the new primary exactly once, `langlearn verify` is clean,
and the longest time without a successful write stays under the cluster's TTL plus 10 s.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest

from langlearn.operations import retry
from langlearn.urls import asyncpg_url
from tests import test_service_load as load
from tests.conftest import run_cli
from tests.patroni import TTL, PatroniCluster
from tests.test_service import start_service, stop, wait_until_up, written
from tests.test_startup import unused_port

pytestmark = [pytest.mark.rig, pytest.mark.slow]

USERS = 8
RUN_SECONDS = 14.0
KILL_AFTER_SECONDS = 4.0
WRITES = {"lesson", "purchase", "review", "activate", "follow", "unfollow"}
KEYED = {"lesson", "purchase"}  # the writes the service retries itself (langlearn.operations.retry)
OUTAGE_BOUND_SECONDS = TTL + 10  # the bound: the configured TTL plus 10 s


@pytest.fixture
def cluster():
    rig = PatroniCluster()
    try:
        rig.start()
        yield rig
    finally:
        rig.stop()


@pytest.fixture
def service_log(tmp_path):
    """The service's output: a run this long logs more than a pipe nobody reads can hold."""
    with open(tmp_path / "service.log", "w") as log:
        yield log


class TimedClient(load.Client):
    """The load test's client, noting when each write was acknowledged (the outage is the longest gap between them)."""

    acknowledged_at: list[float]

    async def send(self, operation: str, method: str, url: str, body: Any = None, key: str | None = None, *, retry: bool = True):
        response = await super().send(operation, method, url, body, key, retry=retry)
        if operation in WRITES and response is not None and 200 <= response.status_code < 300:
            self.acknowledged_at.append(time.monotonic())
        return response


async def kill_leader(cluster: PatroniCluster, killed: dict[str, Any]) -> None:
    await asyncio.sleep(KILL_AFTER_SECONDS)
    leader = cluster.leader()
    cluster.kill_postgres(leader)
    killed.update(at=time.monotonic(), node=leader)
    killed["new"] = await asyncio.to_thread(cluster.wait_for_new_leader, leader, OUTAGE_BOUND_SECONDS)
    killed["promoted_after"] = time.monotonic() - killed["at"]


def longest_gap(moments: list[float], start: float, end: float) -> float:
    points = sorted([start, *moments, end])
    return max(later - earlier for earlier, later in zip(points, points[1:]))


async def test_a_leader_killed_under_load_loses_and_doubles_no_acknowledged_write(cluster, service_log, monkeypatch):
    url = cluster.url()
    preparing_since = time.monotonic()
    upgraded = run_cli("langlearn", "upgrade", database=url)
    assert upgraded.returncode == 0, upgraded.stderr
    anchor = (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()
    seeded = run_cli("langlearn", "seed", "--anchor", anchor, "--no-progress", database=url)
    assert seeded.returncode == 0, seeded.stderr
    monkeypatch.setattr(load, "MAX_TRIES", 200)  # the run's deadline bounds the retries, not a count meant for a 2 s outage

    prepared = time.monotonic() - preparing_since
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    record, killed = load.Record(), {}
    acknowledged_at: list[float] = []
    process = start_service(url, port, log=service_log)
    try:
        wait_until_up(process, base)
        ready = time.monotonic()
        db = await asyncpg.connect(asyncpg_url(url))
        try:
            catalogue = await load.read_catalogue(db)
            limits = httpx.Limits(max_connections=2 * USERS, max_keepalive_connections=2 * USERS, keepalive_expiry=2)
            async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
                accounts = [*await asyncio.gather(*(load.sign_up(http, number) for number in range(USERS - len(load.DEMO_EMAILS)))),
                            *(load.Account(email, load.DEMO_PASSWORD) for email in load.DEMO_EMAILS)]
                tokens = await asyncio.gather(*(load.sign_in(http, account) for account in accounts))
                await asyncio.gather(*(load.teach(http, token, catalogue) for token in tokens[: USERS - len(load.DEMO_EMAILS)]))
                learners = [await load.as_learner(db, account, token) for account, token in zip(accounts, tokens, strict=True)]
                catalogue.others.extend(each.user_id for each in learners)
                clients = [TimedClient(http, each, record, random.Random(number)) for number, each in enumerate(learners)]
                for client in clients:
                    client.acknowledged_at = acknowledged_at
                started = time.monotonic()
                await asyncio.gather(kill_leader(cluster, killed), *(client.run(catalogue, started + RUN_SECONDS) for client in clients))
                ended = time.monotonic()
        finally:
            db.terminate()  # its server was killed: nothing to close politely
    finally:
        stop(process)
    output = written(service_log)

    outage = longest_gap(acknowledged_at, started, ended)
    statuses = Counter(exchange.status for exchange in record.exchanges)
    unavailable = Counter(exchange.operation for exchange in record.exchanges if exchange.status == 503)
    print(f"\nupgrade and seed {prepared:.1f} s, sign-ups and lessons taught {started - ready:.1f} s")
    print(f"failover: {killed['node'].name} killed {KILL_AFTER_SECONDS:g} s in, {killed['new'].name} leader "
          f"{killed['promoted_after']:.1f} s later; longest time without an acknowledged write {outage:.1f} s "
          f"(bound {OUTAGE_BOUND_SECONDS} s); {len(record.exchanges)} requests, {len(acknowledged_at)} writes acknowledged, "
          f"{record.retries} client retries, {record.unacknowledged} never acknowledged; statuses {dict(sorted(statuses.items(), key=str))}; "
          f"503s by operation {dict(unavailable)}; keyed writes retried by the service {output.count('again in')} times")

    assert killed.get("new") is not None and killed["new"] is not killed["node"], "no failover happened"
    assert not record.unexpected, "\n".join([*record.unexpected[:20], *load.unhandled(output)])
    assert not [status for status in statuses if status is not None and status >= 500 and status != 503], statuses
    assert "Exception in ASGI application" not in output, load.unhandled(output)
    assert record.unacknowledged == 0, "some writes were never acknowledged"
    assert [moment for moment in acknowledged_at if moment > killed["at"]], "no write was acknowledged after the failover"
    assert outage < OUTAGE_BOUND_SECONDS, f"writes stopped for {outage:.1f} s"
    if killed["promoted_after"] < retry.DEFAULT_RETRY_SECONDS - 2:  # a failover within the service's retry bound
        assert not {operation: count for operation, count in unavailable.items() if operation in KEYED}, \
            f"keyed writes answered 503 although the failover took {killed['promoted_after']:.1f} s: {unavailable}"

    db = await asyncpg.connect(asyncpg_url(url))  # the new primary, through the host list
    try:
        assert await db.fetchval("SELECT NOT pg_is_in_recovery()")
        attempts = await db.fetch("SELECT id::text, user_id::text, idempotency_key FROM lesson_attempts WHERE id = ANY($1::uuid[])",
                                  [a.attempt_id for a in record.lessons])
        assert sorted(tuple(row) for row in attempts) == sorted((a.attempt_id, a.user_id, a.key) for a in record.lessons), \
            "an acknowledged lesson attempt is missing or not the one its key wrote"
        per_key = await db.fetch("SELECT user_id::text, idempotency_key, count(*) AS n FROM lesson_attempts "
                                 "WHERE user_id = ANY($1::uuid[]) AND idempotency_key IS NOT NULL GROUP BY 1, 2",
                                 [learner.user_id for learner in learners])
        assert all(row["n"] == 1 for row in per_key), [dict(row) for row in per_key if row["n"] != 1]
        ledger = await db.fetch("SELECT user_id::text, idempotency_key, count(*) AS n FROM wallet_transactions "
                                "WHERE idempotency_key = ANY($1::text[]) GROUP BY 1, 2", [p.key for p in record.purchases])
        assert sorted(tuple(row) for row in ledger) == sorted((p.user_id, p.key, 1) for p in record.purchases), \
            "an acknowledged purchase is missing from the ledger or there twice"
    finally:
        await db.close()
    assert record.lessons and record.purchases
    verified = run_cli("langlearn", "verify", database=url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
