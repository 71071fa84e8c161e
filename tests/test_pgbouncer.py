"""Behind PgBouncer in transaction mode (Debian's 1.18, before prepared-statement support): the write path works when
the URL says `pool_mode=transaction`, fails without it, and migrators refuse the pooler in one line before the lock,
while `DATABASE_DIRECT_URL` migrates as usual. One PgBouncer per module, in front of the test server."""

from __future__ import annotations

import inspect
from urllib.parse import urlsplit

import asyncpg
import pytest
from tortoise import connections

from langlearn.errors import ConfigError
from langlearn.history.lock import MIGRATION_LOCK_KEY
from langlearn.settings import open_connection
from langlearn.startup import database
from tests import pgbouncer, test_accounts, test_leagues, test_lessons, test_social_and_reviews, test_wallet_operations
from tests.conftest import LANGLEARN, run_cli
from tests.pgbouncer import running_pgbouncer
from tests.test_aerich import aerich

pytestmark = [pytest.mark.rig, pytest.mark.slow]

ONE_LINE_FIX = "set DATABASE_DIRECT_URL to PostgreSQL itself"


@pytest.fixture(scope="module")
def bouncer(server):
    with running_pgbouncer(server.url) as running:
        yield running


@pytest.fixture(scope="module")
def session_bouncer(server):
    with running_pgbouncer(server.url, pool_mode="session") as running:
        yield running


# --- what the drivers need ---------------------------------------------------------------------------


async def backend_of(connection: asyncpg.Connection) -> int:
    return await connection.fetchval("SELECT pg_backend_pid() + $1::int", 0)  # a parameter: a prepared statement


async def another_client_takes_the_backend(url: str) -> list[int]:
    """A's statement, B's transaction on the backend A just used (PgBouncer reuses the most recent), A's same statement
    again on another backend: the backends each statement ran on."""
    first, second = await open_connection(url), await open_connection(url)
    try:
        seen = [await backend_of(first)]
        async with second.transaction():
            seen.append(await backend_of(second))
            seen.append(await backend_of(first))
        return seen
    finally:
        await first.close()
        await second.close()


async def test_without_pool_mode_a_statement_meets_a_backend_without_its_prepared_statement(bouncer, head_db):
    with pytest.raises(asyncpg.InvalidSQLStatementNameError, match=r'prepared statement "__asyncpg_stmt_\w+" does not exist'):
        await another_client_takes_the_backend(bouncer.url_for(head_db, say_pool_mode=False))
    first, taken, again = await another_client_takes_the_backend(bouncer.url_for(head_db))
    assert first == taken != again  # the same moves, with pool_mode=transaction: no named statement to lose


async def test_without_pool_mode_the_pool_is_refused_for_its_session_setting(bouncer, head_db):
    url = await bouncer.pooled(head_db)
    plain = bouncer.url_for(head_db, say_pool_mode=False)
    with pytest.raises(asyncpg.ProtocolViolationError, match="unsupported startup parameter: lock_timeout"):
        async with database(plain, direct_url=head_db, migrate="off", global_fallback=False):
            await connections.get("default").execute_query("SELECT 1")
    async with database(url, direct_url=head_db, migrate="check", global_fallback=False):  # the role's setting, read once
        _, rows = await connections.get("default").execute_query("SELECT current_setting('lock_timeout') AS value")
    assert rows[0]["value"] == "2s"


async def test_the_role_without_the_pools_lock_timeout_is_refused_at_startup_in_one_line(bouncer, head_db):
    url = bouncer.url_for(head_db)  # no ALTER ROLE: the server's lock_timeout is 0
    with pytest.raises(ConfigError) as refused:
        async with database(url, direct_url=head_db, migrate="check", global_fallback=False):
            pass
    message = str(refused.value)
    assert "lock_timeout" in message and "ALTER ROLE" in message and "\n" not in message


# --- the write path's races, through PgBouncer --------------------------------------------------------

RACES = [
    test_wallet_operations.test_racing_purchases_exactly_k_succeed,
    test_wallet_operations.test_racing_buyers_take_exactly_the_stock,
    test_wallet_operations.test_one_key_sent_20_times_at_once_has_one_effect,
    test_lessons.test_sixteen_completions_of_one_user_at_once_add_up_exactly,
    test_lessons.test_one_key_sent_twenty_times_at_once_records_one_attempt,
    test_social_and_reviews.test_concurrent_follows_insert_once,
    test_social_and_reviews.test_concurrent_reviews_of_one_word_serialise,
    test_accounts.test_concurrent_registrations_of_one_username_let_exactly_one_win,
    test_leagues.test_the_week_closed_twice_at_once_gives_one_result,
]


@pytest.mark.parametrize("race", RACES, ids=lambda race: race.__name__.removeprefix("test_"))
async def test_a_write_path_race_passes_through_pgbouncer_in_transaction_mode(race, bouncer, server, head_template, seeded_template, connect):
    """The race test itself, its service-side URL through PgBouncer (pool_mode=transaction); its own checks go direct."""
    parameters = inspect.signature(race).parameters
    assert set(parameters) <= {"head_db", "seeded_db", "connect"}, f"{race.__name__} needs fixtures this wrapper lacks"
    direct = await server.create(template=seeded_template if "seeded_db" in parameters else head_template)
    try:
        pooled = await bouncer.pooled(direct)

        async def connect_direct(url: str) -> asyncpg.Connection:
            return await connect(direct if urlsplit(url).port == bouncer.port else url)

        arguments = {"head_db": pooled, "seeded_db": pooled, "connect": connect_direct}
        await race(**{name: arguments[name] for name in parameters})
        assert bouncer.logins(direct) >= 2, "the race did not go through PgBouncer"
    finally:
        await server.drop(direct)


# --- migrators refuse the pooler, and migrate through DATABASE_DIRECT_URL ---------------------------


async def lock_and_history(connection: asyncpg.Connection) -> tuple[int, bool]:
    """Whether anything happened: advisory locks held on the key, and whether Aerich's table exists."""
    held = await connection.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1::bigint::oid", MIGRATION_LOCK_KEY & 0xFFFFFFFF
    )
    return held, await connection.fetchval("SELECT to_regclass('aerich') IS NOT NULL")


@pytest.mark.parametrize("say_pool_mode", [True, False], ids=["url-says-transaction", "found-by-its-backends"])
async def test_langlearn_upgrade_through_pgbouncer_refuses_in_one_line_and_works_direct(bouncer, empty_db, connect, say_pool_mode):
    pooled = bouncer.url_for(empty_db, say_pool_mode=say_pool_mode)
    refused = run_cli(LANGLEARN, "upgrade", database=pooled)
    assert refused.returncode == 2, refused.stderr  # configuration (README: 0 done, 1 refused, 2 configuration)
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: migrations cannot run through a transaction pooler"), refused.stderr
    assert ONE_LINE_FIX in lines[0]
    assert await lock_and_history(await connect(empty_db)) == (0, False), "the refusal changed something"

    done = run_cli(LANGLEARN, "upgrade", database=pooled, env={"DATABASE_DIRECT_URL": empty_db})
    assert done.returncode == 0, done.stderr
    assert "(head)" in done.stdout
    status = run_cli(LANGLEARN, "status", database=pooled, env={"DATABASE_DIRECT_URL": empty_db})
    assert status.returncode == 0 and "migration lock: free" in status.stdout, status.stdout + status.stderr


async def test_startups_migrate_step_refuses_the_pooler_and_migrates_direct_while_the_pool_goes_through_it(bouncer, empty_db, connect):
    pooled = await bouncer.pooled(empty_db)
    with pytest.raises(ConfigError, match="migrations cannot run through a transaction pooler"):
        async with database(pooled, migrate="apply", global_fallback=False):
            pass
    assert await lock_and_history(await connect(empty_db)) == (0, False)
    async with database(pooled, direct_url=empty_db, migrate="apply", global_fallback=False) as startup:
        assert startup.applied and startup.state is not None and not startup.state.pending
        _, rows = await connections.get("default").execute_query("SELECT inet_server_port() AS port, count(*) AS n FROM aerich GROUP BY 1")
    assert rows[0]["n"] == len(startup.applied)


async def test_plain_aerich_upgrade_through_pgbouncer_refuses_in_one_line_and_works_direct(bouncer, empty_db, connect):
    pooled = bouncer.url_for(empty_db, say_pool_mode=False)
    refused = aerich("upgrade", database=pooled)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and ONE_LINE_FIX in lines[0], refused.stderr
    assert (await lock_and_history(await connect(empty_db)))[0] == 0
    done = aerich("upgrade", database=pooled, env={"DATABASE_DIRECT_URL": empty_db})
    assert done.returncode == 0, done.stderr
    assert run_cli(LANGLEARN, "check", database=empty_db).returncode == 0


async def test_a_session_pooler_is_no_transaction_pooler_and_migrates(session_bouncer, empty_db):
    done = run_cli(LANGLEARN, "upgrade", database=session_bouncer.url_for(empty_db, say_pool_mode=False))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("pool_mode", "pool_size", "sign"),
    [("transaction", 1, "its statement waited for the backend another client's transaction held"),
     ("statement", 20, "it refused a transaction")],
)
async def test_a_pooler_with_one_backend_or_in_statement_mode_is_refused_too(server, empty_db, connect, pool_mode, pool_size, sign):
    with running_pgbouncer(server.url, pool_mode=pool_mode, pool_size=pool_size) as pooler:
        refused = run_cli(LANGLEARN, "upgrade", database=pooler.url_for(empty_db, say_pool_mode=False))
    assert refused.returncode == 2 and sign in refused.stderr and ONE_LINE_FIX in refused.stderr, refused.stderr
    assert await lock_and_history(await connect(empty_db)) == (0, False)


def test_a_missing_pgbouncer_fails_in_one_line_naming_the_installer(monkeypatch):
    monkeypatch.setattr(pgbouncer, "BINARY_PLACES", ("/nonexistent/pgbouncer",))
    with pytest.raises(pytest.fail.Exception, match="run scripts/install_rigs.sh"):
        pgbouncer.pgbouncer_binary()
