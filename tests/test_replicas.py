"""Routing against a real primary and streaming hot standby (`replica_pair`): where each query goes, stale
reads and read-your-writes tokens, and every write operation with a standby configured."""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import urlsplit
from uuid import uuid4

import asyncpg
import pytest
from tortoise.expressions import RawSQL
from tortoise.transactions import in_transaction

from langlearn.databases import with_database
from langlearn.models.users import User
from langlearn.operations import accounts, leagues, ledger, lessons, reviews, social, wallet
from langlearn.routing import PRIMARY, read_after, reader
from langlearn.startup import database
from tests.test_lessons import first_lesson, right_answers, times

pytestmark = [pytest.mark.rig, pytest.mark.slow, pytest.mark.clock]

RIG_DATABASE = "langlearn"
TOKEN = re.compile(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}")
IN_RECOVERY = "SELECT pg_is_in_recovery() AS standby"


@pytest.fixture(scope="module")
async def rig(replica_pair, server, seeded_template):
    """The pair's primary holding a copy of the seeded template (pg_dump | pg_restore), replayed by the standby."""
    dump = replica_pair.root / "seeded.dump"
    from langlearn.urls import libpq_url

    replica_pair.run("pg_dump", "-Fc", "--no-owner", "-f", str(dump), "-d", libpq_url(with_database(server.url, seeded_template)))
    replica_pair.run("createdb", "-h", "127.0.0.1", "-p", str(replica_pair.primary_port), "-U", "postgres", RIG_DATABASE)
    replica_pair.run("pg_restore", "--no-owner", "-d", libpq_url(replica_pair.primary_url(RIG_DATABASE)), str(dump))
    await replica_pair.caught_up()
    yield replica_pair
    await replica_pair.set_apply_delay(0)


def routed(pair):
    return database(pair.primary_url(RIG_DATABASE), replica_url=pair.standby_url(RIG_DATABASE), migrate="check", global_fallback=False)


async def _standby_answered(query) -> bool:
    """Whether the server that ran an ORM query is a standby (the query carries `pg_is_in_recovery()`)."""
    rows = await query.annotate(standby=RawSQL("pg_is_in_recovery()")).limit(1)
    return bool(rows[0].standby)


async def test_reads_outside_transactions_reach_the_standby_and_the_rest_the_primary(rig):
    async with routed(rig):
        assert await _standby_answered(User.all())
        assert (await reader().execute_query_dict(IN_RECOVERY))[0]["standby"] is True
        assert not await _standby_answered(User.all().select_for_update())  # a locking read: the primary
        async with in_transaction(PRIMARY):
            assert not await _standby_answered(User.all())
            assert not await _standby_answered(User.all().select_for_update())
            assert (await reader().execute_query_dict(IN_RECOVERY))[0]["standby"] is False
        user = await User.all().first()
        await User.filter(id=user.id).update(display_name="routed")  # an ORM write: the standby would refuse it (read-only)
        async with in_transaction(PRIMARY):
            # a read inside a transaction sees the transaction's own write
            await User.filter(id=user.id).update(display_name="in transaction")
            assert (await User.get(id=user.id)).display_name == "in transaction"


async def test_a_naive_read_after_a_write_is_stale_and_a_token_read_is_fresh(rig):
    user = (await accounts_register(rig)).user_id
    await rig.set_apply_delay(0.6)  # every commit reaches the standby's data 0.6 s late
    async with routed(rig):
        before = (await ledger.wallet_statement(user)).gems
        earned = await wallet.earn(user, 7, "test", "stale-1")
        assert TOKEN.fullmatch(earned.lsn or "")
        assert (await ledger.wallet_statement(user)).gems == before  # the standby has not replayed it yet
        async with read_after(earned.lsn) as choice:  # the default bound (50 ms) passes: the primary answers
            assert (await ledger.wallet_statement(user)).gems == before + 7
            assert (await reader().execute_query_dict(IN_RECOVERY))[0]["standby"] is False
        assert choice.fell_back and choice.connection == PRIMARY and 0.04 <= choice.waited < 0.5
        started = time.monotonic()
        async with read_after(earned.lsn, wait=0.2) as bounded:
            pass
        assert bounded.fell_back and 0.19 <= bounded.waited and time.monotonic() - started < 0.5
    await rig.set_apply_delay(0)
    await rig.caught_up()
    async with routed(rig):
        again = await wallet.earn(user, 5, "test", "stale-2")
        async with read_after(again.lsn, wait=2) as caught_up:  # no delay: the standby replays it within the bound
            assert (await ledger.wallet_statement(user)).gems == before + 12
            assert (await reader().execute_query_dict(IN_RECOVERY))[0]["standby"] is True
        assert caught_up.connection == "replica1" and not caught_up.fell_back


async def accounts_register(pair) -> accounts.RegisteredUser:
    async with routed(pair):
        return await accounts.register(f"r{uuid4().hex[:12]}@example.com", f"r{uuid4().hex[:12]}", "correct horse battery staple 42")


async def test_every_write_operation_works_with_a_standby_and_returns_a_token(rig):
    """A focused write-path suite on the pair: each operation names its transaction's connection (Tortoise refuses an
    unnamed one beside a second connection) and returns a token after which a read sees its write."""
    primary = await asyncpg.connect(rig.primary_url(RIG_DATABASE))
    try:
        lesson = await first_lesson(primary)
        word = await primary.fetchval("SELECT id FROM vocabulary_items WHERE lesson_id = $1 ORDER BY id LIMIT 1", lesson["id"])
        item = await primary.fetchval("SELECT id FROM shop_items WHERE is_available AND item_type = 'double_xp' ORDER BY price_gems LIMIT 1")
        other = await primary.fetchval("SELECT id FROM users ORDER BY created_at LIMIT 1")
    finally:
        await primary.close()
    password = "correct horse battery staple 42"
    email, username = f"w{uuid4().hex[:12]}@example.com", f"w{uuid4().hex[:12]}"
    started, finished = times()
    async with routed(rig):
        results = {"register": await accounts.register(email, username, password)}
        user = results["register"].user_id
        results["sign_in"] = session = await accounts.sign_in(email, password, "device-1", "ios")
        results["refresh"] = session = await accounts.refresh(session.refresh_token)
        results["earn"] = await wallet.earn(user, 1000, "test", "earn-1")
        results["spend"] = await wallet.spend(user, 10, "test", "spend-1")
        results["purchase"] = await wallet.purchase(user, item, 1, "buy-1")
        results["activate"] = await wallet.activate(user, item)
        results["complete_lesson"] = await lessons.complete_lesson(user, lesson["id"], right_answers(lesson), started, finished, "lesson-1")
        results["review_word"] = await reviews.review_word(user, word, 5)
        results["follow"] = await social.follow(user, other)
        results["unfollow"] = await social.unfollow(user, other)
        results["close_week"] = await leagues.close_week(leagues.last_ended_week())
        results["logout"] = await accounts.logout(session.refresh_token)
        assert {name: result.lsn for name, result in results.items() if not TOKEN.fullmatch(result.lsn or "")} == {}
        async with read_after(results["logout"].lsn, wait=2) as choice:
            statement = await ledger.wallet_statement(user)
    primary = await asyncpg.connect(rig.primary_url(RIG_DATABASE))
    try:
        assert choice.connection == "replica1" and statement.gems == await primary.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", user)
    finally:
        await primary.close()


async def test_the_service_carries_each_clients_token_and_pins_a_client_that_does_not_echo_it(rig):
    """Over HTTP, a real uvicorn on the pair: a write's response carries X-Read-Token; a read echoing it is fresh while
    the standby lags 3 s; a read without it is fresh while the account is pinned, stale after; a bad token is 400."""
    from tests.test_service import serving
    from tests.test_service_api import PASSWORD

    primary = await asyncpg.connect(rig.primary_url(RIG_DATABASE))
    try:
        item = await primary.fetchval("SELECT id FROM shop_items WHERE is_available AND price_gems <= 50 AND stock_quantity IS NULL ORDER BY price_gems LIMIT 1")
    finally:
        await primary.close()
    environment = {"DATABASE_REPLICA_URL": rig.standby_url(RIG_DATABASE), "READ_PIN_SECONDS": "0.3"}
    with serving(rig.primary_url(RIG_DATABASE), env=environment) as api:
        email = f"t{uuid4().hex[:10]}@example.com"
        registered = api.post("/auth/register", json={"email": email, "username": email.split("@")[0], "password": PASSWORD})
        assert registered.status_code == 201 and TOKEN.fullmatch(registered.headers["X-Read-Token"])
        signed_in = api.post("/auth/token", json={"email": email, "password": PASSWORD, "device_id": "d1", "device_type": "ios"})
        headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        await rig.caught_up()
        before = api.get("/me/wallet", headers=headers).json()["gems"]
        assert "X-Read-Token" not in api.get("/me/wallet", headers=headers).headers  # a read writes nothing, gets no token
        await rig.set_apply_delay(3)
        try:
            bought = api.post("/me/purchases", json={"shop_item_id": str(item), "quantity": 1}, headers={**headers, "Idempotency-Key": "p1"})
            assert bought.status_code == 201, bought.text
            token, after = bought.headers["X-Read-Token"], bought.json()["gems"]
            assert after < before
            assert api.get("/me/wallet", headers={**headers, "X-Read-Token": token}).json()["gems"] == after
            assert api.get("/me/wallet", headers=headers).json()["gems"] == after  # pinned to the primary for 0.3 s
            time.sleep(0.4)
            assert api.get("/me/wallet", headers=headers).json()["gems"] == before  # the pin is over: the lagging standby
            refused = api.get("/me/wallet", headers={**headers, "X-Read-Token": "0/1; DROP"})
            assert refused.status_code == 400 and refused.json()["error"] == "invalid_request" and "X-Read-Token" in refused.json()["detail"]
        finally:
            await rig.set_apply_delay(0)


@pytest.fixture(scope="module")
def debian_pair():
    """The same pair from Debian's PostgreSQL 15 (scripts/install_rigs.sh installs it; missing, the test fails naming it)."""
    from tests.replicas import DEBIAN_15, replica_pair

    with replica_pair(DEBIAN_15) as pair:
        yield pair


async def test_routing_and_tokens_work_the_same_on_debians_postgresql_15(debian_pair):
    from langlearn.routing import commit_lsn

    await debian_pair.set_apply_delay(0.5)
    async with database(debian_pair.primary_url(), replica_url=debian_pair.standby_url(), migrate="off", global_fallback=False):
        assert (await reader().execute_query_dict("SELECT current_setting('server_version_num')::int / 10000 AS major"))[0]["major"] == 15
        assert (await reader().execute_query_dict(IN_RECOVERY))[0]["standby"] is True
        async with in_transaction(PRIMARY) as connection:
            await connection.execute_query("CREATE TABLE IF NOT EXISTS marks (n int)")
            await connection.execute_query("INSERT INTO marks VALUES (1)")
        token = await commit_lsn()
        assert (await reader().execute_query_dict("SELECT to_regclass('marks') IS NULL AS missing"))[0]["missing"]  # stale
        async with read_after(token, wait=2) as choice:  # waits out the 0.5 s delay on the standby itself
            assert (await reader().execute_query_dict("SELECT count(*) AS n FROM marks"))[0]["n"] == 1
        assert choice.connection == "replica1" and 0.3 < choice.waited < 2


async def test_status_shows_each_standby_reachable_and_its_replay_lag(rig):
    from tests.conftest import run_cli
    from tests.test_urls import _dead_port

    dead = f"postgres://ro:s3cret@127.0.0.1:{_dead_port()}/{RIG_DATABASE}"
    standbys = f"{rig.standby_url(RIG_DATABASE)} {dead}"
    await rig.caught_up()
    result = run_cli("langlearn", "status", database=rig.primary_url(RIG_DATABASE), env={"DATABASE_REPLICA_URL": standbys})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"standby {rig.standby_url(RIG_DATABASE)}: reachable, replay lag 0 bytes, 0.0 s" in lines
    assert any(line.startswith(f"standby postgres://ro:***@127.0.0.1:{urlsplit(dead).port}/{RIG_DATABASE}: unreachable (cannot reach PostgreSQL at ")
               and "DATABASE_REPLICA_URL right?" in line for line in lines), lines
    assert "s3cret" not in result.stdout + result.stderr
    await rig.set_apply_delay(5)
    try:
        primary = await asyncpg.connect(rig.primary_url(RIG_DATABASE))
        try:
            await primary.execute("CREATE TABLE lag_marker AS SELECT generate_series(1, 1000) AS n")
            await asyncio.sleep(1.1)  # the standby's last replayed transaction is now over a second old
        finally:
            await primary.close()
        lagging = run_cli("langlearn", "status", database=rig.primary_url(RIG_DATABASE), env={"DATABASE_REPLICA_URL": rig.standby_url(RIG_DATABASE)})
        match = re.search(r"reachable, replay lag (\d+) bytes, ([\d.]+) s", lagging.stdout)
        assert match and int(match[1]) > 0 and float(match[2]) >= 1.0, lagging.stdout
    finally:
        await rig.set_apply_delay(0)


async def test_a_standby_of_another_cluster_is_refused_at_startup_and_one_that_is_down_only_logged(rig, head_db, caplog):
    from langlearn.errors import StartupError
    from tests.test_urls import _dead_port

    with pytest.raises(StartupError) as refused:
        async with database(rig.primary_url(RIG_DATABASE), replica_url=head_db, migrate="off", global_fallback=False):
            pass
    assert str(refused.value).startswith("DATABASE_REPLICA_URL names postgres://") and "which is not a standby of the primary" in str(refused.value)
    down = f"postgres://ro:s3cret@127.0.0.1:{_dead_port()}/{RIG_DATABASE}"
    async with database(rig.primary_url(RIG_DATABASE), replica_url=[rig.standby_url(RIG_DATABASE), down], migrate="off", global_fallback=False):
        async with in_transaction(PRIMARY) as connection:  # it started: the primary serves
            assert (await connection.execute_query_dict(IN_RECOVERY))[0]["standby"] is False
    assert any("is not reachable now" in record.getMessage() and "s3cret" not in record.getMessage() for record in caplog.records)


@pytest.fixture
def service_log(tmp_path):
    with open(tmp_path / "service.log", "w") as log:
        yield log


async def standby_commits(rig) -> int:
    standby = await asyncpg.connect(rig.standby_url(RIG_DATABASE))
    try:
        return await standby.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", RIG_DATABASE)
    finally:
        await standby.close()


async def test_the_load_test_passes_with_a_standby_and_pgbouncer_in_front_of_the_primary(rig, connect, service_log):
    """The whole topology of docs/scale-out.md at once: the service's pool through PgBouncer in transaction mode, its
    reads routed to the standby, its migrate step direct; the load test's retries, duplicates and database restart
    (tests/test_service_load.py) leave every acknowledged write applied once."""
    from tests.pgbouncer import running_pgbouncer
    from tests.test_service_load import run_load

    primary = rig.primary_url(RIG_DATABASE)
    await rig.caught_up()
    read_before = await standby_commits(rig)
    with running_pgbouncer(rig.primary_url()) as bouncer:
        pooled = await bouncer.pooled(primary)
        topology = {"DATABASE_DIRECT_URL": primary, "DATABASE_REPLICA_URL": rig.standby_url(RIG_DATABASE)}
        await run_load(primary, pooled, connect, service_log, env=topology)
        assert bouncer.logins(primary) > 0, "the service did not go through PgBouncer"
    assert await standby_commits(rig) - read_before > 100, "the standby served (almost) no reads"
