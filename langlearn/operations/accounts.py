"""Accounts: register, sign in, rotate refresh tokens per device with reuse detection, log out.

Passwords are argon2id hashes (argon2-cffi's defaults, RFC 9106's low-memory profile, the seed's
parameters too); hashing and verifying run in a worker thread because they are slow on purpose.
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

Registration also creates the user's wallet and streak rows (zero gems, no streak): every seeded
user has both, the wallet operations lock the wallet row, and the invariants read them per user.
The welcome gems are a wallet operation (an `earn`), left to the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from functools import cache
from typing import Any
from uuid import UUID

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from langlearn.models.enums import DeviceType
from langlearn.models.users import User
from langlearn.operations.errors import InvalidCredentials, InvalidRequest, Taken, TokenInvalid, TokenReused

# argon2id with argon2-cffi's defaults (t=3, m=64 MiB, p=4): the seed's hashes have the same parameters.
# Changing them here makes `sign_in` rehash each account at its next successful sign-in.
HASHER = PasswordHasher()
REFRESH_TOKEN_LIFETIME = timedelta(days=30)  # the seed's TOKEN_LIFETIME
TOKEN_BYTES = 32

EMAIL_MAX, USERNAME_MAX, DEVICE_ID_MAX, DEVICE_NAME_MAX = 255, 50, 255, 100  # the columns' lengths
PASSWORD_MIN, PASSWORD_MAX = 8, 1024  # the upper bound only caps what one request makes us hash
EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
USERNAME_SHAPE = re.compile(r"[\w.-]{3,50}")  # \w is Unicode: Vietnamese letters are fine

CREDENTIALS_MESSAGE = "wrong email or password"
TOKEN_INVALID_MESSAGE = "the refresh token is unknown, expired or revoked; sign in again"
TOKEN_REUSED_MESSAGE = "the refresh token was already used; every session of this device is revoked, sign in again"


@dataclass(frozen=True)
class RegisteredUser:
    user_id: UUID


@dataclass(frozen=True)
class Session:
    """A signed-in device: `refresh_token` is the only copy of the token's plaintext (kept out of repr)."""

    user_id: UUID
    device: UUID  # the user_devices row
    refresh_token: str = field(repr=False)
    refresh_expires_at: datetime
    device_type: str  # ios, android or web: what a lesson attempt records


@dataclass(frozen=True)
class LoggedOut:
    revoked: int  # tokens revoked now; 0 when there was nothing left to revoke


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


def _check_password(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidRequest(f"password must have {PASSWORD_MIN} to {PASSWORD_MAX} characters")


def _device_type(device_type: DeviceType | str) -> DeviceType:
    try:
        return DeviceType(device_type)
    except ValueError:
        raise InvalidRequest(f"device_type must be one of {', '.join(t.value for t in DeviceType)}") from None


def _ip(ip: str | None) -> str | None:
    if ip is None:
        return None
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise InvalidRequest("ip must be an IPv4 or IPv6 address") from None


def _value(value: Enum | str) -> str:
    return value.value if isinstance(value, Enum) else value


# --- register ----------------------------------------------------------------------------------------

INSERT_USER = "INSERT INTO users (email, username, hashed_password) VALUES ($1, $2, $3) RETURNING id"


async def register(email: str, username: str, password: str) -> RegisteredUser:
    """A new local account with its wallet and streak rows. `Taken` names the email or the username
    (usernames are unique regardless of case); the unique indexes decide, so two racing
    registrations cannot both win."""
    email = _normalised_email(email)
    username = username.strip()
    if not USERNAME_SHAPE.fullmatch(username):
        raise InvalidRequest(f"username must have 3 to {USERNAME_MAX} letters, digits, '.', '_' or '-'")
    _check_password(password)
    hashed = await asyncio.to_thread(HASHER.hash, password)
    try:
        async with in_transaction() as connection:
            rows = await connection.execute_query_dict(INSERT_USER, [email, username, hashed])
            user_id: UUID = rows[0]["id"]
            await connection.execute_query("INSERT INTO user_wallets (user_id) VALUES ($1)", [user_id])
            await connection.execute_query("INSERT INTO streaks (user_id) VALUES ($1)", [user_id])
    except IntegrityError as error:
        constraint = getattr(error.__cause__, "constraint_name", None) or ""
        if "email" in constraint:
            raise Taken("that email is already registered") from None
        if "username" in constraint:
            raise Taken("that username is taken (usernames are compared without case)") from None
        raise
    return RegisteredUser(user_id)


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
ISSUE_TOKEN = "INSERT INTO refresh_tokens (user_id, device_id, token_hash, expires_at) VALUES ($1, $2, $3, now() + $4::interval) RETURNING expires_at"


async def sign_in(
    email: str, password: str, device_id: str, device_type: DeviceType | str, *, ip: str | None = None, device_name: str | None = None
) -> Session:
    """Verify the password and open a session on the device (created on its first sign-in).

    A wrong password, an unknown email and a disabled account give the same `InvalidCredentials`
    after the same work: an unknown email is verified against a dummy hash. A hash made with
    other parameters than `HASHER`'s is replaced by a current one."""
    kind = _device_type(device_type)
    address = _ip(ip)
    if not device_id or len(device_id) > DEVICE_ID_MAX:
        raise InvalidRequest(f"device_id must have 1 to {DEVICE_ID_MAX} characters")
    if device_name is not None and len(device_name) > DEVICE_NAME_MAX:
        raise InvalidRequest(f"device_name must have at most {DEVICE_NAME_MAX} characters")
    email = email.strip().lower()
    # Read outside the transaction: no connection is held while the slow verification runs.
    found = await User.filter(email=email, is_active=True).first().values_list("id", "hashed_password") if len(email) <= EMAIL_MAX else None
    stored: str = found[1] if found else await asyncio.to_thread(_dummy_hash)
    if not await asyncio.to_thread(_verify, stored, password) or not found:
        raise InvalidCredentials(CREDENTIALS_MESSAGE)
    user_id: UUID = found[0]
    current = await asyncio.to_thread(HASHER.hash, password) if HASHER.check_needs_rehash(stored) else stored

    token = secrets.token_urlsafe(TOKEN_BYTES)
    async with in_transaction() as connection:
        if not await connection.execute_query_dict(SIGNED_IN, [user_id, address, current, stored]):
            raise InvalidCredentials(CREDENTIALS_MESSAGE)  # disabled, or the password changed, meanwhile
        device: UUID = (await connection.execute_query_dict(UPSERT_DEVICE, [user_id, device_id, kind.value, device_name]))[0]["id"]
        await connection.execute_query_dict(REVOKE_DEVICE, [device])  # one live chain per device
        issued = await connection.execute_query_dict(ISSUE_TOKEN, [user_id, device, token_hash(token), REFRESH_TOKEN_LIFETIME])
    return Session(user_id, device, token, issued[0]["expires_at"], kind.value)


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
    async with in_transaction() as connection:
        device = await _lock_device(connection, digest)
        if device is not None:
            used = await connection.execute_query_dict(USE_TOKEN, [digest])
            if used:
                user_id = used[0]["user_id"]
                touched = await connection.execute_query_dict(TOUCH_DEVICE, [device])
                issued = await connection.execute_query_dict(ISSUE_TOKEN, [user_id, device, token_hash(token), REFRESH_TOKEN_LIFETIME])
                session = Session(user_id, device, token, issued[0]["expires_at"], touched[0]["device_type"])
            elif await _is_used(connection, digest):
                await connection.execute_query_dict(REVOKE_DEVICE, [device])
                reused = True
    if reused:
        raise TokenReused(TOKEN_REUSED_MESSAGE)
    if session is None:
        raise TokenInvalid(TOKEN_INVALID_MESSAGE)
    return session


# --- logout ------------------------------------------------------------------------------------------


async def logout(refresh_token: str) -> LoggedOut:
    """Revoke the token's device chain (every token of that device). Idempotent, and never refused:
    a token that is unknown, expired or already revoked leaves nothing to revoke."""
    digest = token_hash(refresh_token)
    async with in_transaction() as connection:
        device = await _lock_device(connection, digest)
        if device is not None:
            return LoggedOut(len(await connection.execute_query_dict(REVOKE_DEVICE, [device])))
        # a token without a device (deleted device): revoke just that token
        revoked = await connection.execute_query_dict(
            "UPDATE refresh_tokens SET is_revoked = true, revoked_at = now() WHERE token_hash = $1 AND NOT is_revoked RETURNING id", [digest]
        )
        return LoggedOut(len(revoked))
