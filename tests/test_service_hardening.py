"""The example service refuses hostile input without a 500 or a leak, against a real uvicorn process (issue 21).

One service (started by its runner, `python -m service`, as documented) on a clone of the demo seed,
its output in a file: the module ends by checking that no password sent to it reached that log.
A second, started with the defaults of a deployment, shows what a stranger sees.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_service import OPERATOR, WITH_SCHEMA, serving, start_service
from tests.test_startup import unused_port

PASSWORD = "hardening-password-5f3a9c"  # every refusal below carries it; the log must never show it
MAX_BODY_BYTES = 256 * 1024  # the documented default of SERVICE_MAX_BODY_BYTES
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture(scope="module")
def service_log(tmp_path_factory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("hardening") / "service.log"
    with open(path, "w") as log:
        yield log  # type: ignore[misc]


@pytest.fixture(scope="module")
def api(seeded_module_db, service_log):
    with serving(seeded_module_db, env=WITH_SCHEMA, log=service_log) as client:
        yield client
    output = Path(service_log.name).read_text()
    assert "Application shutdown complete." in output, output
    assert "Exception in ASGI application" not in output, output  # no 500 on the way
    assert PASSWORD not in output, output  # no refusal path wrote the password into the log


@pytest.fixture(scope="module")
def token(api) -> str:
    email = f"hardening-{uuid.uuid4().hex[:8]}@example.com"
    assert api.post("/auth/register", json={"email": email, "username": email.split("@")[0], "password": PASSWORD}).status_code == 201
    signed_in = api.post("/auth/token", json={"email": email, "password": PASSWORD, "device_id": "d", "device_type": "web"})
    assert signed_in.status_code == 200, signed_in.text
    return str(signed_in.json()["access_token"])


@pytest.fixture(scope="module")
def document(api) -> dict:
    return dict(api.get("/openapi.json").json())


def concrete(path: str) -> str:
    """A path of the document with its parameters filled (any UUID; a league that exists)."""
    return path.replace("{league}", "bronze").replace("{course_id}", str(uuid.uuid4())).replace("{lesson_id}", str(uuid.uuid4())) \
        .replace("{shop_item_id}", str(uuid.uuid4())).replace("{user_id}", str(uuid.uuid4()))


# --- finding 2: bodies JSON cannot hold, and what a 422 says ---------------------------------------------

# Python's json reads each of these; JSON (or PostgreSQL text) cannot hold them. The password rides along.
NOT_JSON = {
    "NaN": '{"password": "%s", "quantity": NaN}',
    "Infinity": '{"password": "%s", "quality": Infinity}',
    "-Infinity": '{"password": "%s", "quality": -Infinity}',
    "a float overflowing to infinity": '{"password": "%s", "quality": 1e400}',
    "a lone surrogate in a value": '{"password": "%s\\ud800"}',
    "a lone surrogate in a key": '{"password": "%s", "\\udfff": 1}',
    "NUL in a nested value": '{"password": "%s", "answers": [{"answer": "a\\u0000b"}]}',
    "NUL in a key": '{"password": "%s", "\\u0000": 1}',
}


@pytest.mark.parametrize("what", NOT_JSON)
def test_every_json_route_refuses_what_json_cannot_hold_with_422(api, document, token, what):
    body = NOT_JSON[what] % PASSWORD
    routes = [(method.upper(), path) for path, operations in document["paths"].items() for method, operation in operations.items()
              if "requestBody" in operation]
    assert len(routes) >= 7  # register, token, refresh, logout, attempts, reviews, purchases
    for method, path in routes:
        for credentials in ({}, {"Authorization": f"Bearer {token}"}):
            response = api.request(method, concrete(path), content=body,
                                   headers={"content-type": "application/json", "Idempotency-Key": "k", **credentials})
            assert response.status_code == 422, (what, path, response.text)
            [problem] = response.json()["detail"]
            assert response.json()["error"] == "invalid_request" and problem["type"] == "json_invalid", response.text
            assert PASSWORD not in response.text


def test_a_valid_surrogate_pair_is_still_accepted(api):
    """Only a lone surrogate is refused: an escaped pair is one character (here U+1F600), as JSON says."""
    response = api.post("/auth/register", content='{"email": "x@example.com", "username": "\\ud83d\\ude00", "password": "' + PASSWORD + '"}',
                        headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "username"]  # the pattern's refusal, not the parser's


def test_a_validation_error_names_the_field_and_the_problem_never_the_value(api):
    response = api.post("/auth/register", json={"email": "not an email", "username": "ok-name", "password": PASSWORD * 100})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert {tuple(problem["loc"]) for problem in detail} == {("body", "email"), ("body", "password")}
    assert all(set(problem) == {"loc", "msg", "type"} for problem in detail), detail  # no `input`, no `ctx`
    assert PASSWORD not in response.text and "not an email" not in response.text
    assert len(response.content) < 1000  # a long value does not come back

    uuid_refused = api.get("/courses/s3cret-not-a-uuid")
    assert uuid_refused.json()["detail"] == [{"loc": ["path", "course_id"], "msg": "Input should be a valid UUID", "type": "uuid_parsing"}]

    extra = api.post("/auth/register", json={"email": "x@example.com", "username": "ok-name", "password": PASSWORD, "is_admin": True})
    assert (extra.status_code, [problem["loc"] for problem in extra.json()["detail"]]) == (422, [["body", "is_admin"]])  # no field slips through


def test_a_body_that_is_not_json_is_422_without_echo(api):
    response = api.post("/auth/token", content='{"email": "a@b.co", "password": "' + PASSWORD + '"', headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["detail"][0]["type"]) == (422, "json_invalid")
    assert PASSWORD not in response.text


def test_a_body_over_the_limit_is_413_declared_or_chunked_and_one_under_it_is_read(api):
    oversized = b'{"password": "' + PASSWORD.encode() + b'", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    declared = api.post("/auth/register", content=oversized, headers={"content-type": "application/json"})
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts the bytes as they come
        for start in range(0, len(oversized), 16 * 1024):
            yield oversized[start:start + 16 * 1024]

    chunked = api.post("/auth/register", content=chunks(), headers={"content-type": "application/json"})
    assert (chunked.status_code, chunked.json()["error"]) == (413, "too_large")

    under = b'{"password": "' + PASSWORD.encode() + b'", "pad": "' + b"x" * (MAX_BODY_BYTES - 200) + b'"}'
    assert api.post("/auth/register", content=under, headers={"content-type": "application/json"}).status_code == 422  # read: no email


def test_no_refusal_writes_the_password_into_the_log(api, service_log):
    """Each way a password can be refused; before, a NaN or a lone surrogate made a 500 whose traceback quoted the field."""
    sign_in = {"email": "nobody@example.com", "password": PASSWORD, "device_id": "d", "device_type": "ios"}
    as_json = {"content-type": "application/json"}
    refusals = {
        "wrong credentials": api.post("/auth/token", json=sign_in),
        "validation": api.post("/auth/token", json={**sign_in, "device_type": "pc"}),
        "not JSON": api.post("/auth/token", content='{"password": "' + PASSWORD + '"', headers=as_json),
        "NaN": api.post("/auth/token", content='{"password": "' + PASSWORD + '", "device_id": NaN}', headers=as_json),
        "lone surrogate": api.post("/auth/token", content='{"email": "a@b.co", "password": "' + PASSWORD + '\\ud800"}', headers=as_json),
        "NUL": api.post("/auth/register", content='{"email": "a@b.co", "username": "abc", "password": "' + PASSWORD + '\\u0000"}', headers=as_json),
        "too large": api.post("/auth/register", content=PASSWORD * (MAX_BODY_BYTES // len(PASSWORD) + 1), headers=as_json),
    }
    assert {what: response.status_code for what, response in refusals.items()} == {
        "wrong credentials": 401, "validation": 422, "not JSON": 422, "NaN": 422, "lone surrogate": 422, "NUL": 422, "too large": 413,
    }
    assert not [what for what, response in refusals.items() if PASSWORD in response.text]
    assert PASSWORD not in Path(service_log.name).read_text()


# --- finding 3: private data only to its owner; unpublished courses hidden --------------------------------


async def test_due_reviews_are_only_the_bearers_own(api, seeded_module_db, connect, token):
    someone = await (await connect(seeded_module_db)).fetchval("SELECT user_id::text FROM user_vocab_knowledge LIMIT 1")
    assert api.get(f"/users/{someone}/reviews/due").status_code == 404  # the public route is gone
    assert api.get("/me/reviews/due").status_code == 401
    mine = api.get("/me/reviews/due", headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 200 and mine.json()["due"] == 0 and mine.json()["user_id"] != someone


async def test_an_unpublished_course_is_404(api, seeded_module_db, connect):
    conn = await connect(seeded_module_db)
    course = await conn.fetchval("SELECT id FROM courses WHERE is_published ORDER BY id LIMIT 1")
    assert api.get(f"/courses/{course}").status_code == 200
    await conn.execute("UPDATE courses SET is_published = false WHERE id = $1", course)
    try:
        hidden = api.get(f"/courses/{course}")
        assert (hidden.status_code, hidden.json()["error"]) == (404, "not_found")
    finally:
        await conn.execute("UPDATE courses SET is_published = true WHERE id = $1", course)


# --- finding 6: crafted cursors, and Allow on every 405 ---------------------------------------------------


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


NASTY_CURSORS = [
    cursor("9999-12-31T23:59:59-23:59|1"),  # past year 9999 once in UTC
    cursor("0001-01-01T00:00:00+23:59|1"),  # before year 1 once in UTC
    cursor("9999-12-31T23:59:59.999999-00:01|00000000-0000-0000-0000-000000000000"),
    cursor("2026-01-01T00:00:00+00:00|" + "9" * 110),  # as long as `before` may be
    cursor("2026-01-01T00:00:00+00:00|99999999999999999999"),  # past bigint
    cursor("2026-01-01T00:00:00+00:00|-1"),
    cursor("2026-01-01T00:00:00|1"),  # no zone
    cursor("2026-01-01T00:00:00+00:00|1|2"),
    "%ED%A0%80", "====", "\u00e9\u00e9", "a" * 200,
]


@pytest.mark.parametrize("route", ["/me/wallet", "/me/feed"])
def test_a_crafted_cursor_is_400(api, token, route):
    for before in NASTY_CURSORS:
        response = api.get(route, params={"before": before}, headers={"Authorization": f"Bearer {token}"})
        assert (response.status_code, response.json()["error"]) == (400, "invalid_request"), (before, response.text)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    moment=st.datetimes(timezones=st.timezones() | st.just(None)).map(lambda at: at.isoformat())
    | st.datetimes(min_value=datetime(9999, 12, 31)).map(lambda at: at.isoformat())  # the calendar's ends, an offset added below
    | st.datetimes(max_value=datetime(1, 1, 1, 23, 59)).map(lambda at: at.isoformat())
    | st.text(max_size=40),
    offset=st.integers(-1439, 1439),
    tie=st.integers(-(2**70), 2**70).map(str) | st.uuids().map(str) | st.text(max_size=40),
)
def test_any_cursor_is_a_page_or_400_never_a_500(api, token, moment, offset, tie):
    """Fuzzed cursors (hypothesis): any time, zone and tie-break encoded as the API does."""
    if moment[-6:-5] in ("+", "-") or moment.endswith("Z"):
        moment_with_offset = moment
    else:
        sign, minutes = ("+" if offset >= 0 else "-"), abs(offset)
        moment_with_offset = f"{moment}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    for route in ("/me/wallet", "/me/feed"):
        response = api.get(route, params={"before": cursor(f"{moment_with_offset}|{tie}")}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code in (200, 400), (moment_with_offset, tie, response.text)


def test_every_405_lists_the_methods_of_its_path_in_allow(api, document):
    checked = 0
    for path, operations in document["paths"].items():
        allowed = ", ".join(sorted(method.upper() for method in operations))
        for method in METHODS:
            if method.lower() in operations:
                continue
            response = api.request(method, concrete(path))
            assert response.status_code == 405, (method, path)
            assert response.headers["Allow"] == allowed, (method, path, response.headers.get("Allow"))
            assert response.json()["error"] == "method_not_allowed"
            checked += 1
    assert checked > 40


# --- finding 7: what a stranger learns; whose address is recorded -----------------------------------------


@pytest.fixture(scope="module")
def deployed(seeded_module_db):
    """The service with a deployment's defaults: no SERVICE_OPENAPI, no FORWARDED_ALLOW_IPS (an operator token is set)."""
    with serving(seeded_module_db) as client:
        yield client


def test_the_schema_and_its_browsers_are_off_by_default(deployed, api):
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        assert deployed.get(path).status_code == 404, path
        assert api.get(path).status_code == 200, path  # SERVICE_OPENAPI=1


def test_no_server_banner(deployed):
    for response in (deployed.get("/health"), deployed.get("/nowhere"), deployed.post("/health")):
        assert "server" not in response.headers, response.headers


def test_health_tells_a_stranger_only_the_status(deployed):
    anonymous = deployed.get("/health")
    assert anonymous.json() == {"status": "ok"}
    assert deployed.get("/health", headers={"X-Operator-Token": "guess-" * 8}).json() == {"status": "ok"}
    assert deployed.get("/health", headers={"X-Operator-Token": "\u00e9".encode("latin-1")}).json() == {"status": "ok"}
    operator = deployed.get("/health", headers=OPERATOR).json()
    assert operator["status"] == "ok" and operator["version"] == operator["head"] and operator["pending"] == 0


async def test_x_forwarded_for_is_believed_only_from_a_configured_proxy(deployed, seeded_module_db, connect):
    conn = await connect(seeded_module_db)

    def signed_in_from(client: httpx.Client, forwarded: str) -> str:
        email = f"proxy-{uuid.uuid4().hex[:8]}@example.com"
        assert client.post("/auth/register", json={"email": email, "username": email.split("@")[0], "password": PASSWORD}).status_code == 201
        response = client.post("/auth/token", json={"email": email, "password": PASSWORD, "device_id": "d", "device_type": "web"},
                               headers={"X-Forwarded-For": forwarded})
        assert response.status_code == 200, response.text
        return email

    def recorded_address(email: str) -> Coroutine[Any, Any, str | None]:
        return conn.fetchval("SELECT last_login_ip FROM users WHERE email = $1", email)

    assert await recorded_address(signed_in_from(deployed, "203.0.113.7")) == "127.0.0.1"  # a client's claim, not believed

    with serving(seeded_module_db, env={"FORWARDED_ALLOW_IPS": "127.0.0.1"}) as proxied:
        email = signed_in_from(proxied, "203.0.113.7")
    assert await recorded_address(email) == "203.0.113.7"  # the configured proxy's word


# --- the knobs ------------------------------------------------------------------------------------------


def test_the_body_limit_is_configurable(seeded_module_db):
    with serving(seeded_module_db, env={"SERVICE_MAX_BODY_BYTES": "2048"}) as client:
        body = {"email": "x@example.com", "username": "x", "password": "p" * 1500}
        assert client.post("/auth/register", json=body).status_code == 422  # under 2048: read
        body["password"] = "p" * 2100
        assert client.post("/auth/register", json=body).status_code == 413


@pytest.mark.parametrize(("variable", "value", "named"), [
    ("SERVICE_MAX_BODY_BYTES", "256k", "SERVICE_MAX_BODY_BYTES='256k' is not a positive whole number"),
    ("SERVICE_OPENAPI", "maybe", "SERVICE_OPENAPI='maybe' is neither on nor off"),
    ("LANGLEARN_OPERATOR_TOKEN", "short-operator-token", "LANGLEARN_OPERATOR_TOKEN is shorter than 32 bytes"),
])
def test_a_bad_knob_stops_the_runner_with_one_line(seeded_module_db, variable, value, named):
    process = start_service(seeded_module_db, unused_port(), env={variable: value})
    output, errors = process.communicate(timeout=60)
    assert process.returncode == 1
    assert errors.strip().splitlines() == [errors.strip()] and named in errors and "Traceback" not in errors, errors
    assert variable != "LANGLEARN_OPERATOR_TOKEN" or value not in errors  # a secret is never repeated
