"""Accounts (langlearn.operations.accounts): what each operation writes, row by row, and what it refuses."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import asyncpg
import pytest
from argon2 import PasswordHasher

from langlearn import rules
from langlearn.operations import accounts
from langlearn.operations.accounts import logout, refresh, register, sign_in, token_hash
from langlearn.operations.errors import InvalidCredentials, InvalidRequest, Taken, TokenInvalid, TokenReused
from langlearn.startup import database
from tests.conftest import REPO_ROOT

PASSWORD = "correct horse battery"
DEMO = json.loads((REPO_ROOT / "seed" / "data" / "demo_accounts.json").read_text())


async def test_register_stores_a_lower_cased_email_an_argon2id_hash_a_wallet_with_its_welcome_gems_and_a_streak(head_db, connect):
    async with database(head_db, migrate="off"):
        registered = await register("  Ana@Example.COM ", "Ana.B", PASSWORD)
    connection = await connect(head_db)
    user = await connection.fetchrow("SELECT * FROM users WHERE id = $1", registered.user_id)
    # the username in its canonical form (NFKC, case folded): what uniqueness compares
    assert (user["email"], user["username"], user["provider"], user["is_active"]) == ("ana@example.com", "ana.b", "local", True)
    assert registered.username == "ana.b" and registered.gems == rules.WELCOME_GEMS
    assert user["hashed_password"].startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PasswordHasher().verify(user["hashed_password"], PASSWORD)
    wallet = await connection.fetchrow("SELECT gems, total_gems_earned, total_gems_spent FROM user_wallets WHERE user_id = $1", registered.user_id)
    assert tuple(wallet) == (rules.WELCOME_GEMS, rules.WELCOME_GEMS, 0)
    ledger = await connection.fetch(
        "SELECT transaction_type::text, amount, balance_after, source, idempotency_key FROM wallet_transactions WHERE user_id = $1", registered.user_id
    )
    assert [tuple(row) for row in ledger] == [("earn", rules.WELCOME_GEMS, rules.WELCOME_GEMS, "welcome_bonus", "welcome_bonus:signup")]
    streak = await connection.fetchrow("SELECT current_streak, longest_streak, last_activity_date FROM streaks WHERE user_id = $1", registered.user_id)
    assert tuple(streak) == (0, 0, None)
    assert PASSWORD not in repr(registered)


async def test_a_taken_email_or_username_in_any_case_is_refused_and_nothing_is_written(head_db, connect):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        with pytest.raises(Taken, match="email") as email_taken:
            await register("ANA@example.com", "other", PASSWORD)
        with pytest.raises(Taken, match="username") as username_taken:
            await register("other@example.com", "ANA", PASSWORD)
    assert email_taken.value.code == username_taken.value.code == "taken"
    assert PASSWORD not in str(email_taken.value) + str(username_taken.value)
    connection = await connect(head_db)
    assert await connection.fetchval("SELECT count(*) FROM users") == 1
    assert await connection.fetchval("SELECT count(*) FROM user_wallets") == 1


async def test_concurrent_registrations_of_one_username_let_exactly_one_win(head_db, connect):
    async with database(head_db, migrate="off"):
        results = await asyncio.gather(register("a@example.com", "same", PASSWORD), register("b@example.com", "SAME", PASSWORD), return_exceptions=True)
    assert sorted(type(result).__name__ for result in results) == ["RegisteredUser", "Taken"]
    assert await (await connect(head_db)).fetchval("SELECT count(*) FROM users") == 1


@pytest.mark.parametrize(
    ("email", "username", "password", "field"),
    [("no-at-sign", "ana", PASSWORD, "email"), ("a@example.com", "a b", PASSWORD, "username"), ("a@example.com", "ana", "short", "password")],
)
async def test_invalid_input_is_refused_before_anything_is_hashed(head_db, email, username, password, field):
    async with database(head_db, migrate="off"):
        with pytest.raises(InvalidRequest, match=field) as refused:
            await register(email, username, password)
    assert refused.value.code == "invalid_request"
    assert password not in str(refused.value)


async def test_sign_in_issues_a_token_stored_only_as_its_sha256_and_records_the_device_and_login(head_db, connect):
    async with database(head_db, migrate="off"):
        user = await register("ana@example.com", "ana", PASSWORD)
        session = await sign_in("ANA@example.com", PASSWORD, "phone-1", "ios", ip="203.0.113.7", device_name="Ana's phone")
    assert session.user_id == user.user_id
    assert session.refresh_token not in repr(session) and PASSWORD not in repr(session)
    connection = await connect(head_db)
    token = await connection.fetchrow("SELECT * FROM refresh_tokens")
    assert token["token_hash"] == hashlib.sha256(session.refresh_token.encode()).hexdigest() == token_hash(session.refresh_token)
    assert (token["user_id"], token["device_id"], token["is_used"], token["is_revoked"]) == (user.user_id, session.device, False, False)
    assert token["expires_at"] == session.refresh_expires_at
    assert await connection.fetchval("SELECT expires_at - created_at FROM refresh_tokens") == accounts.REFRESH_TOKEN_LIFETIME
    device = await connection.fetchrow("SELECT * FROM user_devices")
    assert (device["id"], device["device_id"], device["device_type"], device["device_name"]) == (session.device, "phone-1", "ios", "Ana's phone")
    login = await connection.fetchrow("SELECT last_login_at, last_login_ip FROM users")
    assert login["last_login_at"] is not None and login["last_login_ip"] == "203.0.113.7"
    # the plaintext token is nowhere in the database
    dump = await connection.fetchval("SELECT string_agg(t::text, ' ') FROM (SELECT * FROM refresh_tokens) t")
    dump += await connection.fetchval("SELECT string_agg(u::text, ' ') FROM (SELECT * FROM users) u")
    assert session.refresh_token not in dump and PASSWORD not in dump


async def test_signing_in_again_on_a_device_reuses_the_device_and_revokes_its_earlier_chain(head_db, connect):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        first = await sign_in("ana@example.com", PASSWORD, "phone-1", "ios")
        other = await sign_in("ana@example.com", PASSWORD, "laptop", "web")
        second = await sign_in("ana@example.com", PASSWORD, "phone-1", "ios")
        assert first.device == second.device != other.device
        with pytest.raises(TokenInvalid):
            await refresh(first.refresh_token)
        assert (await refresh(other.refresh_token)).device == other.device  # other devices are untouched
    connection = await connect(head_db)
    assert await connection.fetchval("SELECT count(*) FROM user_devices") == 2


async def test_a_wrong_password_and_an_unknown_email_give_the_same_error_after_comparable_work(head_db):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        await asyncio.to_thread(accounts._dummy_hash)  # built once per process; not part of the comparison
        timings: dict[str, float] = {}
        errors = {}
        for case, email in (("wrong password", "ana@example.com"), ("unknown email", "nobody@example.com")):
            started = time.perf_counter()
            with pytest.raises(InvalidCredentials) as refused:
                await sign_in(email, "wrong password!", "phone-1", "ios")
            timings[case] = time.perf_counter() - started
            errors[case] = refused.value
    assert str(errors["wrong password"]) == str(errors["unknown email"]) and errors["unknown email"].code == "invalid_credentials"
    assert "wrong password!" not in str(errors["wrong password"])
    # both ran one argon2 verification: neither is a small fraction of the other
    assert min(timings.values()) > 0.3 * max(timings.values()), timings


async def test_a_disabled_account_cannot_sign_in_or_refresh(head_db, connect):
    async with database(head_db, migrate="off"):
        user = await register("ana@example.com", "ana", PASSWORD)
        session = await sign_in("ana@example.com", PASSWORD, "phone-1", "android")
        await (await connect(head_db)).execute("UPDATE users SET is_active = false WHERE id = $1", user.user_id)
        with pytest.raises(InvalidCredentials, match=accounts.CREDENTIALS_MESSAGE):
            await sign_in("ana@example.com", PASSWORD, "phone-1", "android")
        with pytest.raises(TokenInvalid):
            await refresh(session.refresh_token)


async def test_a_hash_with_outdated_parameters_is_replaced_at_sign_in(head_db, connect):
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    async with database(head_db, migrate="off"):
        user = await register("ana@example.com", "ana", PASSWORD)
        connection = await connect(head_db)
        await connection.execute("UPDATE users SET hashed_password = $1 WHERE id = $2", weak, user.user_id)
        await sign_in("ana@example.com", PASSWORD, "phone-1", "ios")
        stored = await connection.fetchval("SELECT hashed_password FROM users WHERE id = $1", user.user_id)
        assert stored != weak and stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert not accounts.HASHER.check_needs_rehash(stored)
        await sign_in("ana@example.com", PASSWORD, "phone-1", "ios")  # current parameters: left alone
        assert await connection.fetchval("SELECT hashed_password FROM users WHERE id = $1", user.user_id) == stored


async def test_refresh_rotates_and_a_used_token_presented_again_revokes_the_device_chain(head_db, connect):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        first = await sign_in("ana@example.com", PASSWORD, "phone-1", "ios")
        laptop = await sign_in("ana@example.com", PASSWORD, "laptop", "web")
        second = await refresh(first.refresh_token)
        assert (second.user_id, second.device) == (first.user_id, first.device) and second.refresh_token != first.refresh_token
        third = await refresh(second.refresh_token)

        with pytest.raises(TokenReused) as reused:
            await refresh(first.refresh_token)  # a stolen copy of a used token
        assert reused.value.code == "token_reused" and first.refresh_token not in str(reused.value)
        with pytest.raises(TokenInvalid):  # the chain's live token is revoked too: the rightful client signs in again
            await refresh(third.refresh_token)
        with pytest.raises(TokenReused):  # still reuse, and still revoked after the error (it was committed)
            await refresh(second.refresh_token)
        assert (await refresh(laptop.refresh_token)).device == laptop.device
    connection = await connect(head_db)
    rows = await connection.fetch("SELECT is_used, is_revoked, revoked_at FROM refresh_tokens WHERE device_id = $1 ORDER BY created_at", first.device)
    assert [(row["is_used"], row["is_revoked"], row["revoked_at"] is not None) for row in rows] == [(True, True, True), (True, True, True), (False, True, True)]


async def test_an_expired_or_unknown_token_is_refused_without_revoking_anything(head_db, connect):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        session = await sign_in("ana@example.com", PASSWORD, "phone-1", "ios")
        connection = await connect(head_db)
        await connection.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
        with pytest.raises(TokenInvalid, match="expired") as expired:
            await refresh(session.refresh_token)
        with pytest.raises(TokenInvalid):
            await refresh("not a token")
    assert expired.value.code == "token_invalid" and session.refresh_token not in str(expired.value)
    assert await connection.fetchval("SELECT count(*) FROM refresh_tokens WHERE is_revoked OR is_used") == 0


async def _record_backends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The server process of each transaction that looks a token up: proof that calls ran on separate connections."""
    backends: list[int] = []
    lock_device = accounts._lock_device

    async def recording(connection, digest):
        backends.append((await connection.execute_query_dict("SELECT pg_backend_pid() AS pid"))[0]["pid"])
        return await lock_device(connection, digest)

    monkeypatch.setattr(accounts, "_lock_device", recording)
    return backends


async def test_a_refresh_token_used_twice_at_once_lets_one_succeed_and_revokes_the_chain(head_db, connect, monkeypatch):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        session = await sign_in("ana@example.com", PASSWORD, "phone-1", "ios")
        # two real connections of Tortoise's pool (maxsize 5 by default) race on the same token
        backends = await _record_backends(monkeypatch)
        results = await asyncio.gather(refresh(session.refresh_token), refresh(session.refresh_token), return_exceptions=True)
        assert len(set(backends)) == 2, backends
        winners = [result for result in results if isinstance(result, accounts.Session)]
        losers = [result for result in results if isinstance(result, BaseException)]
        assert len(winners) == 1 and len(losers) == 1 and isinstance(losers[0], TokenReused), results
        with pytest.raises(TokenInvalid):  # the winner's new token went down with the chain
            await refresh(winners[0].refresh_token)
    connection = await connect(head_db)
    rows = await connection.fetch("SELECT is_used, is_revoked FROM refresh_tokens WHERE device_id = $1", session.device)
    assert len(rows) == 2 and all(row["is_revoked"] for row in rows)
    assert sorted(row["is_used"] for row in rows) == [False, True]


async def test_a_reuse_racing_the_rightful_refresh_leaves_no_live_token_on_the_device(head_db, connect):
    # The revocation and the rightful client's rotation serialise on the device row, so the
    # revocation cannot miss the successor the rotation inserts, whichever goes first.
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        for attempt in range(5):
            stolen = await sign_in("ana@example.com", PASSWORD, f"phone-{attempt}", "ios")
            rightful = await refresh(stolen.refresh_token)
            results = await asyncio.gather(refresh(stolen.refresh_token), refresh(rightful.refresh_token), return_exceptions=True)
            assert isinstance(results[0], TokenReused), results
            live = await (await connect(head_db)).fetchval("SELECT count(*) FROM refresh_tokens WHERE device_id = $1 AND NOT is_revoked", stolen.device)
            assert live == 0, results


async def test_logout_revokes_the_device_chain_and_is_idempotent(head_db, connect):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        session = await sign_in("ana@example.com", PASSWORD, "phone-1", "ios")
        laptop = await sign_in("ana@example.com", PASSWORD, "laptop", "web")
        current = await refresh(session.refresh_token)
        assert (await logout(current.refresh_token)).revoked == 2  # the used predecessor and the live token
        with pytest.raises(TokenInvalid):
            await refresh(current.refresh_token)
        assert (await logout(current.refresh_token)).revoked == 0
        assert (await logout("never issued")).revoked == 0
        assert (await refresh(laptop.refresh_token)).device == laptop.device  # only that device signed out


async def test_the_demo_accounts_sign_in_with_the_documented_password_and_no_other_seeded_account_does(seeded_db, connect):
    connection = await connect(seeded_db)
    others = await connection.fetch("SELECT email FROM users WHERE email <> ALL($1::text[]) ORDER BY email LIMIT 2", [a["email"] for a in DEMO["accounts"]])
    async with database(seeded_db, migrate="off"):
        for account in DEMO["accounts"]:
            session = await sign_in(account["email"], DEMO["password"], "demo-device", "web")
            assert (await refresh(session.refresh_token)).user_id == session.user_id
        for row in others:
            with pytest.raises(InvalidCredentials):
                await sign_in(row["email"], DEMO["password"], "demo-device", "web")


# --- registration under attack (issue 21, findings 5 and 6) -----------------------------------------


async def test_registration_is_one_transaction_with_its_welcome_gems(head_db, connect):
    """A ledger write that fails leaves no account behind: the user, wallet, streak and gems commit together."""
    connection = await connect(head_db)
    await connection.execute("""
        CREATE FUNCTION refuse_entries() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'ledger down'; END $$;
        CREATE TRIGGER refuse_entries BEFORE INSERT ON wallet_transactions FOR EACH ROW EXECUTE FUNCTION refuse_entries();
    """)
    async with database(head_db, migrate="off"):
        with pytest.raises(Exception, match="ledger down"):
            await register("ana@example.com", "ana", PASSWORD)
    assert [await connection.fetchval(f"SELECT count(*) FROM {table}") for table in ("users", "user_wallets", "streaks")] == [0, 0, 0]


@pytest.mark.parametrize(
    ("look_alike", "why"),
    [
        ("ＡＮＡ.ｂ", "fullwidth letters"),
        ("\u212aim", "KELVIN SIGN for K"),
        ("ANA.B", "upper case"),
        ("STRASSE", "case folding: ß is ss"),
    ],
)
async def test_a_look_alike_of_a_taken_username_is_taken(head_db, connect, look_alike, why):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana.b", PASSWORD)
        await register("kim@example.com", "kim", PASSWORD)
        await register("str@example.com", "straße", PASSWORD)
        with pytest.raises(Taken, match="username"):
            await register("other@example.com", look_alike, PASSWORD)
    assert await (await connect(head_db)).fetchval("SELECT count(*) FROM users") == 3, why


@pytest.mark.parametrize("mixed", ["\u0430na.b", "pаypal", "ivan.иван"])
async def test_a_username_mixing_scripts_is_refused(head_db, mixed):
    async with database(head_db, migrate="off"):
        with pytest.raises(InvalidRequest, match="mixes scripts.*Cyrillic"):
            await register("ana@example.com", mixed, PASSWORD)


async def test_names_in_one_script_or_a_usual_mix_are_welcome(head_db, connect):
    names = ["nguyễn.thùy_linh", "иван", "山田たろう", "김민준", "ΣΟΦΙΑ"]
    async with database(head_db, migrate="off"):
        for number, name in enumerate(names):
            await register(f"user{number}@example.com", name, PASSWORD)
    stored = [row["username"] for row in await (await connect(head_db)).fetch("SELECT username FROM users ORDER BY email")]
    assert stored == ["nguyễn.thùy_linh", "иван", "山田たろう", "김민준", "σοφια"]


async def test_the_database_refuses_a_username_that_is_not_nfkc_normalised(head_db, connect):
    connection = await connect(head_db)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await connection.execute("INSERT INTO users (email, username, hashed_password) VALUES ('a@example.com', 'ｂｏｂ', 'x')")
    assert refused.value.constraint_name == "users_username_nfkc_check"
    await connection.execute("INSERT INTO users (email, username, hashed_password) VALUES ('a@example.com', 'bob', 'x')")


@pytest.mark.parametrize("password", ["password", "12345678", "qwertyuiop", "aaaaaaaaaaaa", "ana@example.com", "ana.b2026"])
async def test_a_common_or_guessable_password_is_refused_before_anything_is_written(head_db, connect, password):
    async with database(head_db, migrate="off"):
        with pytest.raises(InvalidRequest, match="password refused") as refused:
            await register("ana@example.com", "ana.b", password)
    assert password == "password" or password not in str(refused.value)  # the word itself is in every message
    assert await (await connect(head_db)).fetchval("SELECT count(*) FROM users") == 0


def test_the_message_for_a_top_password_says_why():
    with pytest.raises(InvalidRequest) as refused:
        accounts.check_password_strength("password", [])
    assert str(refused.value) == "password refused: This is a top-10 common password; choose a longer one, e.g. a few unrelated words"


# --- sign-in under attack --------------------------------------------------------------------------


async def test_an_address_that_is_no_ip_literal_is_stored_as_null_and_the_sign_in_succeeds(head_db, connect):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        session = await sign_in("ana@example.com", PASSWORD, "phone-1", "ios", ip="not-an-address, 10.0.0.1")
    assert session.user_id
    assert await (await connect(head_db)).fetchval("SELECT last_login_ip FROM users") is None


async def test_the_session_names_its_refresh_token_row(head_db, connect):
    async with database(head_db, migrate="off"):
        await register("ana@example.com", "ana", PASSWORD)
        first = await sign_in("ana@example.com", PASSWORD, "phone-1", "ios")
        second = await refresh(first.refresh_token)
    connection = await connect(head_db)
    for session in (first, second):
        assert await connection.fetchval("SELECT token_hash FROM refresh_tokens WHERE id = $1", session.token_id) == token_hash(session.refresh_token)
