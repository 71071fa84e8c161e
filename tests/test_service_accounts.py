"""Sign-in and registration under attack, over HTTP: the example service as deployed, two uvicorn workers.

Each request opens a new connection, so that either worker may answer it; which one does is the kernel's
choice (in practice one worker often takes a whole sequence), so the claim that what one process counted
another sees (the throttling's state is in PostgreSQL) is tested against a second instance of the
service on the same database, with the guesses alternating between the two and each one's CPU time
showing that it verified its share. The proxy address is trusted as uvicorn does by default
(`--forwarded-allow-ips 127.0.0.1`), so tests pose as clients by `X-Forwarded-For`.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.test_service import wait_until_up
from tests.test_startup import unused_port

KEY = "test-signing-key-" + "s" * 40  # >= 32 bytes; a test value, no secret
PASSWORD = "correct horse battery staple"
ADDRESS_ATTEMPTS = 8  # LANGLEARN_SIGNIN_ADDRESS_ATTEMPTS: small, so that the address test stays short
ACCOUNT_ATTEMPTS = 5  # the default
ADDRESSES = (f"198.51.100.{n}" for n in itertools.count(1))  # one fresh client address per test, below the address limit


@pytest.fixture(scope="module")
async def db(server, head_template):
    url = await server.create(template=head_template)
    yield url
    await server.drop(url)


def start(db: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = unused_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", "examples", "service.app:app", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--forwarded-allow-ips", "127.0.0.1", "--no-access-log"],
        cwd=REPO_ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "DATABASE_URL": db, "MIGRATE_ON_START": "check", "LANGLEARN_SECRET_KEY": KEY,
             "LANGLEARN_SIGNIN_ADDRESS_ATTEMPTS": str(ADDRESS_ATTEMPTS)},
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, url)
    return process, url


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    _, stderr = process.communicate(timeout=30)
    assert "Exception in ASGI application" not in stderr and PASSWORD not in stderr, stderr[-3000:]


@pytest.fixture(scope="module")
def service(db):
    """The service as deployed: two workers."""
    process, url = start(db, workers=2)
    yield process, url
    stop(process)


@pytest.fixture(scope="module")
def replica(db):
    """A second instance of the service on the same database, as another replica (or worker) would be."""
    process, url = start(db, workers=1)
    yield process, url
    stop(process)


@pytest.fixture(scope="module")
def base(service) -> str:
    return service[1]


def cpu_seconds(process: subprocess.Popen) -> float:
    """The CPU time a uvicorn server and its workers (its children) have used so far (Linux /proc)."""
    pids = [str(process.pid), *(Path("/proc") / str(process.pid) / "task" / str(process.pid) / "children").read_text().split()]
    ticks = os.sysconf("SC_CLK_TCK")
    used = 0.0
    for pid in pids:
        fields = (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
        used += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime: fields 14 and 15 of /proc/<pid>/stat
    return used


def call(base: str, method: str, path: str, **kwargs) -> httpx.Response:
    """One request on a connection of its own: either worker may take it."""
    with httpx.Client(base_url=base, timeout=30) as client:
        return client.request(method, path, **kwargs)


def register(base: str, password: str = PASSWORD, username: str | None = None) -> httpx.Response:
    email = f"acc-{uuid.uuid4().hex[:10]}@example.com"
    return call(base, "POST", "/auth/register", json={"email": email, "username": username or email.split("@")[0], "password": password})


def sign_in(base: str, email: str, password: str, address: str, device: str = "phone-1") -> httpx.Response:
    body = {"email": email, "password": password, "device_id": device, "device_type": "ios"}
    return call(base, "POST", "/auth/token", json=body, headers={"X-Forwarded-For": address})


def new_account(base: str) -> str:
    email = f"acc-{uuid.uuid4().hex[:10]}@example.com"
    registered = call(base, "POST", "/auth/register", json={"email": email, "username": email.split("@")[0], "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    return email


def me(base: str, tokens: dict) -> int:
    return call(base, "GET", "/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code


# --- throttling --------------------------------------------------------------------------------------


def test_an_account_gets_five_guesses_then_429_with_retry_after(base):
    email, address = new_account(base), next(ADDRESSES)
    guesses = [sign_in(base, email, f"guess {n}", address).status_code for n in range(ACCOUNT_ATTEMPTS)]
    throttled = sign_in(base, email, PASSWORD, address)  # even the right password waits: a guesser learns nothing
    assert guesses == [401] * ACCOUNT_ATTEMPTS
    assert throttled.status_code == 429, throttled.text
    assert throttled.json()["error"] == "throttled" and set(throttled.json()) == {"error", "detail"}
    assert 1 <= int(throttled.headers["Retry-After"]) <= 2


def test_the_limit_holds_across_instances_sharing_the_database(service, replica):
    """Which worker of one server takes a connection is the kernel's choice; two servers are two processes for sure.
    Guesses alternate between them, each verifies its share (its CPU shows it), and the sixth is refused."""
    (first, first_url), (second, second_url) = service, replica
    email, address = new_account(first_url), next(ADDRESSES)
    spent = {first.pid: cpu_seconds(first), second.pid: cpu_seconds(second)}
    guesses = [sign_in((first_url, second_url)[n % 2], email, f"guess {n}", address).status_code for n in range(ACCOUNT_ATTEMPTS)]
    spent = {pid: cpu_seconds(process) - spent[pid] for pid, process in ((first.pid, first), (second.pid, second))}
    assert guesses == [401] * ACCOUNT_ATTEMPTS
    assert all(seconds >= 0.1 for seconds in spent.values()), spent  # both verified passwords (argon2id: ~0.15 s each)
    for url in (first_url, second_url):
        assert sign_in(url, email, PASSWORD, address).status_code == 429


def test_an_unknown_email_answers_the_same_sequence_so_a_429_reveals_no_account(base):
    known, unknown = new_account(base), f"nobody-{uuid.uuid4().hex[:10]}@example.com"
    answers = {}
    for email in (known, unknown):
        address = next(ADDRESSES)  # each below the address limit
        answers[email] = [sign_in(base, email, "a wrong guess", address).status_code for _ in range(ACCOUNT_ATTEMPTS + 1)]
    assert answers[known] == answers[unknown] == [401] * ACCOUNT_ATTEMPTS + [429]


def test_one_address_spraying_accounts_is_throttled_and_another_address_is_not(base):
    sprayed = [sign_in(base, f"spray-{n}-{uuid.uuid4().hex[:6]}@example.com", "a wrong guess", "203.0.113.77").status_code
               for n in range(ADDRESS_ATTEMPTS + 1)]
    assert sprayed == [401] * ADDRESS_ATTEMPTS + [429]
    assert sign_in(base, "spray-0@example.com", "a wrong guess", "203.0.113.78").status_code == 401


def test_a_successful_sign_in_starts_the_account_afresh(base):
    email, address = new_account(base), next(ADDRESSES)
    assert [sign_in(base, email, "a wrong guess", address).status_code for _ in range(ACCOUNT_ATTEMPTS - 1)] == [401] * (ACCOUNT_ATTEMPTS - 1)
    assert sign_in(base, email, PASSWORD, address).status_code == 200
    assert [sign_in(base, email, "a wrong guess", address).status_code for _ in range(ACCOUNT_ATTEMPTS - 1)] == [401] * (ACCOUNT_ATTEMPTS - 1)


async def test_an_address_that_is_no_ip_literal_signs_in_and_is_stored_as_null(base, db, connect):
    email = new_account(base)
    signed_in = sign_in(base, email, PASSWORD, "not-an-address")
    assert signed_in.status_code == 200, signed_in.text
    assert await (await connect(db)).fetchval("SELECT last_login_ip FROM users WHERE email = $1", email) is None


# --- registration ------------------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["password", "12345678"])
def test_a_common_password_is_refused_with_a_clear_message(base, password):
    refused = register(base, password)
    assert refused.status_code == 400, refused.text
    assert refused.json() == {"error": "invalid_request",
                              "detail": "password refused: This is a top-10 common password; choose a longer one, e.g. a few unrelated words"}


def test_a_look_alike_of_a_taken_username_is_409(base):
    name = f"kate{uuid.uuid4().hex[:6]}"
    assert register(base, username=name).status_code == 201
    for look_alike in (name.upper(), "\u212a" + name[1:], "".join(chr(ord(c) + 0xFEE0) for c in name)):  # KELVIN SIGN, fullwidth
        taken = register(base, username=look_alike)
        assert (taken.status_code, taken.json()["error"]) == (409, "taken"), look_alike
    mixed = register(base, username="k\u0430te" + name[4:])  # a Cyrillic а among Latin letters
    assert mixed.status_code == 400 and "mixes scripts" in mixed.json()["detail"]


# --- access tokens end with their session --------------------------------------------------------------


def test_logout_ends_the_access_tokens_of_the_device_at_once_and_a_rotation_does_not(base):
    email, address = new_account(base), next(ADDRESSES)
    first = sign_in(base, email, PASSWORD, address).json()
    laptop = sign_in(base, email, PASSWORD, address, device="laptop").json()
    rotated = call(base, "POST", "/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    assert me(base, first) == me(base, rotated) == 200  # a rotation keeps the previous access token until it expires
    assert call(base, "POST", "/auth/logout", json={"refresh_token": rotated["refresh_token"]}).status_code == 204
    assert me(base, first) == me(base, rotated) == 401
    assert me(base, laptop) == 200  # another device's session is untouched


def test_a_new_sign_in_on_the_device_and_a_reused_refresh_token_end_earlier_access_tokens(base):
    email, address = new_account(base), next(ADDRESSES)
    before = sign_in(base, email, PASSWORD, address).json()
    again = sign_in(base, email, PASSWORD, address).json()  # the same device: its earlier chain is revoked
    assert (me(base, before), me(base, again)) == (401, 200)
    rotated = call(base, "POST", "/auth/refresh", json={"refresh_token": again["refresh_token"]}).json()
    reused = call(base, "POST", "/auth/refresh", json={"refresh_token": again["refresh_token"]})
    assert reused.json()["error"] == "token_reused"
    assert (me(base, again), me(base, rotated)) == (401, 401)
    ended = call(base, "GET", "/me", headers={"Authorization": f"Bearer {rotated['access_token']}"})
    assert ended.json() == {"error": "unauthorized", "detail": "the access token's session has ended (logged out or revoked); sign in again"}


# --- configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "five"])
def test_the_service_refuses_to_start_with_a_bad_throttling_setting_in_one_line(db, value):
    run = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--app-dir", "examples", "service.app:app", "--port", str(unused_port())],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": db, "LANGLEARN_SECRET_KEY": KEY, "LANGLEARN_SIGNIN_ACCOUNT_ATTEMPTS": value},
    )
    assert run.returncode != 0
    refusal = [line for line in run.stderr.splitlines() if "LANGLEARN_SIGNIN_ACCOUNT_ATTEMPTS" in line]
    assert len(refusal) == 1 and "is not a positive whole number; unset it for 5" in refusal[0], run.stderr
    assert "Traceback" not in run.stderr
