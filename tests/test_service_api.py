"""The example service's write path as a real uvicorn process, over HTTP, behind bearer authentication.

One service per module on a database cloned from the demo seed; every answer is compared with what
plain SQL reads, and the module ends by checking the data's invariants after all the writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import jwt
import pytest

from langlearn import rules
from langlearn.verify import check_invariants
from tests.conftest import REPO_ROOT
from tests.test_service import start_service, wait_until_up
from tests.test_startup import unused_port

pytestmark = pytest.mark.clock  # tokens, lessons and reviews on the seeded demo, at the time they run
KEY = "test-signing-key-" + "k" * 40  # >= 32 bytes; a test value, no secret
OTHER_KEY = "another-signing-key-" + "o" * 40
DEMO_PASSWORD = "langlearn-demo"  # seed/data/demo_accounts.json, docs/seed.md
DEMO_EMAIL = "linh@demo.langlearn.example"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
async def api(seeded_module_db):
    port = unused_port()
    process = start_service(seeded_module_db, port, env={"LANGLEARN_SECRET_KEY": KEY})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base)
        with httpx.Client(base_url=base, timeout=20) as client:
            yield client
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "Application shutdown complete." in stderr, stderr
    assert KEY not in stderr and "Exception in ASGI application" not in stderr, stderr


def register(api: httpx.Client, name: str) -> str:
    email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
    response = api.post("/auth/register", json={"email": email, "username": email.split("@")[0], "password": PASSWORD})
    assert response.status_code == 201, response.text
    return email


def sign_in(api: httpx.Client, email: str, password: str = PASSWORD, device: str = "phone-1") -> httpx.Response:
    return api.post("/auth/token", json={"email": email, "password": password, "device_id": device, "device_type": "ios"})


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def user_of(tokens: dict) -> str:
    return jwt.decode(tokens["access_token"], KEY, algorithms=["HS256"])["sub"]


@pytest.fixture(scope="module")
def alice(api):
    """A fresh account, signed in: its welcome gems are its only money."""
    email = register(api, "alice")
    return sign_in(api, email).json()


@pytest.fixture(scope="module")
def demo(api):
    response = sign_in(api, DEMO_EMAIL, DEMO_PASSWORD)
    assert response.status_code == 200, response.text
    return response.json()


# --- accounts and tokens -----------------------------------------------------------------------------


async def test_register_pays_the_welcome_gems_once_and_a_taken_email_is_409(api, seeded_module_db, connect):
    email = register(api, "reg")
    conn = await connect(seeded_module_db)
    user_id = await conn.fetchval("SELECT id FROM users WHERE email = $1", email)
    assert await conn.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", user_id) == rules.WELCOME_GEMS
    ledger = await conn.fetch("SELECT amount, source, idempotency_key FROM wallet_transactions WHERE user_id = $1", user_id)
    assert [tuple(row) for row in ledger] == [(rules.WELCOME_GEMS, "welcome_bonus", "welcome_bonus:signup")]

    again = api.post("/auth/register", json={"email": email.upper(), "username": "someone-else", "password": PASSWORD})
    assert again.status_code == 409
    assert again.json()["error"] == "taken" and set(again.json()) == {"error", "detail"}
    assert await conn.fetchval("SELECT count(*) FROM wallet_transactions WHERE user_id = $1", user_id) == 1


async def test_sign_in_gives_a_bearer_pair_and_bad_credentials_are_401(api, seeded_module_db, connect):
    email = register(api, "signin")
    response = sign_in(api, email)
    assert response.status_code == 200
    body = response.json()
    assert (body["token_type"], body["expires_in"]) == ("bearer", 900)
    claims = jwt.decode(body["access_token"], KEY, algorithms=["HS256"])
    assert claims["type"] == "access" and claims["exp"] - claims["iat"] == 900 and claims["jti"]
    assert claims["sub"] == str(await (await connect(seeded_module_db)).fetchval("SELECT id FROM users WHERE email = $1", email))

    wrong = sign_in(api, email, "not the password")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_credentials")
    assert sign_in(api, "nobody@example.com").json()["error"] == "invalid_credentials"


async def test_refresh_rotates_and_a_reused_token_revokes_the_chain(api):
    first = sign_in(api, register(api, "rotate")).json()
    second = api.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"] and second["token_type"] == "bearer"
    assert api.get("/me/wallet", headers=bearer(second)).status_code == 200

    reused = api.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert (reused.status_code, reused.json()["error"]) == (401, "token_reused")
    successor = api.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert (successor.status_code, successor.json()["error"]) == (401, "token_invalid")  # the chain died with the reuse
    unknown = api.post("/auth/refresh", json={"refresh_token": "nothing-we-issued"})
    assert (unknown.status_code, unknown.json()["error"]) == (401, "token_invalid")


async def test_logout_is_204_and_ends_the_refresh_chain(api):
    tokens = sign_in(api, register(api, "logout")).json()
    assert api.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]}).status_code == 204
    assert api.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]}).status_code == 204  # idempotent
    after = api.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert (after.status_code, after.json()["error"]) == (401, "token_invalid")


async def test_the_demo_accounts_sign_in_and_other_seeded_accounts_cannot(api, seeded_module_db, connect, demo):
    assert user_of(demo) == str(await (await connect(seeded_module_db)).fetchval("SELECT id FROM users WHERE email = $1", DEMO_EMAIL))
    other = await (await connect(seeded_module_db)).fetchval(
        "SELECT email FROM users WHERE email NOT LIKE '%@demo.langlearn.example' AND is_active ORDER BY email LIMIT 1"
    )
    refused = sign_in(api, other, DEMO_PASSWORD)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_credentials")


# --- authentication of /me ----------------------------------------------------------------------------

ME_ROUTES = [
    ("GET", "/me"),
    ("POST", f"/me/lessons/{uuid.uuid4()}/attempts"),
    ("POST", "/me/reviews"),
    ("POST", "/me/purchases"),
    ("POST", f"/me/inventory/{uuid.uuid4()}/activate"),
    ("GET", "/me/wallet"),
    ("PUT", f"/me/following/{uuid.uuid4()}"),
    ("DELETE", f"/me/following/{uuid.uuid4()}"),
    ("GET", "/me/feed"),
]


def forged(key: str, user_id: str, session: str, *, expired: bool = False, kind: str = "access") -> str:
    now = datetime.now(timezone.utc) - (timedelta(minutes=30) if expired else timedelta())
    claims = {"sub": user_id, "sid": session, "iat": now, "exp": now + timedelta(minutes=15), "jti": uuid.uuid4().hex, "type": kind}
    return jwt.encode(claims, key, algorithm="HS256")


async def test_every_me_route_is_401_without_a_valid_access_token(api, alice):
    me, session = user_of(alice), jwt.decode(alice["access_token"], KEY, algorithms=["HS256"])["sid"]
    credentials = {
        "none": {},
        "not a jwt": {"Authorization": "Bearer not-a-token"},
        "another key": {"Authorization": f"Bearer {forged(OTHER_KEY, me, session)}"},
        "expired": {"Authorization": f"Bearer {forged(KEY, me, session, expired=True)}"},
        "refresh type": {"Authorization": f"Bearer {forged(KEY, me, session, kind='refresh')}"},
        "a refresh token": {"Authorization": f"Bearer {alice['refresh_token']}"},
    }
    for method, path in ME_ROUTES:
        for what, headers in credentials.items():
            response = api.request(method, path, headers={**headers, "Idempotency-Key": "k"}, json={})
            assert response.status_code == 401, (method, path, what, response.text)
            assert response.json()["error"] == "unauthorized", (method, path, what)
            assert response.headers["WWW-Authenticate"] == "Bearer"
    assert api.get("/me/wallet", headers={"Authorization": f"Bearer {forged(KEY, me, session)}"}).status_code == 200  # the same, well signed
    assert api.get("/me", headers=bearer(alice)).json() == {"user_id": me}


async def test_a_deactivated_account_is_403_and_a_deleted_one_401(api, seeded_module_db, connect):
    conn = await connect(seeded_module_db)
    tokens = sign_in(api, register(api, "deact")).json()
    await conn.execute("UPDATE users SET is_active = false WHERE id = $1", uuid.UUID(user_of(tokens)))
    refused = api.get("/me/wallet", headers=bearer(tokens))
    assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")

    gone = sign_in(api, register(api, "gone")).json()
    await conn.execute("DELETE FROM users WHERE id = $1", uuid.UUID(user_of(gone)))
    assert api.get("/me/wallet", headers=bearer(gone)).status_code == 401


# --- the shop -----------------------------------------------------------------------------------------


async def test_a_purchase_is_201_and_its_replay_the_same_body_with_one_ledger_entry(api, seeded_module_db, connect):
    conn = await connect(seeded_module_db)
    tokens = sign_in(api, register(api, "buyer")).json()
    item = await conn.fetchrow(
        "SELECT id, price_gems FROM shop_items WHERE is_available AND price_gems BETWEEN 1 AND $1 "
        "AND (stock_quantity IS NULL OR stock_quantity > 0) ORDER BY price_gems, id LIMIT 1",
        rules.WELCOME_GEMS,
    )
    request = {"shop_item_id": str(item["id"]), "quantity": 1}
    headers = {**bearer(tokens), "Idempotency-Key": "buy-1"}

    first = api.post("/me/purchases", json=request, headers=headers)
    again = api.post("/me/purchases", json=request, headers=headers)

    assert first.status_code == again.status_code == 201, first.text
    assert first.json() == again.json() == {"gems": rules.WELCOME_GEMS - item["price_gems"], "quantity_owned": 1}
    user_id = uuid.UUID(user_of(tokens))
    assert await conn.fetchval("SELECT count(*) FROM wallet_transactions WHERE user_id = $1 AND idempotency_key = 'buy-1'", user_id) == 1
    assert await conn.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", user_id) == first.json()["gems"]
    assert await conn.fetchval("SELECT quantity FROM user_inventory WHERE user_id = $1 AND shop_item_id = $2", user_id, item["id"]) == 1

    other = api.post("/me/purchases", json={**request, "quantity": 2}, headers=headers)
    assert (other.status_code, other.json()["error"]) == (409, "idempotency_key_reused")
    missing = api.post("/me/purchases", json=request, headers=bearer(tokens))
    assert (missing.status_code, missing.json()["error"]) == (422, "invalid_request")


async def test_a_purchase_beyond_the_wallet_is_409_insufficient_gems(api, seeded_module_db, connect, alice):
    conn = await connect(seeded_module_db)
    gems = await conn.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", uuid.UUID(user_of(alice)))
    item = await conn.fetchval(
        "SELECT id FROM shop_items WHERE is_available AND (stock_quantity IS NULL OR stock_quantity > 0) AND price_gems > 0 ORDER BY id LIMIT 1"
    )
    price = await conn.fetchval("SELECT price_gems FROM shop_items WHERE id = $1", item)
    response = api.post("/me/purchases", json={"shop_item_id": str(item), "quantity": gems // price + 1},
                        headers={**bearer(alice), "Idempotency-Key": "too-much"})
    assert (response.status_code, response.json()["error"]) == (409, "insufficient_gems")
    assert await conn.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", uuid.UUID(user_of(alice))) == gems
    unknown = api.post("/me/purchases", json={"shop_item_id": str(uuid.uuid4()), "quantity": 1}, headers={**bearer(alice), "Idempotency-Key": "x"})
    assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")


async def test_activating_an_item_not_held_is_409(api, seeded_module_db, connect, alice):
    item = await (await connect(seeded_module_db)).fetchval("SELECT id FROM shop_items WHERE item_type = 'streak_freeze' LIMIT 1")
    response = api.post(f"/me/inventory/{item}/activate", headers=bearer(alice))
    assert (response.status_code, response.json()["error"]) == (409, "not_owned")


async def test_a_lesson_completion_is_201_and_its_replay_the_same_body(api, seeded_module_db, connect, alice):
    conn = await connect(seeded_module_db)
    # a lesson anyone may play: the rule book refuses one whose prerequisite is not passed (lesson_locked)
    lesson = await conn.fetchrow("SELECT id, content FROM lessons WHERE content ? 'exercises' AND prerequisite_lesson_id IS NULL ORDER BY id LIMIT 1")
    exercises = json.loads(lesson["content"])["exercises"]
    now = datetime.now(timezone.utc)
    body = {
        "answers": [{"question_id": e["id"], "answer": e.get("answer", ""), "time_spent_ms": 1000, "hint_used": False} for e in exercises],
        "started_at": (now - timedelta(minutes=3)).isoformat(), "finished_at": now.isoformat(),
    }
    headers = {**bearer(alice), "Idempotency-Key": "lesson-1"}

    first = api.post(f"/me/lessons/{lesson['id']}/attempts", json=body, headers=headers)
    again = api.post(f"/me/lessons/{lesson['id']}/attempts", json=body, headers=headers)

    assert first.status_code == again.status_code == 201, first.text
    assert first.json() == again.json()
    user_id = uuid.UUID(user_of(alice))
    assert await conn.fetchval("SELECT count(*) FROM lesson_attempts WHERE user_id = $1", user_id) == 1
    assert await conn.fetchval("SELECT total_xp FROM users WHERE id = $1", user_id) == first.json()["total_xp"]
    # the signed-in device's type, carried by the access token
    device = await conn.fetchval("SELECT device_type::text FROM user_devices WHERE user_id = $1 ORDER BY last_active_at DESC LIMIT 1", user_id)
    assert await conn.fetchval("SELECT device_type::text FROM lesson_attempts WHERE user_id = $1", user_id) == device is not None
    missing = api.post(f"/me/lessons/{lesson['id']}/attempts", json=body, headers=bearer(alice))
    assert (missing.status_code, missing.json()["error"]) == (422, "invalid_request")


# --- reviews, follows, the feed, the wallet statement --------------------------------------------------


async def test_a_review_reschedules_the_word(api, seeded_module_db, connect):
    conn = await connect(seeded_module_db)
    reviewer = sign_in(api, register(api, "reviewer")).json()  # an account of its own: no lesson passed yet
    lesson = await conn.fetchrow(
        "SELECT l.id, l.content FROM lessons l WHERE prerequisite_lesson_id IS NULL AND EXISTS (SELECT FROM vocabulary_items v WHERE v.lesson_id = l.id) "
        "ORDER BY id LIMIT 1")
    vocab = await conn.fetchval("SELECT id FROM vocabulary_items WHERE lesson_id = $1 ORDER BY id LIMIT 1", lesson["id"])
    untaught = api.post("/me/reviews", json={"vocab_id": str(vocab), "quality": 5}, headers=bearer(reviewer))
    assert (untaught.status_code, untaught.json()["error"]) == (404, "not_found")  # a word is reviewed once a lesson taught it
    now = datetime.now(timezone.utc)
    answers = [{"question_id": e["id"], "answer": e["answer"], "time_spent_ms": 2000, "hint_used": False}
               for e in json.loads(lesson["content"])["exercises"]]
    body = {"answers": answers, "started_at": (now - timedelta(minutes=2)).isoformat(), "finished_at": now.isoformat()}
    taught = api.post(f"/me/lessons/{lesson['id']}/attempts", json=body, headers={**bearer(reviewer), "Idempotency-Key": "teach"})
    assert taught.status_code == 201 and taught.json()["passed"], taught.text
    response = api.post("/me/reviews", json={"vocab_id": str(vocab), "quality": 5}, headers=bearer(reviewer))
    assert response.status_code == 200, response.text
    row = await conn.fetchrow(
        "SELECT next_review_date, interval_days, mastery_level::text FROM user_vocab_knowledge WHERE user_id = $1 AND vocab_id = $2",
        uuid.UUID(user_of(reviewer)), vocab,
    )
    body = response.json()
    assert (datetime.fromisoformat(body["next_review_date"]), body["interval_days"], body["mastery_level"]) == tuple(row)
    out_of_range = api.post("/me/reviews", json={"vocab_id": str(vocab), "quality": 6}, headers=bearer(reviewer))
    assert (out_of_range.status_code, out_of_range.json()["error"]) == (422, "invalid_request")


async def test_follow_feed_and_unfollow(api, seeded_module_db, connect, alice):
    conn = await connect(seeded_module_db)
    followed = await conn.fetchval("SELECT user_id FROM activity_feeds WHERE is_public GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1")
    expected = await conn.fetch(
        "SELECT id::text FROM activity_feeds WHERE user_id = $1 AND is_public ORDER BY created_at DESC, id DESC", followed
    )
    assert api.put(f"/me/following/{followed}", headers=bearer(alice)).status_code == 204
    assert api.put(f"/me/following/{followed}", headers=bearer(alice)).status_code == 204  # idempotent
    assert await conn.fetchval(
        "SELECT count(*) FROM user_following WHERE follower_id = $1 AND following_id = $2", uuid.UUID(user_of(alice)), followed
    ) == 1

    seen, before = [], None
    while True:
        page = api.get("/me/feed", params={"limit": 2, **({"before": before} if before else {})}, headers=bearer(alice)).json()
        seen += [item["activity_id"] for item in page["items"]]
        if not (before := page["next"]):
            break
    assert seen == [row["id"] for row in expected] and seen

    myself = api.put(f"/me/following/{user_of(alice)}", headers=bearer(alice))
    assert (myself.status_code, myself.json()["error"]) == (400, "invalid_request")
    assert api.put(f"/me/following/{uuid.uuid4()}", headers=bearer(alice)).status_code == 404
    assert api.delete(f"/me/following/{followed}", headers=bearer(alice)).status_code == 204
    assert api.get("/me/feed", headers=bearer(alice)).json() == {"items": [], "next": None}
    assert api.get("/me/feed", params={"before": "garbage"}, headers=bearer(alice)).status_code == 400


async def test_the_wallet_statement_pages_newest_first_without_overlap(api, seeded_module_db, connect, demo):
    conn = await connect(seeded_module_db)
    user_id = uuid.UUID(user_of(demo))
    rows = await conn.fetch(
        "SELECT id::text FROM wallet_transactions WHERE user_id = $1 ORDER BY created_at DESC, ledger_seq DESC LIMIT 10", user_id
    )
    wallet = await conn.fetchrow("SELECT gems, total_gems_earned, total_gems_spent FROM user_wallets WHERE user_id = $1", user_id)
    assert len(rows) == 10  # the demo learner has a history

    first = api.get("/me/wallet", params={"limit": 5}, headers=bearer(demo)).json()
    second = api.get("/me/wallet", params={"limit": 5, "before": first["next"]}, headers=bearer(demo)).json()

    assert (first["gems"], first["total_gems_earned"], first["total_gems_spent"]) == tuple(wallet)
    assert [entry["id"] for entry in first["transactions"] + second["transactions"]] == [row["id"] for row in rows]
    assert first["transactions"][0]["balance_after"] == wallet["gems"]
    assert api.get("/me/wallet", params={"limit": 101}, headers=bearer(demo)).status_code == 422
    assert api.get("/me/wallet", params={"before": "bm90LWEtY3Vyc29y"}, headers=bearer(demo)).status_code == 400


# --- the signing key ----------------------------------------------------------------------------------


def refused_start(database_url: str, key: str | None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "LANGLEARN_SECRET_KEY"}
    environment.update({"DATABASE_URL": database_url, **({"LANGLEARN_SECRET_KEY": key} if key is not None else {})})
    return subprocess.run(
        [sys.executable, "-m", "uvicorn", "--app-dir", "examples", "service.app:app", "--port", str(unused_port())],
        cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("key", [None, "too-short"], ids=["missing", "short"])
async def test_the_service_refuses_to_start_without_a_proper_key(seeded_module_db, key):
    run = refused_start(seeded_module_db, key)
    assert run.returncode != 0
    refusal = [line for line in run.stderr.splitlines() if "LANGLEARN_SECRET_KEY" in line]
    assert len(refusal) == 1 and "secrets.token_urlsafe(48)" in refusal[0], run.stderr
    assert "Traceback" not in run.stderr and "too-short" not in run.stderr


# --- last: the data is consistent after every write above ----------------------------------------------


async def test_zz_the_invariants_hold_after_the_writes(api, seeded_module_db, connect):
    assert await check_invariants(await connect(seeded_module_db)) == []
