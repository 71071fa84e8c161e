"""Bearer authentication: short-lived access tokens (HS256 JWTs) in front of the package's refresh tokens.

An access token is what every `/me/...` route takes: 15 minutes, signed with `LANGLEARN_SECRET_KEY`,
claims `sub` (the user id), `sid` (the refresh token it was issued with), `exp`, `iat`, `jti` and
`type: "access"`. It is not stored; the long-lived credential is the refresh token of
`langlearn.operations.accounts`, rotated at each use with reuse detection.

Each request reads its account and its refresh token in one indexed query (`current_user`): a deleted
account's token is refused at once (401, it names nobody) and a deactivated account's too (403
`forbidden`: the identity is genuine but may no longer act); so is a token whose refresh token was
revoked (401): logout, reuse detection and a new sign-in on the device end that device's access
tokens at once. A rotation only marks the old refresh token used, so its access tokens live on until
they expire (the client swaps them at its pace).

Sign-in throttling (`langlearn.operations.throttle`) is configured from the environment
(`sign_in_throttling`): LANGLEARN_SIGNIN_ACCOUNT_ATTEMPTS and LANGLEARN_SIGNIN_ADDRESS_ATTEMPTS, the
attempts in a row an account or a client address gets before waits are imposed (default 5 and 30).

The key: `LANGLEARN_SECRET_KEY`, at least 32 bytes, required. Only against the private development
server (DATABASE_URL unset) a missing key is replaced by a random one kept in a 0600 file of the
server's data directory, so that every worker of one machine signs alike and tokens survive a restart.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from langlearn import ConfigError
from langlearn.local_server import data_dir
from langlearn.operations.errors import Unauthorized
from langlearn.operations.retry import retried_on_failover
from langlearn.operations.throttle import Throttling
from langlearn.routing import reader
from service import config
from service.errors import Forbidden

log = logging.getLogger("service.auth")

SECRET_KEY_VARIABLE = "LANGLEARN_SECRET_KEY"
SECRET_KEY_MIN_BYTES = 32
MAKE_A_KEY = "python -c \"import secrets; print(secrets.token_urlsafe(48))\""
DEV_KEY_FILE = "service-secret-key"  # in the private server's data directory
ALGORITHM = "HS256"
ACCESS_TOKEN_LIFETIME = timedelta(minutes=15)
ACCESS = "access"
DEVICE_CLAIM = "device_type"
SESSION_CLAIM = "sid"
# the account and the session in one indexed read; `revoked` is NULL when the refresh token is gone or someone else's
ACCOUNT_STATE = """
SELECT u.is_active, t.is_revoked AS revoked FROM users u LEFT JOIN refresh_tokens t ON t.id = $2 AND t.user_id = u.id WHERE u.id = $1
"""
REQUIRED_CLAIMS = ["sub", SESSION_CLAIM, "exp", "iat", "jti", "type"]
ACCOUNT_ATTEMPTS_VARIABLE, ADDRESS_ATTEMPTS_VARIABLE = "LANGLEARN_SIGNIN_ACCOUNT_ATTEMPTS", "LANGLEARN_SIGNIN_ADDRESS_ATTEMPTS"


class NotAuthenticated(Unauthorized):
    """No bearer token, or one that is malformed, forged, expired, not an access token, or names nobody."""

    code = "unauthorized"


@dataclass(frozen=True)
class SigningKey:
    """The HS256 key, and whether it is the generated development key."""

    secret: str = field(repr=False)
    development: bool


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int  # seconds


def configured_key() -> SigningKey | None:
    """The key from the environment; None when the development key stands in (no key, DATABASE_URL unset).
    Read before connecting, so that a service without its key refuses to start at once; the sign-in
    throttling's settings are read with it, for the same reason."""
    sign_in_throttling()
    raw = os.environ.get(SECRET_KEY_VARIABLE)
    if raw is not None:
        if not raw.strip():  # set but blank: a secret that failed to mount, not a request for the development key
            raise ConfigError(f"{SECRET_KEY_VARIABLE} is set but empty; make a key with {MAKE_A_KEY}")
        return SigningKey(_checked(raw.strip(), SECRET_KEY_VARIABLE), development=False)
    if os.environ.get("DATABASE_URL") is not None:
        raise ConfigError(f"{SECRET_KEY_VARIABLE} is not set: the service signs its access tokens with it; make one with {MAKE_A_KEY}")
    return None


def development_key() -> SigningKey:
    """The private server's key, made at first use (call it once the server runs: its data directory exists)."""
    path = data_dir() / DEV_KEY_FILE
    key = SigningKey(_checked(_development_key(path), str(path)), development=True)
    log.warning("%s is not set: signing tokens with the development key of the private server (%s)", SECRET_KEY_VARIABLE, path)
    return key


def _checked(secret: str, source: str) -> str:
    if len(secret.encode()) < SECRET_KEY_MIN_BYTES:
        raise ConfigError(f"{source} is shorter than {SECRET_KEY_MIN_BYTES} bytes; make a key with {MAKE_A_KEY}")
    return secret


def _development_key(path: Path) -> str:
    """The key in `path`, made on first use. It is written to a private temporary file, then linked into
    place: concurrent workers either create it or read the complete key another one linked."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    draft = path.with_name(f".{DEV_KEY_FILE}.{uuid.uuid4().hex}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(48))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another worker won: use its key
    finally:
        draft.unlink()
    return path.read_text().strip()


@cache
def sign_in_throttling() -> Throttling:
    """The throttling of sign-ins, from the environment (read once, at startup: see `configured_key`)."""
    defaults = Throttling()
    return Throttling(account_free=config.positive(ACCOUNT_ATTEMPTS_VARIABLE, defaults.account_free, int),
                      address_free=config.positive(ADDRESS_ATTEMPTS_VARIABLE, defaults.address_free, int))


def issue_access_token(key: SigningKey, user_id: UUID, session_id: UUID, device_type: str) -> AccessToken:
    """`session_id` is the refresh token issued with it (its revocation ends this token); `device_type` (the signed-in
    device's: ios, android or web) is what the caller's lesson attempts record."""
    now = datetime.now(timezone.utc)
    claims = {"sub": str(user_id), SESSION_CLAIM: str(session_id), "iat": now, "exp": now + ACCESS_TOKEN_LIFETIME, "jti": uuid.uuid4().hex,
              "type": ACCESS, DEVICE_CLAIM: device_type}
    return AccessToken(jwt.encode(claims, key.secret, algorithm=ALGORITHM), int(ACCESS_TOKEN_LIFETIME.total_seconds()))


def verified_claims(key: SigningKey, token: str) -> dict[str, Any]:
    """The claims of a valid access token: signature, expiry, every claim present, and the type checked."""
    try:
        claims: dict[str, Any] = jwt.decode(token, key.secret, algorithms=[ALGORITHM], options={"require": REQUIRED_CLAIMS})
        if claims["type"] != ACCESS:
            raise NotAuthenticated("not an access token")
        UUID(claims["sub"]), UUID(claims[SESSION_CLAIM])
        return claims
    except jwt.ExpiredSignatureError:
        raise NotAuthenticated("the access token has expired; refresh it") from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise NotAuthenticated("the access token is not valid") from None


VERIFIED_TOKEN = "verified_access_token"  # the request state's entry: the token verified for this request, and its claims


@dataclass(frozen=True)
class VerifiedToken:
    token: str = field(repr=False)
    claims: dict[str, Any]


def request_claims(state: dict[str, Any], key: SigningKey, token: str) -> dict[str, Any]:
    """`verified_claims`, once per request: the first caller (`service.fairness`, then `current_user`) keeps the
    result in the request's ASGI state, so a token is not verified twice."""
    known = state.get(VERIFIED_TOKEN)
    if not isinstance(known, VerifiedToken) or known.token != token:
        known = state[VERIFIED_TOKEN] = VerifiedToken(token, verified_claims(key, token))
    return known.claims


bearer = HTTPBearer(auto_error=False, description="An access token from `POST /auth/token` or `POST /auth/refresh`")


@retried_on_failover  # a read: safe to run again when a failover cut its connection
async def current_user(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> UUID:
    """The caller: the subject of the bearer token, an existing and active account whose session is not revoked."""
    if credentials is None:
        raise NotAuthenticated("an access token is required: Authorization: Bearer <token>")
    claims = request_claims(request.scope.setdefault("state", {}), request.app.state.signing_key, credentials.credentials)
    user_id = UUID(claims["sub"])
    request.state.device_type = claims.get(DEVICE_CLAIM)  # None in a token issued before the claim existed
    # one indexed read per request, in plain SQL: the ORM's query building costs more than the query here; on a
    # standby when there is one, after the client's own writes (service.consistency)
    rows = await reader().execute_query_dict(ACCOUNT_STATE, [user_id, UUID(claims[SESSION_CLAIM])])
    if not rows:
        raise NotAuthenticated("the access token's account no longer exists")
    if not rows[0]["is_active"]:
        raise Forbidden("this account is deactivated")
    if rows[0]["revoked"] is not False:
        raise NotAuthenticated("the access token's session has ended (logged out or revoked); sign in again")
    return user_id


CurrentUser = Annotated[UUID, Depends(current_user)]
