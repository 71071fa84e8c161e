"""What the service answers when the database cannot be reached: 503, `Retry-After`, and a body that
names the problem without the driver's message (which carries the database's host, port and user).

One exception handler covers every route: the routes never catch connection errors themselves.
The driver's own words go to the service's log, where an operator needs them.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from tortoise.exceptions import DBConnectionError

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


class Message(BaseModel):
    """The body of a 404 (FastAPI's HTTPException)."""

    detail: str


RETRY_AFTER_HEADER: dict[str, Any] = {
    "Retry-After": {"description": "seconds to wait before trying again", "required": True, "schema": {"type": "integer", "minimum": 1}},
}
UNAVAILABLE_RESPONSE: dict[str, Any] = {
    "model": Unavailable,
    "description": "The database is not reachable (down, restarting or out of connections); retry after `Retry-After` seconds",
    "headers": RETRY_AFTER_HEADER,
}


def retry_after() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_SECONDS)}


def summary(error: BaseException) -> str:
    """The exception in one line, for the log only (it may name the host, port and user)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    log.warning("503 for %s %s: database unavailable (%s)", request.method, request.url.path, summary(error))
    body = Unavailable(error="database_unavailable", detail=UNAVAILABLE_DETAIL)
    return JSONResponse(status_code=503, content=body.model_dump(), headers=retry_after())


def install(app: FastAPI) -> None:
    """Answer 503 (with `Retry-After`) to any request whose database work fails for want of a database."""
    for kind in DATABASE_UNAVAILABLE:
        app.add_exception_handler(kind, database_unavailable)
