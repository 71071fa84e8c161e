"""Keyed writes retried on what a failover raises (langlearn.operations.retry), on a real PostgreSQL through a real
TCP proxy that loses the answer to a COMMIT the server carried out: the case only an idempotency key can make safe.

The Patroni failover itself, under the service's load, is tests/test_patroni_failover.py.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import asyncpg
import pytest

from langlearn.operations import lessons, retry, wallet
from langlearn.operations.errors import Unavailable, database_refusal, failover_error
from langlearn.startup import database
from tests.test_lessons import first_lesson, new_learner, right_answers, times
from tests.test_service import start_service
from tests.test_startup import unused_port
from tests.test_wallet_operations import assert_consistent, new_item, new_user

COMMIT = b"COMMIT;\x00"  # the simple-protocol query asyncpg's Transaction (so Tortoise's in_transaction) ends with


class CommitCutter:
    """A loopback proxy in front of the test database. Armed with `cut_commits = n`, it forwards the next n COMMITs
    and, once the server has answered each (so the transaction is durable), drops the answer and cuts the client's
    connection: what a client sees when the primary dies right after a commit, ConnectionDoesNotExistError.
    `refuse()` closes the listener and every connection: no server at the address (a failover under way)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._parts = parts
        self.cut_commits = 0
        self.cut = 0  # answers dropped so far
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        credentials = self._parts.netloc.rsplit("@", 1)[0]
        return self._parts._replace(netloc=f"{credentials}@127.0.0.1:{port}").geturl()

    async def refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        commit_sent = asyncio.Event()

        async def to_server() -> None:
            while data := await client_reader.read(65536):
                if self.cut_commits and COMMIT in data:
                    self.cut_commits -= 1
                    commit_sent.set()  # before the write: the answer cannot overtake the flag
                upstream_writer.write(data)
                await upstream_writer.drain()

        async def to_client() -> None:
            while data := await upstream_reader.read(65536):
                if commit_sent.is_set():  # the server's answer to the COMMIT: it committed; the client never hears it
                    self.cut += 1
                    return
                client_writer.write(data)
                await client_writer.drain()

        pipes = {asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())}
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            client_writer.transport.abort()
            upstream_writer.transport.abort()
            self._handlers.discard(handler)


@pytest.fixture
async def cutter(head_db):
    proxy = CommitCutter(head_db)
    yield proxy
    await proxy.refuse()


async def test_a_purchase_whose_commit_answer_is_lost_is_retried_and_applied_once(head_db, connect, cutter):
    connection = await connect(head_db)
    user = await new_user(connection, "cut", gems=100)
    item = await new_item(connection, "cut hint", 30, stock=5)
    async with database(await cutter.start(), migrate="check", global_fallback=False):
        cutter.cut_commits = 1
        bought = await wallet.purchase(user, item, 1, "cut-purchase")
    assert cutter.cut == 1, "the proxy cut no COMMIT's answer: the test proved nothing"
    assert bought.replayed and bought.gems == 70 and bought.quantity_owned == 1  # the first try's result, found by its key
    assert await connection.fetchval("SELECT count(*) FROM wallet_transactions WHERE idempotency_key = 'cut-purchase'") == 1
    assert await connection.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", user) == 70
    assert await connection.fetchval("SELECT stock_quantity FROM shop_items WHERE id = $1", item) == 4
    await assert_consistent(connection)


async def test_earn_and_spend_whose_commit_answers_are_lost_apply_once(head_db, connect, cutter):
    connection = await connect(head_db)
    user = await new_user(connection, "cut-earner", gems=10)
    async with database(await cutter.start(), migrate="check", global_fallback=False):
        cutter.cut_commits = 1
        earned = await wallet.earn(user, 25, "quest", "cut-earn")
        cutter.cut_commits = 1
        spent = await wallet.spend(user, 5, "shop", "cut-spend")
    assert cutter.cut == 2
    assert (earned.replayed, earned.gems, spent.replayed, spent.gems) == (True, 35, True, 30)
    assert await connection.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", user) == 30
    await assert_consistent(connection)


@pytest.mark.slow
async def test_a_lesson_completion_whose_commit_answer_is_lost_records_one_attempt(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_learner(connection, "cut-learner")
    lesson = await first_lesson(connection)
    started, finished = times()
    proxy = CommitCutter(seeded_db)
    try:
        async with database(await proxy.start(), migrate="check", global_fallback=False):
            proxy.cut_commits = 1
            done = await lessons.complete_lesson(user, lesson["id"], right_answers(lesson), started, finished, "cut-lesson")
    finally:
        await proxy.refuse()
    assert proxy.cut == 1
    assert done.replayed and done.passed
    assert await connection.fetchval("SELECT count(*) FROM lesson_attempts WHERE user_id = $1", user) == 1
    assert await connection.fetchval("SELECT total_xp FROM users WHERE id = $1", user) == done.total_xp


async def test_a_write_without_a_key_is_not_retried(head_db, connect, cutter):
    """activate uses one more boost per call: after a lost COMMIT answer the caller hears of the failure, no second use."""
    connection = await connect(head_db)
    user = await new_user(connection, "cut-booster", gems=100)
    boost = await new_item(connection, "cut boost", 10, item_type="double_xp", effects='{"duration_minutes": 15}')
    async with database(await cutter.start(), migrate="check", global_fallback=False):
        await wallet.purchase(user, boost, 2, "two-boosts")
        cutter.cut_commits = 1
        with pytest.raises(Exception) as raised:
            await wallet.activate(user, boost)
    assert failover_error(raised.value) and isinstance(database_refusal(raised.value), Unavailable)  # a 503 to the client
    assert await connection.fetchval("SELECT quantity FROM user_inventory WHERE user_id = $1", user) == 1  # used once, not twice


async def test_the_retry_stops_at_its_bound_with_unavailable(head_db, connect, cutter, monkeypatch):
    connection = await connect(head_db)
    user = await new_user(connection, "refused", gems=100)
    monkeypatch.setenv(retry.RETRY_SECONDS_VARIABLE, "1.5")
    async with database(await cutter.start(), migrate="check", global_fallback=False):
        await cutter.refuse()  # no server at the address: every try is refused
        started = time.monotonic()
        with pytest.raises(Unavailable) as raised:
            await wallet.earn(user, 5, "quest", "never-lands")
        waited = time.monotonic() - started
    assert 1.5 <= waited < 3, waited
    assert raised.value.retry_after and "password" not in raised.value.detail
    assert failover_error(raised.value.__cause__ or raised.value)
    assert await connection.fetchval("SELECT count(*) FROM wallet_transactions WHERE idempotency_key = 'never-lands'") == 0


async def test_a_write_on_a_read_only_server_is_a_failover_error_and_a_503(head_db, connect, monkeypatch):
    """A standby (here: a database whose sessions are read-only) refuses writes with 25006: retried, then 503, never a 500."""
    connection = await connect(head_db)
    user = await new_user(connection, "read-only", gems=100)
    await connection.execute(f'ALTER DATABASE "{urlsplit(head_db).path[1:]}" SET default_transaction_read_only = on')
    monkeypatch.setenv(retry.RETRY_SECONDS_VARIABLE, "0.5")
    async with database(head_db, migrate="check", global_fallback=False):
        with pytest.raises(Unavailable) as raised:
            await wallet.earn(user, 5, "quest", "on-a-standby")
    assert isinstance(raised.value.__cause__, Exception) and failover_error(raised.value.__cause__)
    assert any(isinstance(each, asyncpg.ReadOnlySQLTransactionError) for each in _chain(raised.value))
    assert isinstance(database_refusal(raised.value.__cause__), Unavailable)


def _chain(error: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    while error is not None and error not in found:
        found.append(error)
        error = error.__cause__ or error.__context__
    return found


@pytest.mark.parametrize(("value", "named"), [
    ("soon", "LANGLEARN_WRITE_RETRY_SECONDS='soon' is not a number of seconds of at least 0"),
    ("-1", "LANGLEARN_WRITE_RETRY_SECONDS='-1' is not a number of seconds of at least 0"),
])
def test_a_bad_retry_bound_stops_the_service_at_start_with_one_line(head_db, value, named):
    process = start_service(head_db, unused_port(), env={retry.RETRY_SECONDS_VARIABLE: value})
    try:
        _, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:  # it started serving: the bad value went unnoticed
            process.kill()
            process.communicate()
    assert process.returncode == 1
    assert errors.strip().splitlines() == [errors.strip()] and named in errors and "Traceback" not in errors, errors
