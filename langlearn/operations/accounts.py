"""Accounts: register, sign in, rotate refresh tokens per device with reuse detection, log out.

Passwords are argon2id hashes (argon2-cffi's defaults, RFC 9106's low-memory profile, the seed's
parameters too). Hashing and verifying are slow on purpose (~0.15 s of one core), so they run in this
process's `HASHING` pool: `HASHING_SLOTS` threads at a lower scheduling priority (`HASHING_NICENESS`),
at most `HASHING_QUEUE` more jobs waiting, none longer than `HASHING_MAX_WAIT`; past that `Busy` (503
with `Retry-After`). A flood of sign-ins, which needs no account, so takes at most those cores, and
only what the event loop's requests leave of them.

A new password is refused when zxcvbn (whose lists include the most common breached passwords) rates
it guessable in fewer than 10^6 guesses, or it is built on the email or username (NIST SP 800-63B's
blocklist check); it is checked in the pool, before it is hashed.

Sign-in is throttled per account and per client address (`langlearn.operations.throttle`, state in
PostgreSQL): a throttled attempt is refused before any hashing (`SignInThrottled`, 429).

A username is a handle stored in its canonical form: NFKC, case folded, NFKC again (Unicode's
NFKC_Casefold), so the UNIQUE constraint compares exactly what Python compares: `Ｂｏｂ`, `BOB` and
`bob` are one name, and so are a KELVIN SIGN `K` and `k`. Whoever else writes users, the database
refuses a username that is not NFKC-normalised (a CHECK) and one equal to another but for case (the
unique index on lower(username)). A name mixing scripts beyond what UTS #39's "highly restrictive"
level allows (Latin with a Cyrillic `а`, say) is refused: it exists to look like another.

Refresh tokens are random (`secrets.token_urlsafe(32)`, 256 bits), returned once in plaintext and
stored only as their SHA-256 hex digest. Each token is single-use: `refresh` marks it used and
issues its successor on the same device; presenting a used token again means two parties hold it,
so the device's whole chain is revoked (`TokenReused`).

Every change to a device's tokens (sign-in, refresh, reuse revocation, logout) first locks the
device row, so they serialise per device: a revocation cannot miss a successor that a concurrent
refresh is about to insert.

A device has one live chain: signing in again on a device revokes its earlier tokens. Logout
revokes the device's chain and is idempotent: an unknown, expired or already revoked token is
simply nothing to revoke (it reveals nothing either way).

Registration also creates the user's wallet and streak rows: every seeded user has both, the wallet
operations lock the wallet row, and the invariants read them per user. The welcome gems are paid in
the same transaction (one ledger entry, server key `welcome_bonus:signup`): an account exists with
its gems or not at all.

An access token names the refresh token it was issued with (`Session.token_id`); the service's
per-request check refuses it once that token is revoked (logout, reuse detection, a new sign-in on
the device), while a token only used by a rotation keeps its access tokens valid until they expire.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from functools import cache
from typing import Any, TypeVar
from uuid import UUID

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from confusable_homoglyphs import categories
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction
from zxcvbn import zxcvbn

from langlearn import rules
from langlearn.models.enums import DeviceType
from langlearn.models.users import User
from langlearn.operations import throttle, wallet
from langlearn.operations.errors import Busy, InvalidCredentials, InvalidRequest, Taken, TokenInvalid, TokenReused
from langlearn.operations.throttle import Throttling
from langlearn.routing import PRIMARY, write_operation

# argon2id with argon2-cffi's defaults (t=3, m=64 MiB, p=4): the seed's hashes have the same parameters.
# Changing them here makes `sign_in` rehash each account at its next successful sign-in.
HASHER = PasswordHasher()
REFRESH_TOKEN_LIFETIME = timedelta(days=30)  # the seed's TOKEN_LIFETIME
TOKEN_BYTES = 32

EMAIL_MAX, USERNAME_MAX, DEVICE_ID_MAX, DEVICE_NAME_MAX = 255, 50, 255, 100  # the columns' lengths
PASSWORD_MIN, PASSWORD_MAX = 8, 1024  # the upper bound only caps what one request makes us hash
PASSWORD_MIN_SCORE = 2  # zxcvbn's scale: 0-1 fall to fewer than 10^6 guesses (the common-password lists, their variants)
PASSWORD_CHECKED_PREFIX = 72  # zxcvbn's own bound on the work it does: longer passwords are rated by their start
EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
USERNAME_SHAPE = re.compile(r"[\w.-]{3,50}")  # \w is Unicode: Vietnamese letters are fine
# UTS #39's "highly restrictive" level: one script, or one of these mixes (scripts written together); digits,
# punctuation and combining marks (COMMON, INHERITED) go with any
SCRIPT_MIXES = ({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}, {"LATIN", "HAN", "BOPOMOFO"}, {"LATIN", "HAN", "HANGUL"})
ANY_SCRIPT = {"COMMON", "INHERITED"}

HASHING_SLOTS = 1  # argon2id hashes at once per process (each takes one core for ~0.15 s)
HASHING_NICENESS = 10  # the hashing threads' nice value (Linux): the event loop's requests go first when cores are short
HASHING_QUEUE = 32  # more waiting; past that Busy at once
HASHING_MAX_WAIT = timedelta(seconds=5)  # a job that waited longer for its slot is Busy, not hashed: its client may be gone
BUSY_RETRY_AFTER_SECONDS = 1
WELCOME_SOURCE = "welcome_bonus"
WELCOME_KEY = wallet.server_key(WELCOME_SOURCE, "signup")  # `welcome_bonus:signup`: in the server's key space, no client key has ':'

CREDENTIALS_MESSAGE = "wrong email or password"
TOKEN_INVALID_MESSAGE = "the refresh token is unknown, expired or revoked; sign in again"
TOKEN_REUSED_MESSAGE = "the refresh token was already used; every session of this device is revoked, sign in again"


T = TypeVar("T")


class HashingPool:
    """At most `slots` jobs at once in this process, at most `queue` more waiting, none waiting longer than
    `max_wait`; a job past either bound is `Busy`.

    The admission is counted until the job *ends* (not until its caller stops waiting), so a cancelled
    request cannot let more hashes run than the bound; a job whose wait outlasted `max_wait` ends without
    running (its request has likely timed out: hashing for nobody would only lengthen the queue)."""

    def __init__(self, slots: int, queue: int, max_wait: timedelta = HASHING_MAX_WAIT) -> None:
        self._executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="password-hashing", initializer=_yield_to_requests)
        self._admission = threading.BoundedSemaphore(slots + queue)
        self._max_wait = max_wait.total_seconds()

    async def run(self, job: Callable[..., T], *args: Any) -> T:
        if not self._admission.acquire(blocking=False):
            raise _busy()
        try:
            future = self._executor.submit(self._unless_stale, time.monotonic(), job, *args)
        except BaseException:
            self._admission.release()
            raise
        future.add_done_callback(lambda _: self._admission.release())
        return await asyncio.wrap_future(future)

    def _unless_stale(self, submitted: float, job: Callable[..., T], *args: Any) -> T:
        if time.monotonic() - submitted > self._max_wait:
            raise _busy()
        return job(*args)


def _busy() -> Busy:
    return Busy("too many sign-ins or sign-ups at once; retry in a moment", retry_after=BUSY_RETRY_AFTER_SECONDS)


def _yield_to_requests() -> None:
    """Lower this hashing thread's scheduling priority (Linux schedules threads one by one), so that a flood of
    sign-ins takes only the CPU other requests leave. Elsewhere, or where it is not allowed, nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)
    except (AttributeError, OSError):
        pass


HASHING = HashingPool(HASHING_SLOTS, HASHING_QUEUE)


@dataclass(frozen=True)
class RegisteredUser:
    user_id: UUID
    username: str  # as stored: its canonical form
    gems: int  # the welcome gems paid
    lsn: str | None = field(default=None, compare=False)  # read-your-writes token (langlearn.routing), with standbys


@dataclass(frozen=True)
class Session:
    """A signed-in device: `refresh_token` is the only copy of the token's plaintext (kept out of repr)."""

    user_id: UUID
    device: UUID  # the user_devices row
    token_id: UUID  # the refresh_tokens row: what an access token names, so that revoking it ends them
    refresh_token: str = field(repr=False)
    refresh_expires_at: datetime
    device_type: str  # ios, android or web: what a lesson attempt records
    lsn: str | None = field(default=None, compare=False)  # read-your-writes token (langlearn.routing), with standbys


@dataclass(frozen=True)
class LoggedOut:
    revoked: int  # tokens revoked now; 0 when there was nothing left to revoke
    lsn: str | None = field(default=None, compare=False)  # read-your-writes token (langlearn.routing), with standbys


# --- helpers -----------------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    """What refresh_tokens.token_hash stores for a token: its SHA-256, in lower-case hex."""
    return hashlib.sha256(token.encode()).hexdigest()


@cache
def _dummy_hash() -> str:
    """A hash of nobody's secret with the current parameters: verified against when the email is unknown."""
    return HASHER.hash(secrets.token_bytes(TOKEN_BYTES))


def _verify(stored: str, password: str) -> bool:
    try:
        return HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):  # a mismatch, or a stored value that is no argon2 hash
        return False


def _normalised_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > EMAIL_MAX or not EMAIL_SHAPE.fullmatch(email):
        raise InvalidRequest(f"email must look like name@example.com, at most {EMAIL_MAX} characters")
    return email


def _check_password_length(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidRequest(f"password must have {PASSWORD_MIN} to {PASSWORD_MAX} characters")


def check_password_strength(password: str, context: list[str]) -> None:
    """Refuse a guessable password: a common or breached one, a keyboard walk, a repetition, one built on
    `context` (the email, the username). The message says why (zxcvbn's warning) and never the password."""
    rating = zxcvbn(password[:PASSWORD_CHECKED_PREFIX], user_inputs=context)
    if rating["score"] < PASSWORD_MIN_SCORE:
        why = rating["feedback"]["warning"] or "it is too easy to guess"
        raise InvalidRequest(f"password refused: {why.rstrip('.')}; choose a longer one, e.g. a few unrelated words")


def _hash_new_password(password: str, context: list[str]) -> str:
    """Checked, then hashed: one job of the hashing pool (the check is CPU work too)."""
    check_password_strength(password, context)
    return HASHER.hash(password)


def canonical_username(username: str) -> str:
    """NFKC, case folded, NFKC again (Unicode's NFKC_Casefold): what two usernames are compared by, and stored as."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username.strip()).casefold())


def _checked_username(username: str) -> str:
    canonical = canonical_username(username)
    if not USERNAME_SHAPE.fullmatch(canonical) or canonical != canonical.lower():  # lower(): the database's CHECK
        raise InvalidRequest(f"username must have 3 to {USERNAME_MAX} letters, digits, '.', '_' or '-'")
    scripts = {categories.aliases_categories(character)[0] for character in canonical} - ANY_SCRIPT
    if len(scripts) > 1 and not any(scripts <= mix for mix in SCRIPT_MIXES):
        raise InvalidRequest(f"username mixes scripts ({', '.join(sorted(script.title() for script in scripts))}); write it in one")
    return canonical


def _device_type(device_type: DeviceType | str) -> DeviceType:
    try:
        return DeviceType(device_type)
    except ValueError:
        raise InvalidRequest(f"device_type must be one of {', '.join(t.value for t in DeviceType)}") from None


def _ip(ip: str | None) -> str | None:
    """The address as stored; None for none, or for anything that is no IP literal (a proxy's header is the
    client's to write: it may name nobody, and it must not fail the sign-in)."""
    if ip is None:
        return None
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        return None


def _value(value: Enum | str) -> str:
    return value.value if isinstance(value, Enum) else value


# --- register ----------------------------------------------------------------------------------------

INSERT_USER = "INSERT INTO users (email, username, hashed_password) VALUES ($1, $2, $3) RETURNING id"
CREATE_WALLET = "INSERT INTO user_wallets (user_id) VALUES ($1) RETURNING id"


@write_operation
async def register(email: str, username: str, password: str, *, welcome_gems: int = rules.WELCOME_GEMS) -> RegisteredUser:
    """A new local account with its wallet, its streak row and its welcome gems, in one transaction.

    `Taken` names the email or the username (compared in canonical form, see the module docstring);
    the unique constraints decide, so two racing registrations cannot both win. The wallet is new and
    this transaction's own, so the welcome entry needs no wallet lock."""
    email = _normalised_email(email)
    username = _checked_username(username)
    _check_password_length(password)
    hashed = await HASHING.run(_hash_new_password, password, [email, email.split("@")[0], username])
    try:
        async with in_transaction(PRIMARY) as connection:
            rows = await connection.execute_query_dict(INSERT_USER, [email, username, hashed])
            user_id: UUID = rows[0]["id"]
            wallet_id = (await connection.execute_query_dict(CREATE_WALLET, [user_id]))[0]["id"]
            await connection.execute_query("INSERT INTO streaks (user_id) VALUES ($1)", [user_id])
            if welcome_gems:
                await connection.execute_query_dict(wallet.WRITE_ENTRY, [
                    wallet_id, user_id, "earn", welcome_gems, welcome_gems, WELCOME_SOURCE, None, WELCOME_KEY, "Welcome gems", None,
                ])
    except IntegrityError as error:
        constraint = getattr(error.__cause__, "constraint_name", None) or ""
        if "email" in constraint:
            raise Taken("that email is already registered") from None
        if "username" in constraint:
            raise Taken("that username is taken (usernames are compared without case, width or compatibility forms)") from None
        raise
    return RegisteredUser(user_id, username, welcome_gems)


# --- sign in -----------------------------------------------------------------------------------------

# Conditional on the hash we verified: a password changed meanwhile makes this sign-in fail.
SIGNED_IN = """
UPDATE users SET last_login_at = now(), last_login_ip = $2, hashed_password = $3, updated_at = now()
WHERE id = $1 AND is_active AND hashed_password = $4 RETURNING id
"""
# Also the device row's lock for the rest of the transaction (see the module's docstring).
UPSERT_DEVICE = """
INSERT INTO user_devices (user_id, device_id, device_type, device_name) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, device_id) DO UPDATE
SET last_active_at = now(), device_type = EXCLUDED.device_type, device_name = COALESCE(EXCLUDED.device_name, user_devices.device_name)
RETURNING id
"""
REVOKE_DEVICE = "UPDATE refresh_tokens SET is_revoked = true, revoked_at = now() WHERE device_id = $1 AND NOT is_revoked RETURNING id"
ISSUE_TOKEN = """
INSERT INTO refresh_tokens (user_id, device_id, token_hash, expires_at) VALUES ($1, $2, $3, now() + $4::interval) RETURNING id, expires_at
"""
DEFAULT_THROTTLING = Throttling()


@write_operation
async def sign_in(
    email: str, password: str, device_id: str, device_type: DeviceType | str, *, ip: str | None = None, device_name: str | None = None,
    throttling: Throttling = DEFAULT_THROTTLING,
) -> Session:
    """Verify the password and open a session on the device (created on its first sign-in).

    A wrong password, an unknown email and a disabled account give the same `InvalidCredentials`
    after the same work: an unknown email is verified against a dummy hash. A hash made with
    other parameters than `HASHER`'s is replaced by a current one. `SignInThrottled` before any hashing
    while the account or the address is blocked (unknown emails alike); `Busy` when the hashing
    pool is full. `ip` is stored as `last_login_ip` when it is an IP literal, else NULL."""
    kind = _device_type(device_type)
    address = _ip(ip)
    if not device_id or len(device_id) > DEVICE_ID_MAX:
        raise InvalidRequest(f"device_id must have 1 to {DEVICE_ID_MAX} characters")
    if device_name is not None and len(device_name) > DEVICE_NAME_MAX:
        raise InvalidRequest(f"device_name must have at most {DEVICE_NAME_MAX} characters")
    email = email.strip().lower()
    keys = throttle.keys_for(email, address)
    await throttle.admit(keys, throttling)
    try:
        # Read outside the transaction: no connection is held while the slow verification runs.
        found = await User.filter(email=email, is_active=True).first().values_list("id", "hashed_password") if len(email) <= EMAIL_MAX else None
        stored: str = found[1] if found else await HASHING.run(_dummy_hash)
        verified = await HASHING.run(_verify, stored, password)
        current = await HASHING.run(HASHER.hash, password) if verified and HASHER.check_needs_rehash(stored) else stored
    except Busy:
        await throttle.uncount(keys)  # never judged: a flood must not lock its victims' accounts
        raise
    if not verified or not found:
        raise InvalidCredentials(CREDENTIALS_MESSAGE)
    user_id: UUID = found[0]

    token = secrets.token_urlsafe(TOKEN_BYTES)
    async with in_transaction(PRIMARY) as connection:
        if not await connection.execute_query_dict(SIGNED_IN, [user_id, address, current, stored]):
            raise InvalidCredentials(CREDENTIALS_MESSAGE)  # disabled, or the password changed, meanwhile
        device: UUID = (await connection.execute_query_dict(UPSERT_DEVICE, [user_id, device_id, kind.value, device_name]))[0]["id"]
        await connection.execute_query_dict(REVOKE_DEVICE, [device])  # one live chain per device
        issued = await connection.execute_query_dict(ISSUE_TOKEN, [user_id, device, token_hash(token), REFRESH_TOKEN_LIFETIME])
        await throttle.forgive(connection, keys)
    return Session(user_id, device, issued[0]["id"], token, issued[0]["expires_at"], kind.value)


# --- refresh -----------------------------------------------------------------------------------------

FIND_TOKEN = "SELECT user_id, device_id, is_used FROM refresh_tokens WHERE token_hash = $1"
LOCK_DEVICE = "SELECT id FROM user_devices WHERE id = $1 FOR NO KEY UPDATE"
# The whole check-and-use in one statement: of two concurrent calls, the second waits for the
# first's row lock, re-reads the row (now used) and matches nothing.
USE_TOKEN = """
UPDATE refresh_tokens t SET is_used = true
WHERE token_hash = $1 AND NOT is_used AND NOT is_revoked AND expires_at > now()
  AND EXISTS (SELECT 1 FROM users u WHERE u.id = t.user_id AND u.is_active)
RETURNING user_id, device_id
"""
TOUCH_DEVICE = "UPDATE user_devices SET last_active_at = now() WHERE id = $1 RETURNING device_type::text AS device_type"


async def _lock_device(connection: Any, digest: str) -> UUID | None:
    """The token's device, its row locked until the transaction ends; None for an unknown token or
    one whose device was deleted (its device_id was set NULL: that device signed out for good)."""
    found = await connection.execute_query_dict(FIND_TOKEN, [digest])
    if not found or found[0]["device_id"] is None:
        return None
    locked = await connection.execute_query_dict(LOCK_DEVICE, [found[0]["device_id"]])
    return locked[0]["id"] if locked else None


async def _is_used(connection: Any, digest: str) -> bool:
    """Read now, not before the UPDATE: a concurrent refresh may have used the token meanwhile."""
    found = await connection.execute_query_dict(FIND_TOKEN, [digest])
    return bool(found and found[0]["is_used"])


@write_operation
async def refresh(refresh_token: str) -> Session:
    """Exchange a refresh token for its successor on the same device.

    `TokenInvalid` for an unknown, expired or revoked token (or a disabled account); `TokenReused`
    for a token already used, after revoking every token of that device: the thief's copy and the
    rightful owner's alike, so whoever holds the chain must sign in again."""
    digest = token_hash(refresh_token)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    reused = False
    session: Session | None = None
    # The revocation must be committed although the call fails: so the transaction ends normally
    # and the error is raised after it (raising inside would roll the revocation back).
    async with in_transaction(PRIMARY) as connection:
        device = await _lock_device(connection, digest)
        if device is not None:
            used = await connection.execute_query_dict(USE_TOKEN, [digest])
            if used:
                user_id = used[0]["user_id"]
                touched = await connection.execute_query_dict(TOUCH_DEVICE, [device])
                issued = await connection.execute_query_dict(ISSUE_TOKEN, [user_id, device, token_hash(token), REFRESH_TOKEN_LIFETIME])
                session = Session(user_id, device, issued[0]["id"], token, issued[0]["expires_at"], touched[0]["device_type"])
            elif await _is_used(connection, digest):
                await connection.execute_query_dict(REVOKE_DEVICE, [device])
                reused = True
    if reused:
        raise TokenReused(TOKEN_REUSED_MESSAGE)
    if session is None:
        raise TokenInvalid(TOKEN_INVALID_MESSAGE)
    return session


# --- logout ------------------------------------------------------------------------------------------


@write_operation
async def logout(refresh_token: str) -> LoggedOut:
    """Revoke the token's device chain (every token of that device). Idempotent, and never refused:
    a token that is unknown, expired or already revoked leaves nothing to revoke."""
    digest = token_hash(refresh_token)
    async with in_transaction(PRIMARY) as connection:
        device = await _lock_device(connection, digest)
        if device is not None:
            return LoggedOut(len(await connection.execute_query_dict(REVOKE_DEVICE, [device])))
        # a token without a device (deleted device): revoke just that token
        revoked = await connection.execute_query_dict(
            "UPDATE refresh_tokens SET is_revoked = true, revoked_at = now() WHERE token_hash = $1 AND NOT is_revoked RETURNING id", [digest]
        )
        return LoggedOut(len(revoked))
