"""What the service answers for a refusal: one exception handler per kind, the routes catch nothing.

- The database cannot serve the request (`langlearn.operations.errors.database_refusal`: the connection
  lost, or the account's rows locked past the pool's `lock_timeout`): 503, `Retry-After`, and a body
  that names the problem without the driver's message (which carries the database's host, port and
  user). The driver's own words go to the service's log, where an operator needs them.
- An operation refused (`OperationError`): its `code` and one-line `detail`, with the status its kind
  maps to (the package's `HTTP_STATUS`); a 401 also says `WWW-Authenticate: Bearer`, a 429 or 503 `Retry-After`.
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

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from langlearn.operations import errors as contract
from langlearn.operations.errors import Forbidden as Forbidden  # the package's, imported from here by service.auth
from langlearn.operations.errors import InvalidRequest, NotFound, OperationError, status_of

log = logging.getLogger("service.database")

# What a query raises when the database is down, restarting or gone (the package's list, with what it was found by)
DATABASE_UNAVAILABLE = contract.CONNECTION_LOST


class Unavailable(BaseModel):
    """The body of every 503: the database is not reachable, or the account's data is `busy` (locked too long)."""

    error: Literal["database_unavailable", "busy"]
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
    "description": "The database is not reachable (down, restarting or out of connections), or the account's data stayed "
                   "locked past the lock timeout (`busy`); retry after `Retry-After` seconds",
    "headers": RETRY_AFTER_HEADER,
}


BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
PROBLEM_DESCRIPTIONS = {
    400: "The request cannot be satisfied (`invalid_request`)",
    401: "No valid credentials (`unauthorized`, `invalid_credentials`, `token_invalid`, `token_reused`)",
    403: "The account may not do this (`forbidden`: deactivated)",
    404: "No such resource (`not_found`)",
    409: "The request contradicts the data (its `error` says how)",
    429: "Too many sign-in attempts for the account or from the address (`throttled`), or too many of the account's requests "
         "in flight (`too_many_requests`); retry after `Retry-After` seconds",
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


def refusal_response(error: OperationError) -> JSONResponse:
    status = status_of(error)
    body = Problem(error=error.code, detail=error.detail)
    headers = BEARER_CHALLENGE if status == 401 else retry_after(error)
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


async def operation_refused(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, OperationError)
    return refusal_response(error)


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


def retry_after(error: OperationError | type[OperationError] = contract.Unavailable) -> dict[str, str]:
    """The `Retry-After` header of a refusal worth retrying (none for the others)."""
    return {"Retry-After": str(error.retry_after)} if error.retry_after else {}


def summary(error: BaseException) -> str:
    """The exception in one line, for the log only (it may name the host, port and user)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


async def database_refused(request: Request, error: Exception) -> JSONResponse:
    """503 when the database could not serve the request; any other driver error (a misuse: a bug) stays a 500."""
    refusal = contract.database_refusal(error)
    if refusal is None:
        raise error
    log.warning("503 for %s %s: %s (%s)", request.method, request.url.path, refusal.code.replace("_", " "), summary(error))
    body = Unavailable(error=refusal.code, detail=refusal.detail)  # type: ignore[arg-type]  # the two codes database_refusal makes
    return JSONResponse(status_code=status_of(refusal), content=body.model_dump(), headers=retry_after(refusal))


def install(app: FastAPI) -> None:
    """Answer 503 (with `Retry-After`) to any request whose database work fails for want of a database,
    and each refusal with its status and `{"error", "detail"}` body."""
    for kind in contract.DATABASE_ERRORS:
        app.add_exception_handler(kind, database_refused)
    app.add_exception_handler(OperationError, operation_refused)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_refusal)
