"""The application's pool that `langlearn.database()` opens: its size, its sessions' lock_timeout (and the weekly
close's pool without it), and its connections given back when a transaction cannot even begin (a session the server
ended while it sat in the pool)."""

from __future__ import annotations

import asyncio
import threading

import asyncpg
import pytest
from tortoise import connections
from tortoise.transactions import in_transaction

from langlearn.errors import ConfigError
from langlearn.operations.errors import Unavailable, database_refusal
from langlearn.startup import database
from langlearn.urls import asyncpg_url
from tests.conftest import run_cli
from tests.test_leagues import WEEK, assert_closed, build_week


async def pooled_backends(concurrent: int) -> set[int]:
    """The backends `concurrent` overlapping queries of the pool ran on."""
    client = connections.get("default")
    rows = await asyncio.gather(*(client.execute_query_dict("SELECT pg_backend_pid() AS pid, pg_sleep(0.2)") for _ in range(concurrent)))
    return {row[0]["pid"] for row in rows}


async def session_setting(name: str) -> str:
    return (await connections.get("default").execute_query_dict(f"SHOW {name}"))[0][name]


async def test_the_pool_holds_pool_size_connections_each_with_the_lock_timeout(head_db):
    async with database(head_db, migrate="off", pool_size=3) as startup:
        assert len(await pooled_backends(8)) == 3
        assert await session_setting("lock_timeout") == "2s"
        assert startup.pool is not None and (startup.pool.size, startup.pool.lock_timeout) == (3, 2.0)
    async with database(head_db, migrate="off", pool_lock_timeout=0):
        assert await session_setting("lock_timeout") == "0"
        assert len(await pooled_backends(8)) == 5  # Tortoise's default size


async def test_the_environment_sets_the_pool_and_a_bad_value_is_one_line(head_db, monkeypatch):
    monkeypatch.setenv("LANGLEARN_POOL_SIZE", "2")
    monkeypatch.setenv("LANGLEARN_POOL_LOCK_TIMEOUT", "0.5")
    async with database(head_db, migrate="off"):
        assert len(await pooled_backends(6)) == 2
        assert await session_setting("lock_timeout") == "500ms"
    async with database(head_db, migrate="off", pool_size=4, pool_lock_timeout=1):  # the arguments win
        assert len(await pooled_backends(6)) == 4
        assert await session_setting("lock_timeout") == "1s"
    for variable, value in (("LANGLEARN_POOL_SIZE", "0"), ("LANGLEARN_POOL_SIZE", "five"), ("LANGLEARN_POOL_LOCK_TIMEOUT", "-1"),
                            ("LANGLEARN_POOL_LOCK_TIMEOUT", "nan")):
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError) as refused:
            async with database(head_db, migrate="off"):
                pass
        assert str(refused.value).startswith(f"{variable}={value!r} is not") and "\n" not in str(refused.value)
        monkeypatch.delenv(variable)


def terminate_without_yielding(url: str, pid: int) -> None:
    """End a backend from another thread while this event loop is blocked, so the pool has not read the server's
    goodbye when the next transaction takes the connection (as when it arrives mid-acquire under load)."""

    async def terminate() -> None:
        admin = await asyncpg.connect(asyncpg_url(url))
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()

    thread = threading.Thread(target=asyncio.run, args=(terminate(),))
    thread.start()
    thread.join()


async def backend_in_a_transaction() -> int:
    async with in_transaction() as connection:
        return int((await connection.execute_query_dict("SELECT pg_backend_pid() AS pid"))[0]["pid"])


async def test_a_transaction_that_cannot_begin_gives_its_connection_back(head_db):
    """Tortoise 1.1 sends BEGIN after taking the connection and binding the task to the transaction, outside its
    try/finally: a failed BEGIN kept the connection checked out and the task bound to the dead transaction
    (langlearn.compat.release_connection_when_begin_fails). Sessions terminated under load left services hanging."""
    async with database(head_db, migrate="off", pool_size=1):
        for _ in range(3):  # the one connection, lost and recovered again and again
            pid = await backend_in_a_transaction()
            terminate_without_yielding(head_db, pid)
            with pytest.raises(Exception) as failed:
                await backend_in_a_transaction()
            assert isinstance(database_refusal(failed.value), Unavailable), repr(failed.value)
            assert await asyncio.wait_for(backend_in_a_transaction(), timeout=5) != pid  # back in the pool, reconnected


async def test_the_weekly_close_waits_for_a_wallet_a_request_holds(head_db, connect):
    """`langlearn leagues close-week` is a batch job: it opens its pool without the lock timeout, so a user's
    request holding a wallet it pays delays the close instead of failing it (with the requests' 2 s it failed)."""
    connection, holder = await connect(head_db), await connect(head_db)
    users = await build_week(connection)
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute("SELECT 1 FROM user_wallets WHERE user_id = $1 FOR UPDATE", users["b_high"])
    closing = asyncio.create_task(asyncio.to_thread(run_cli, "langlearn", "leagues", "close-week", "--week", WEEK.isoformat(),
                                                    database=head_db))
    await asyncio.sleep(3)  # longer than the requests' lock timeout
    assert not closing.done()  # still waiting for the wallet
    await transaction.rollback()
    closed = await closing
    assert closed.returncode == 0, closed.stderr
    assert closed.stdout.startswith(f"week {WEEK} closed:"), closed.stdout
    await assert_closed(connection, users)
