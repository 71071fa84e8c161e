"""Connections by role without a standby running: DATABASE_REPLICA_URL's spelling and refusals, and that a
database without standbys is exactly today's (one connection, no router, no LSN read after a write)."""

from __future__ import annotations

from uuid import uuid4

import pytest
from tortoise.router import router

from langlearn.errors import ConfigError
from langlearn.operations import accounts, wallet
from langlearn.routing import check_token, read_after, standbys
from langlearn.settings import replica_urls, tortoise_config
from langlearn.startup import database


def test_several_standbys_are_separated_by_spaces_and_each_gets_a_connection(monkeypatch):
    monkeypatch.setenv("DATABASE_REPLICA_URL", " postgres://ro:s3cret@s1/db  postgresql://ro:s3cret@s2:5433,s3/db?target_session_attrs=standby ")
    urls = replica_urls()
    assert urls == ("postgres://ro:s3cret@s1:5432/db", "postgres://ro:s3cret@s2:5433,s3:5432/db?target_session_attrs=standby")
    assert replica_urls(["postgres://ro@s9/db"]) == ("postgres://ro@s9:5432/db",)  # the argument wins
    config = tortoise_config("postgres://app@p/db", replicas=urls)
    assert list(config["connections"]) == ["default", "replica1", "replica2"]
    assert config["connections"]["replica2"]["credentials"]["target_session_attrs"] == "standby"
    monkeypatch.delenv("DATABASE_REPLICA_URL")
    assert replica_urls() == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("  ", "DATABASE_REPLICA_URL is set but empty; unset it to read from the primary only, or set it to one standby's URL"),
        ("postgres://ro:s3cret@s1/db mysql://ro:s3cret@s2/db", "DATABASE_REPLICA_URL scheme 'mysql' is not PostgreSQL; expected "),
        ("postgres://ro:s3cret@s1,,s2/db", "DATABASE_REPLICA_URL 'postgres://ro:***@s1,,s2/db' is malformed (a host of its host list is empty)"),
        ("postgres://ro:s3cret@s1/db?sslmode=nope", "DATABASE_REPLICA_URL parameter 'sslmode' must be one of"),
    ],
)
def test_a_bad_replica_url_is_refused_in_one_line_naming_its_variable(monkeypatch, value, message):
    monkeypatch.setenv("DATABASE_REPLICA_URL", value)
    with pytest.raises(ConfigError) as refused:
        replica_urls()
    assert str(refused.value).startswith(message) and "s3cret" not in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("token", ["", "16/B374D848; DROP TABLE users", "1/2/3", "G/1", "123456789/1"])
def test_a_token_that_is_not_a_wal_position_is_refused(token):
    with pytest.raises(ValueError, match="a read token is a WAL position like 16/B374D848"):
        check_token(token)


async def test_without_a_standby_nothing_changes(head_db, monkeypatch):
    """One connection, no router, writes return no token (so no LSN was read), a token read sends nothing."""
    monkeypatch.delenv("DATABASE_REPLICA_URL", raising=False)
    async with database(head_db, migrate="off", global_fallback=False) as startup:
        assert startup.context is not None
        assert list(startup.context.connections.db_config) == ["default"]
        assert standbys() == [] and not router._routers
        registered = await accounts.register(f"n{uuid4().hex[:10]}@example.com", f"n{uuid4().hex[:10]}", "correct horse battery staple 42")
        earned = await wallet.earn(registered.user_id, 5, "test", "k1")
        assert (registered.lsn, earned.lsn) == (None, None)
        async with read_after("0/1") as choice:
            assert choice.connection is None and choice.waited == 0
