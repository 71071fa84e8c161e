"""What an operation refuses, by the code an HTTP API returns for it, and the HTTP status of each kind.

The contract every service on the package shares, with no web framework in it:

- every refusal is an `OperationError`: `code` (machine-readable), `detail` (one line, no secret);
- `HTTP_STATUS` maps each kind to its status (the most specific class listed wins: `status_of`);
  the kinds a client should retry carry `retry_after` (seconds, for a `Retry-After` header);
- `database_refusal(error)` turns what the driver raises when the database cannot serve a request
  (the connection lost, a lock not granted within the pool's `lock_timeout`, a transaction the database
  aborted to resolve a conflict) into `Unavailable` or `Busy`, both 503: anything else is a bug (a 500);
- `failover_error(error)` says whether a keyed write may be run again (`langlearn.operations.retry`): the
  connection lost, or a write refused by a server that is a standby now.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import asyncpg
from tortoise.exceptions import DBConnectionError, TransactionManagementError

from langlearn.errors import LanglearnError


class OperationError(LanglearnError):
    """A refused operation: `code` is machine-readable (`insufficient_gems`), the message says why in one line.
    Nothing was written."""

    code = "refused"
    retry_after: int | None = None  # seconds a client waits before retrying; None: retrying the same request is pointless

    def __init__(self, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if retry_after is not None:  # the raiser knows better than the kind's default
            self.retry_after = retry_after


class Conflict(OperationError):
    """The request contradicts the data (a taken username, too few gems, no stock)."""


class Unauthorized(OperationError):
    """Bad credentials, or a token that is unknown, expired, revoked or reused."""


class Forbidden(OperationError):
    """An authenticated caller who may not do this (a deactivated account, another user's resource)."""

    code = "forbidden"


class Throttled(OperationError):
    """Too many requests of one caller at once or in a window; `retry_after` says when to come back."""

    code = "too_many_requests"
    retry_after = 1


class SignInThrottled(Throttled):
    """Too many sign-in attempts for this account or from this address (`langlearn.operations.throttle`)."""

    code = "throttled"


class Unavailable(OperationError):
    """The database cannot be reached (down, restarting, out of connections, or the session was ended)."""

    code = "database_unavailable"
    retry_after = 5


class Busy(OperationError):
    """The account's rows stayed locked longer than the pool's `lock_timeout` (another request, a stuck one, the
    league close), the database aborted the transaction to resolve a conflict, or too many passwords wait for this
    process's hashing pool (`accounts`): nothing was written, a retry may pass."""

    code = "busy"
    retry_after = 2


# --- accounts ---------------------------------------------------------------------------------------


class Taken(Conflict):
    """An email or username already belongs to an account; the message says which, never whose."""

    code = "taken"


class InvalidCredentials(Unauthorized):
    """Wrong password, unknown email or a disabled account: one message for all three, so none is revealed."""

    code = "invalid_credentials"


class TokenInvalid(Unauthorized):
    """A refresh token that is unknown, expired or revoked."""

    code = "token_invalid"


class TokenReused(Unauthorized):
    """A refresh token presented after it was used: the device's whole token chain has been revoked."""

    code = "token_reused"


# --- wallet and shop (langlearn.operations.wallet) ---


class InvalidRequest(OperationError):
    """A request that no data could satisfy (a non-positive amount, an empty idempotency key)."""

    code = "invalid_request"


class NotFound(OperationError):
    """The user or the shop item named does not exist."""

    code = "not_found"


class InsufficientGems(Conflict):
    code = "insufficient_gems"


class OutOfStock(Conflict):
    code = "out_of_stock"


class NotAvailable(Conflict):
    """A shop item withdrawn from sale (`is_available` false)."""

    code = "not_available"


class NotOwned(Conflict):
    """Activating an item the user holds none of."""

    code = "not_owned"


class NotActivatable(Conflict):
    """An item with no effect to activate (a hint pack is used in a lesson, not activated)."""

    code = "not_activatable"


class FreezeLimit(Conflict):
    """The streak already holds the most freezes allowed."""

    code = "freeze_limit"


class IdempotencyKeyReused(Conflict):
    """An idempotency key sent again with other parameters than its first request's."""

    code = "idempotency_key_reused"


# --- lessons (langlearn.operations.lessons) ---


class WeekClosed(Conflict):
    """A completion whose week the league close has already ranked (it arrived too late to count)."""

    code = "week_closed"


class LessonLocked(Conflict):
    """A lesson whose prerequisite the learner has not passed yet."""

    code = "lesson_locked"


# --- the HTTP contract --------------------------------------------------------------------------------

HTTP_STATUS: Mapping[type[OperationError], int] = MappingProxyType({
    OperationError: 400,  # a refusal of no more specific kind: the request cannot be satisfied
    InvalidRequest: 400,
    Unauthorized: 401,  # answer with `WWW-Authenticate` naming the scheme
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Throttled: 429,
    Unavailable: 503,
    Busy: 503,
})


def status_of(error: OperationError) -> int:
    """The HTTP status of a refusal: that of the most specific kind of `HTTP_STATUS` it is."""
    return next(HTTP_STATUS[kind] for kind in type(error).__mro__ if kind in HTTP_STATUS)


# --- what the driver raises when the database cannot serve a request -----------------------------------

# The connection is gone: found by stopping the server and by ending sessions (pg_terminate_backend) under load.
# Tortoise passes these through untranslated.
CONNECTION_LOST: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError (a connect or query that timed out) is one too
    asyncpg.PostgresConnectionError,  # class 08, e.g. ConnectionDoesNotExistError: the connection died mid-query
    asyncpg.AdminShutdownError,  # 57P01: the server shutting down, or pg_terminate_backend, ended the session
    asyncpg.CrashShutdownError,  # 57P02: another backend crashed and the server is resetting
    asyncpg.CannotConnectNowError,  # 57P03: the server is starting up, shutting down or in recovery
    asyncpg.IdleSessionTimeoutError,  # 57P05: the server's idle_session_timeout ended a pooled session
    asyncpg.IdleInTransactionSessionTimeoutError,  # 25P03: idle_in_transaction_session_timeout ended it
    asyncpg.TooManyConnectionsError,  # 53300: the server has no connection slot left
    asyncpg.InvalidCatalogNameError,  # 3D000: the database itself is gone
    # A session ended while its connection was idle in the pool: the server's FATAL message is read as the
    # error of the connection's next query ("cannot switch to state 12; another operation (2) is in progress").
    asyncpg.InternalClientError,
    DBConnectionError,  # Tortoise's own, when it (re)creates its pool
)
# The server is a standby (a failover demoted it, or the URL reaches one): no write can pass there, a retry on a new
# connection reaches the primary (a host list with target_session_attrs=read-write). Tortoise raises it as a
# TransactionManagementError whose cause is this.
READ_ONLY: tuple[type[Exception], ...] = (asyncpg.ReadOnlySQLTransactionError,)
# The database refused to wait or to go on, and a retry may succeed: a lock not granted within lock_timeout
# (or NOWAIT), a deadlock or a serialization failure (PostgreSQL aborts one side; the remedy is a retry).
CONTENTION: tuple[type[Exception], ...] = (asyncpg.LockNotAvailableError, asyncpg.TransactionRollbackError)
# Raised in the wake of one of the above, which is their cause or context: asyncpg's "connection is closed" from
# the ROLLBACK on a dead connection; Tortoise's translation of 25P03 (an InvalidTransactionStateError).
SECONDARY: tuple[type[Exception], ...] = (asyncpg.InterfaceError, TransactionManagementError)
# Every class a service's exception handlers should pass to `database_refusal`
DATABASE_ERRORS: tuple[type[Exception], ...] = (*CONNECTION_LOST, *READ_ONLY, *CONTENTION, *SECONDARY)


def database_refusal(error: BaseException) -> Unavailable | Busy | None:
    """`Unavailable` or `Busy` when `error`, or one it was raised while handling (a rollback on a dead
    connection fails in turn), means the database could not serve the request; None for anything else."""
    for cause in _chain(error):
        if isinstance(cause, (*CONNECTION_LOST, *READ_ONLY)):
            return Unavailable("the database is not reachable right now; retry later")
        if isinstance(cause, CONTENTION):
            return Busy("the data this request needs is held by another transaction; retry shortly")
    return None


def failover_error(error: BaseException) -> bool:
    """Whether `error`, or one it was raised while handling, is what a failover raises: the connection lost
    (before, during or after COMMIT) or a write refused by a standby. Contention is not: it has its own 503."""
    return any(isinstance(cause, (*CONNECTION_LOST, *READ_ONLY)) for cause in _chain(error))


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and the errors it was raised from or while handling, each once, outermost first."""
    seen: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and all(cause is not each for each in seen):
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    return seen
