"""The application's pool that `langlearn.database()` opens: its size and its sessions' lock_timeout."""

from __future__ import annotations

import asyncio

import pytest
from tortoise import connections

from langlearn.errors import ConfigError
from langlearn.startup import database


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
