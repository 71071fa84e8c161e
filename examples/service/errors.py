"""What the service answers for a refusal: one exception handler per kind, the routes catch nothing.

- The database cannot be reached: 503, `Retry-After`, and a body that names the problem without the
  driver's message (which carries the database's host, port and user). The driver's own words go to
  the service's log, where an operator needs them.
- An operation refused (`OperationError`): its `code` and one-line `detail`, with the status its kind
  maps to (`STATUS`); a 401 also says `WWW-Authenticate: Bearer`, a `RetryLater` (429 `throttled`, 503 `busy`) `Retry-After`.
- A request that fails validation (or whose body is not strict JSON, `service.bodies`): 422,
  `{"error": "invalid_request", "detail": [...]}`, each error's `loc`, `msg` and `type` only, so it
  still matches the schema FastAPI documents but never carries what was sent (pydantic's `input` and
  `ctx` would echo a password, a 10 MiB string, or a NaN that JSON cannot even encode).
- Starlette's own refusals in the same shape: 404, 405 with an `Allow` listing every method of the
  path (`allowed_methods`), 413 `too_large` for a body over the limit.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from tortoise.exceptions import DBConnectionError

from langlearn.operations.errors import Conflict, InvalidRequest, NotFound, OperationError, Unauthorized
from langlearn.operations.throttle import Busy, RetryLater, Throttled

log = logging.getLogger("service.database")

RETRY_AFTER_SECONDS = 5
UNAVAILABLE_DETAIL = "the database is not reachable right now; retry later"

# What a query raises when the database is down, restarting or gone (found by stopping the server under a
# running service: Tortoise passes the driver's connection errors through untranslated).
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError (a connect or query that timed out) is one too
    asyncpg.PostgresConnectionError,  # class 08, e.g. ConnectionDoesNotExistError: the connection died mid-query
    asyncpg.CannotConnectNowError,  # 57P03: the server is starting up, shutting down or in recovery
    asyncpg.AdminShutdownError,  # 57P01: the server (or pg_terminate_backend) ended the session
    asyncpg.CrashShutdownError,  # 57P02: another backend crashed and the server is resetting
    asyncpg.TooManyConnectionsError,  # 53300: the server has no connection slot left
    asyncpg.InvalidCatalogNameError,  # 3D000: the database itself is gone
    DBConnectionError,  # Tortoise's own, when it (re)creates its pool
)


class Unavailable(BaseModel):
    """The body of every 503."""

    error: Literal["database_unavailable"]
    detail: str


class Problem(BaseModel):
    """The body of every refusal of the write path (400, 401, 403, 404, 409)."""

    error: str
    detail: str


class Message(BaseModel):
    """The body of a 404 of the read routes (FastAPI's HTTPException; `error` is `not_found`)."""

    error: str
    detail: str


RETRY_AFTER_HEADER: dict[str, Any] = {
    "Retry-After": {"description": "seconds to wait before trying again", "required": True, "schema": {"type": "integer", "minimum": 1}},
}
UNAVAILABLE_RESPONSE: dict[str, Any] = {
    "model": Unavailable,
    "description": "The database is not reachable (down, restarting or out of connections); retry after `Retry-After` seconds",
    "headers": RETRY_AFTER_HEADER,
}


class Forbidden(OperationError):
    """An authenticated caller who may not do this (a deactivated account, another user's resource)."""

    code = "forbidden"


# the status of each kind of refusal: the most specific class of an error listed here wins
STATUS: dict[type[OperationError], int] = {InvalidRequest: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409,
                                           Throttled: 429, Busy: 503}
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
PROBLEM_DESCRIPTIONS = {
    400: "The request cannot be satisfied (`invalid_request`)",
    401: "No valid credentials (`unauthorized`, `invalid_credentials`, `token_invalid`, `token_reused`)",
    403: "The account may not do this (`forbidden`: deactivated)",
    404: "No such resource (`not_found`)",
    409: "The request contradicts the data (its `error` says how)",
    429: "Too many sign-in attempts for the account or from the address (`throttled`); retry after `Retry-After` seconds",
    503: "Too many requests at once (`busy`) or the database is not reachable (`database_unavailable`); retry after `Retry-After` seconds",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route refusing with these statuses (401s declare their challenge header)."""
    declared: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        declared[status] = {"model": Problem, "description": PROBLEM_DESCRIPTIONS[status]}
        if status == 401:
            declared[status]["headers"] = {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}}
        if status in (429, 503):
            declared[status]["headers"] = RETRY_AFTER_HEADER
    return declared


def status_of(error: OperationError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400  # an OperationError of no listed kind: a refusal of the request


async def operation_refused(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, OperationError)
    status = status_of(error)
    body = Problem(error=error.code, detail=error.detail)
    headers = BEARER_CHALLENGE if status == 401 else {"Retry-After": str(error.retry_after)} if isinstance(error, RetryLater) else None
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


# FastAPI's and Starlette's own refusals (a body that is not JSON, an unknown path, a wrong method, a body too large), in the same shape
HTTP_CODES = {400: InvalidRequest.code, 404: NotFound.code, 405: "method_not_allowed", 413: "too_large"}


async def http_refusal(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    headers = dict(error.headers or {})
    if error.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
    body = {"error": HTTP_CODES.get(error.status_code, "http_error"), "detail": error.detail}
    return JSONResponse(status_code=error.status_code, content=body, headers=headers)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of `path` answers. Starlette's 405 names the methods of the first route
    of the path only, and through an included router none at all; the application's OpenAPI operations
    list them all (built whether or not the document is served)."""
    return sorted({method.upper() for template, operations in app.openapi()["paths"].items() if compile_path(template)[0].match(path)
                   for method in operations})


async def invalid_request(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    detail = [{"loc": list(problem["loc"]), "msg": _message(problem), "type": problem["type"]} for problem in error.errors()]
    return JSONResponse(status_code=422, content={"error": InvalidRequest.code, "detail": detail})


def _message(problem: dict[str, Any]) -> str:
    """pydantic's message describes the rule, not the value, except a UUID's, which quotes the first character it could not
    read (its reason is dropped); a JSON decode error's reason (FastAPI keeps it in `ctx`) is ours or the decoder's."""
    if problem["type"] == "json_invalid":
        return f"{problem['msg']}: {problem['ctx']['error']}"
    if problem["type"] == "uuid_parsing":
        return str(problem["msg"]).partition(",")[0]
    return str(problem["msg"])


def retry_after() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_SECONDS)}


def summary(error: BaseException) -> str:
    """The exception in one line, for the log only (it may name the host, port and user)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def lost_connection(error: BaseException) -> bool:
    """Whether `error` happened because the database went away: it is one of DATABASE_UNAVAILABLE, or was raised
    while handling one (a transaction's ROLLBACK on the dead connection raises InterfaceError "connection is closed")."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, DATABASE_UNAVAILABLE):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


async def interface_error(request: Request, error: Exception) -> JSONResponse:
    """A driver misuse is a bug (500); the same error raised by a rollback on a connection the restart cut is a 503."""
    if lost_connection(error):
        return await database_unavailable(request, error)
    raise error


async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    log.warning("503 for %s %s: database unavailable (%s)", request.method, request.url.path, summary(error))
    body = Unavailable(error="database_unavailable", detail=UNAVAILABLE_DETAIL)
    return JSONResponse(status_code=503, content=body.model_dump(), headers=retry_after())


def install(app: FastAPI) -> None:
    """Answer 503 (with `Retry-After`) to any request whose database work fails for want of a database,
    and each refusal with its status and `{"error", "detail"}` body."""
    for kind in DATABASE_UNAVAILABLE:
        app.add_exception_handler(kind, database_unavailable)
    app.add_exception_handler(asyncpg.InterfaceError, interface_error)
    app.add_exception_handler(OperationError, operation_refused)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_refusal)
