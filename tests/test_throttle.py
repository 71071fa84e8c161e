"""Sign-in throttling (langlearn.operations.throttle) and the bounded hashing pool, against PostgreSQL with real connections."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from langlearn.operations import accounts, throttle
from langlearn.operations.accounts import register, sign_in
from langlearn.operations.errors import Busy, InvalidCredentials, SignInThrottled
from langlearn.operations.throttle import Throttling
from langlearn.startup import database

PASSWORD = "correct horse battery"
STRICT = Throttling(account_free=3, address_free=4)


async def attempt(email: str, password: str, *, ip: str | None = None, throttling: Throttling = STRICT) -> str:
    """The outcome's name: `signed_in`, or the refusal's code."""
    try:
        await sign_in(email, password, "phone-1", "ios", ip=ip, throttling=throttling)
    except (InvalidCredentials, SignInThrottled) as refused:
        return refused.code
    return "signed_in"


async def test_an_account_gets_its_free_attempts_then_waits_even_with_the_right_password(head_db):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        outcomes = [await attempt("ana@example.com", "wrong guess") for _ in range(STRICT.account_free)]
        with pytest.raises(SignInThrottled) as throttled:
            await sign_in("ANA@example.com ", PASSWORD, "phone-1", "ios", throttling=STRICT)  # the same account, however spelled
    assert outcomes == ["invalid_credentials"] * STRICT.account_free
    assert throttled.value.code == "throttled" and 1 <= throttled.value.retry_after <= STRICT.first_wait.total_seconds()
    assert PASSWORD not in str(throttled.value) and "ana" not in str(throttled.value)


async def test_an_unknown_email_is_throttled_alike_so_a_429_reveals_no_account(head_db):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        known = [await attempt("ana@example.com", "wrong guess") for _ in range(STRICT.account_free + 1)]
        unknown = [await attempt("nobody@example.com", "wrong guess") for _ in range(STRICT.account_free + 1)]
    assert known == unknown == ["invalid_credentials"] * STRICT.account_free + ["throttled"]


async def test_the_wait_doubles_with_each_attempt_past_the_free_ones_up_to_the_longest(head_db, connect):
    async with database(head_db, migrate="off"):
        keys = throttle.keys_for("ana@example.com", None)
        connection = await connect(head_db)
        waits = []
        for _ in range(STRICT.account_free + 12):
            await connection.execute("UPDATE sign_in_throttles SET blocked_until = NULL")  # as if each wait had passed
            await throttle.admit(keys, STRICT)
            waits.append(await connection.fetchval("SELECT extract(epoch FROM blocked_until - last_attempt_at) FROM sign_in_throttles"))
    first = STRICT.first_wait.total_seconds()
    expected = [None] * (STRICT.account_free - 1) + [min(first * 2**n, STRICT.longest_wait.total_seconds()) for n in range(13)]
    assert [round(wait) if wait is not None else None for wait in waits] == expected


async def test_a_successful_sign_in_resets_the_account_but_not_the_address(head_db, connect):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        for _ in range(STRICT.account_free - 1):
            assert await attempt("ana@example.com", "wrong guess", ip="203.0.113.5") == "invalid_credentials"
        assert await attempt("ana@example.com", PASSWORD, ip="203.0.113.5") == "signed_in"
        rows = {row["key"].split(":")[0]: row["attempts"] for row in await (await connect(head_db)).fetch("SELECT key, attempts FROM sign_in_throttles")}
        assert rows == {"address": STRICT.account_free - 1}  # the account's row is gone, the address keeps its failures
        assert [await attempt("ana@example.com", "wrong guess", ip="203.0.113.6") for _ in range(STRICT.account_free - 1)] == [
            "invalid_credentials"] * (STRICT.account_free - 1)  # a fresh count for the account


async def test_one_address_spraying_many_accounts_is_throttled_and_other_addresses_are_not(head_db):
    async with database(head_db, migrate="off"):
        sprayed = [await attempt(f"user{n}@example.com", "wrong guess", ip="203.0.113.9") for n in range(STRICT.address_free + 1)]
        elsewhere = await attempt("user0@example.com", "wrong guess", ip="198.51.100.1")
        same_subscriber = await attempt("someone@example.com", "wrong guess", ip="2001:db8:1:2::1")
        for n in range(STRICT.address_free - 1):
            await attempt(f"v6-{n}@example.com", "wrong guess", ip=f"2001:db8:1:2::{n + 2:x}")
        next_in_the_64 = await attempt("other@example.com", "wrong guess", ip="2001:db8:1:2:ffff::1")
    assert sprayed == ["invalid_credentials"] * STRICT.address_free + ["throttled"]
    assert elsewhere == same_subscriber == "invalid_credentials"
    assert next_in_the_64 == "throttled"  # an IPv6 client is counted by its /64


async def test_concurrent_guesses_cannot_slip_past_the_limit(head_db):
    """12 guesses at once on separate connections: the counting statement serialises them on the row lock."""
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        outcomes = await asyncio.gather(*(attempt("ana@example.com", "wrong guess") for _ in range(12)))
    assert sorted(outcomes) == ["invalid_credentials"] * STRICT.account_free + ["throttled"] * (12 - STRICT.account_free)


async def test_idle_rows_are_pruned_and_recent_ones_kept(head_db, connect):
    connection = await connect(head_db)
    await connection.execute("""
        INSERT INTO sign_in_throttles (key, attempts, last_attempt_at)
        SELECT 'address:10.0.' || n / 256 || '.' || n % 256, 1, now() - interval '2 hours' FROM generate_series(1, 1500) n
    """)
    await connection.execute("INSERT INTO sign_in_throttles (key, attempts, last_attempt_at) VALUES ('address:192.0.2.1', 3, now() - interval '5 minutes')")
    async with database(head_db, migrate="off"):
        assert await throttle.prune(timedelta(hours=1)) == throttle.PRUNE_BATCH  # one bounded batch per call
        assert await throttle.prune(timedelta(hours=1)) == 500
        assert await throttle.prune(timedelta(hours=1)) == 0
    assert await connection.fetchval("SELECT key FROM sign_in_throttles") == "address:192.0.2.1"


def test_a_throttling_whose_waits_outlast_its_memory_is_refused():
    with pytest.raises(ValueError, match="forget_after"):
        Throttling(longest_wait=timedelta(hours=2))


async def test_the_hashing_pool_runs_its_slots_queues_a_few_and_refuses_the_rest_at_once():
    pool = accounts.HashingPool(slots=1, queue=1)
    release = threading.Event()
    running = asyncio.ensure_future(pool.run(release.wait))
    waiting = asyncio.ensure_future(pool.run(lambda: "queued"))
    await asyncio.sleep(0.05)
    with pytest.raises(Busy) as busy:
        await pool.run(lambda: "refused")
    assert busy.value.code == "busy" and busy.value.retry_after >= 1
    release.set()
    assert await running is True and await waiting == "queued"
    assert await pool.run(lambda: "admitted again") == "admitted again"


async def test_a_cancelled_caller_keeps_its_slot_counted_until_the_hash_ends():
    pool = accounts.HashingPool(slots=1, queue=0)
    release = threading.Event()
    caller = asyncio.ensure_future(pool.run(release.wait))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(Busy):  # the job still runs: no second hash may start beside it
        await pool.run(lambda: None)
    release.set()
    await asyncio.sleep(0.05)
    assert await pool.run(lambda: "free") == "free"


async def test_a_sign_in_the_pool_refuses_is_not_counted_against_the_account(head_db, connect, monkeypatch):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        full = accounts.HashingPool(slots=1, queue=0)
        release = threading.Event()
        holder = asyncio.ensure_future(full.run(release.wait))
        monkeypatch.setattr(accounts, "HASHING", full)
        try:
            for _ in range(STRICT.account_free + 2):
                with pytest.raises(Busy):
                    await sign_in("ana@example.com", PASSWORD, "phone-1", "ios", ip="203.0.113.5", throttling=STRICT)
        finally:
            release.set()
            await holder
        assert await (await connect(head_db)).fetchval("SELECT max(attempts) FROM sign_in_throttles") == 0
        assert await attempt("ana@example.com", PASSWORD, ip="203.0.113.5") == "signed_in"


async def test_a_job_that_waited_past_the_pools_bound_is_busy_and_never_runs():
    pool = accounts.HashingPool(slots=1, queue=4, max_wait=timedelta(milliseconds=100))
    release, ran = threading.Event(), []
    holder = asyncio.ensure_future(pool.run(release.wait))
    queued = asyncio.ensure_future(pool.run(lambda: ran.append("ran")))
    await asyncio.sleep(0.3)
    release.set()
    with pytest.raises(Busy):
        await queued
    assert await holder is True and ran == []
