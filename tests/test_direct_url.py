"""Connections by role, without a pooler: `pool_mode` on the URL, DATABASE_DIRECT_URL / `direct_url=` for the schema
step and the deploy commands, and the pool's lock_timeout from the role when nothing may be sent per session.
(Through a real PgBouncer: tests/test_pgbouncer.py.)"""

from __future__ import annotations

import logging

import pytest

from langlearn.errors import ConfigError
from langlearn.settings import PoolOptions, check_pooled_lock_timeout, direct_database_url, tortoise_config
from langlearn.startup import database
from langlearn.urls import asyncpg_url, connect_args, libpq_url, validate_url
from tests.conftest import LANGLEARN, run_cli
from tests.test_aerich import aerich
from tests.test_startup import unused_port

POOLED = "postgres://app:s3cret@pooler.internal:6432/langlearn?pool_mode=transaction"


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


# --- the URL's pool_mode ------------------------------------------------------------------------------


def test_pool_mode_transaction_turns_off_asyncpgs_statement_cache_and_reaches_no_other_tool():
    assert connect_args(POOLED) == ("postgresql://app:s3cret@pooler.internal:6432/langlearn", {"statement_cache_size": 0})
    assert "pool_mode" not in libpq_url(POOLED) and "pool_mode" not in asyncpg_url(POOLED)
    assert "statement_cache_size" not in connect_args(POOLED.replace("transaction", "session"))[1]


def test_behind_a_transaction_pooler_the_pools_lock_timeout_is_not_sent_per_session():
    direct = tortoise_config(POOLED.replace("transaction", "session"), pool=PoolOptions())["connections"]["default"]["credentials"]
    pooled = tortoise_config(POOLED, pool=PoolOptions())["connections"]["default"]["credentials"]
    assert direct["server_settings"] == {"lock_timeout": "2000ms"}
    assert "server_settings" not in pooled and pooled["statement_cache_size"] == 0
    with pytest.raises(ConfigError, match=r"session settings \(lock_timeout\) cannot be sent through a transaction pooler"):
        tortoise_config(POOLED, server_settings={"lock_timeout": "1s"})


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("pool_mode=statement", "DATABASE_URL parameter 'pool_mode' must not be statement: statement pooling forbids transactions"),
        ("pool_mode=Transaction", "DATABASE_URL parameter 'pool_mode' must be one of session, transaction, not 'Transaction'"),
        ("pool_mode=transaction&statement_cache_size=100", "DATABASE_URL parameter 'statement_cache_size' must be 0 with pool_mode=transaction"),
        ("pool_mode=transaction&options=-c%20work_mem%3D64MB", "DATABASE_URL parameter 'options' cannot be sent through a transaction pooler"),
    ],
)
def test_a_pool_mode_that_cannot_work_is_refused_in_one_line_without_the_password(query, message):
    with pytest.raises(ConfigError) as refused:
        validate_url(f"postgres://app:s3cret@pooler:6432/langlearn?{query}")
    assert str(refused.value).startswith(message) and "s3cret" not in str(refused.value) and "\n" not in str(refused.value)


# --- DATABASE_DIRECT_URL ------------------------------------------------------------------------------


def test_the_direct_url_defaults_to_database_url_and_is_validated_under_its_own_name(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", POOLED)
    monkeypatch.delenv("DATABASE_DIRECT_URL", raising=False)
    assert direct_database_url() == POOLED
    monkeypatch.setenv("DATABASE_DIRECT_URL", "postgres://app:s3cret@db.internal/langlearn")
    assert direct_database_url() == "postgres://app:s3cret@db.internal:5432/langlearn"
    for raw, message in [
        ("  ", "DATABASE_DIRECT_URL is set but empty; unset it to migrate through DATABASE_URL"),
        ("mysql://app:s3cret@db/x", "DATABASE_DIRECT_URL scheme 'mysql' is not PostgreSQL"),
        ("postgres://app:s3cret@db/langlearn?pool_mode=sometimes", "DATABASE_DIRECT_URL parameter 'pool_mode' must be one of"),
    ]:
        monkeypatch.setenv("DATABASE_DIRECT_URL", raw)
        with pytest.raises(ConfigError) as refused:
            direct_database_url()
        assert str(refused.value).startswith(message) and "s3cret" not in str(refused.value)
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(ConfigError, match="DATABASE_DIRECT_URL is set but DATABASE_URL is not"):
        direct_database_url()


def nowhere(url: str) -> str:
    """`url` on a port nothing listens on: whatever connects to it fails."""
    return url.replace(f":{url.split('@')[-1].split(':')[1].split('/')[0]}/", f":{unused_port()}/", 1)


async def test_langlearn_upgrade_and_status_and_aerich_use_the_direct_url(empty_db, head_db, connect):
    unreachable = {"DATABASE_DIRECT_URL": empty_db}
    upgraded = run_cli(LANGLEARN, "upgrade", database=nowhere(empty_db), env=unreachable)
    assert upgraded.returncode == 0 and "(head)" in upgraded.stdout, upgraded.stderr
    status = run_cli(LANGLEARN, "status", database=nowhere(empty_db), env=unreachable)
    assert status.returncode == 0 and "at head" in status.stdout, status.stderr
    before = await (await connect(head_db)).fetchval("SELECT count(*) FROM aerich")
    heads = aerich("heads", database=nowhere(head_db), env={"DATABASE_DIRECT_URL": head_db})
    assert heads.returncode == 0, heads.stderr
    assert await (await connect(head_db)).fetchval("SELECT count(*) FROM aerich") == before


async def test_the_startup_migrates_the_direct_url_and_pools_on_the_url(empty_db, head_db, connect):
    from tortoise import connections

    async with database(head_db, direct_url=empty_db, migrate="apply", global_fallback=False) as startup:
        assert startup.applied
        _, rows = await connections.get("default").execute_query("SELECT current_database() AS name")
    assert rows[0]["name"] == head_db.rsplit("/", 1)[1]
    assert await (await connect(empty_db)).fetchval("SELECT count(*) FROM aerich") == len(startup.applied)


async def test_a_migrator_whose_url_says_transaction_pooler_stops_before_the_lock(empty_db, connect):
    refused = run_cli(LANGLEARN, "upgrade", database=with_query(empty_db, "pool_mode=transaction"))
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: migrations cannot run through a transaction pooler (its URL says pool_mode=transaction)")
    assert "DATABASE_DIRECT_URL" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert await (await connect(empty_db)).fetchval("SELECT to_regclass('aerich')") is None


# --- the pool's lock_timeout from the role --------------------------------------------------------------


async def test_the_pools_lock_timeout_must_come_from_the_role_behind_a_transaction_pooler(head_db, connect, caplog):
    pooled = with_query(head_db, "pool_mode=transaction")  # the server itself, used as a transaction pooler would be
    with pytest.raises(ConfigError) as refused:
        await check_pooled_lock_timeout(pooled, PoolOptions(lock_timeout=2))
    assert "the server's is 0 (no limit)" in str(refused.value) and "SET lock_timeout = '2000ms'" in str(refused.value)
    name = head_db.rsplit("/", 1)[1]
    await (await connect(head_db)).execute(f"ALTER ROLE CURRENT_USER IN DATABASE \"{name}\" SET lock_timeout = '2s'")
    await check_pooled_lock_timeout(pooled, PoolOptions(lock_timeout=2))
    with pytest.raises(ConfigError, match="the server's is 2000 ms"):
        await check_pooled_lock_timeout(pooled, PoolOptions(lock_timeout=1))
    with caplog.at_level(logging.WARNING, logger="langlearn.settings"):
        await check_pooled_lock_timeout(pooled, PoolOptions(lock_timeout=0))  # a bound where none was asked: said, not refused
    assert "at most the server's lock_timeout of 2000 ms" in caplog.text
    await check_pooled_lock_timeout(head_db, PoolOptions(lock_timeout=1))  # no pooler: the session's own setting, nothing read
