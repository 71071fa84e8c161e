"""The example service: a FastAPI app whose lifespan enters `langlearn.database`.

It uses only the installed package (`pip install 'langlearn-data[service]'`), and is started by its
runner (`service.__main__`: no `server` banner, client addresses from `X-Forwarded-For` only when
the proxy is configured):

    PYTHONPATH=examples python -m service                              # DATABASE_URL unset: the private server
    MIGRATE_ON_START=apply PYTHONPATH=examples python -m service --workers 4

`MIGRATE_ON_START` picks the startup mode: `check` (default: refuse to start against the wrong
schema), `apply` (take the migration lock and upgrade; safe with any number of workers or
replicas) or `off`. A refused start exits before the server accepts a request.

While the database is unreachable every route answers 503 with `Retry-After` (see `service.errors`);
the connection pool reconnects by itself once the database is back. A request waits at most
`DATABASE_TIMEOUT_SECONDS` (default 10; /health: 2) for a database that does not answer at all.

With hot standbys (`DATABASE_REPLICA_URL`), reads go to them and each client reads its own writes
(`service.consistency`: the `X-Read-Token` header a client echoes; docs/scale-out.md).

The write routes (`service.write_routes`) sign access tokens with `LANGLEARN_SECRET_KEY`, without
which the service refuses to start, except against the private development server (see `service.auth`).
A refused start (any `LanglearnError`) logs its one-line message, not a traceback.

What the service exposes is kept small (docs/security.md): bodies over `SERVICE_MAX_BODY_BYTES` are
413 and JSON is parsed strictly (`service.bodies`); `/docs`, `/redoc` and `/openapi.json` exist only
with `SERVICE_OPENAPI=1`; `/health` tells anyone only ok, degraded or unavailable, and the schema
version only to a caller sending `X-Operator-Token: $LANGLEARN_OPERATOR_TOKEN`.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from tortoise import Tortoise

from langlearn import MODES, ConfigError, database, history
from langlearn.logs import OneLineRefusal
from service import auth, config, consistency, errors, fairness
from service.bodies import MAX_BODY_BYTES
from service.routes import router
from service.timeouts import within
from service.write_routes import router as write_router

HEALTH_TIMEOUT_SECONDS = 2.0
OPENAPI = config.switch("SERVICE_OPENAPI")  # the schema and its two browsers describe every route to whoever asks: off by default
OPERATOR_TOKEN = config.secret("LANGLEARN_OPERATOR_TOKEN")  # unset: nobody is told the schema version
OPERATOR_HEADER = "X-Operator-Token"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    mode = os.environ.get("MIGRATE_ON_START", "check").strip() or "check"
    if mode not in MODES:
        raise ConfigError(f"MIGRATE_ON_START={mode!r} is not a startup mode; use one of {', '.join(MODES)}")
    key = auth.configured_key()  # before connecting: a service without its key stops at once
    async with database(migrate=mode) as startup:
        app.state.startup = startup
        app.state.signing_key = key or auth.development_key()
        yield


# uvicorn logs a failed startup's whole traceback; for the package's refusals the one line naming the fix is all
logging.getLogger("uvicorn.error").addFilter(OneLineRefusal())

app = FastAPI(
    title="langlearn example service",
    lifespan=lifespan,
    responses={503: errors.UNAVAILABLE_RESPONSE},
    max_body_size=MAX_BODY_BYTES,
    openapi_url="/openapi.json" if OPENAPI else None,  # without it FastAPI serves neither /docs nor /redoc
)
errors.install(app)
app.include_router(router)
app.include_router(write_router)
consistency.install(app)  # inside fairness: a refused request waits for no standby
fairness.install(app)  # after the routes: it declares its 429 on those that take a token


class Health(BaseModel):
    """What anyone may know: whether the service can serve."""

    status: Literal["ok", "degraded", "unavailable"]
    error: Literal["database_unavailable"] | None = None


class HealthReport(Health):
    """What an operator is told besides (`X-Operator-Token`): where the schema stands."""

    database: Literal["reachable", "unreachable"]
    version: str | None = None
    head: str | None = None
    pending: int | None = None
    unknown: list[str] | None = None


@app.get(
    "/health",
    response_model=HealthReport | Health,
    response_model_exclude_none=True,
    responses={503: {**errors.UNAVAILABLE_RESPONSE, "model": HealthReport | Health, "description": "The database is not reachable"}},
)
async def health(request: Request):
    """Whether the service can serve: `ok`, `degraded` (the database is reachable but not at the head of the
    migration history) or `unavailable`. With the operator's token, also the schema version, the head, how
    many migrations are `pending` and the `unknown` versions ahead. Never names the database's host, port or user.

    The operator's token comes in `X-Operator-Token` (read here, not declared: the public contract does not name it).
    """
    given = request.headers.get(OPERATOR_HEADER)
    operator = OPERATOR_TOKEN is not None and given is not None and hmac.compare_digest(given.encode(), OPERATOR_TOKEN)
    try:
        state = await within(HEALTH_TIMEOUT_SECONDS, _read_state())
    except errors.DATABASE_UNAVAILABLE as error:
        errors.log.warning("503 for /health: database unavailable (%s)", errors.summary(error))
        body = (HealthReport(status="unavailable", error="database_unavailable", database="unreachable") if operator
                else Health(status="unavailable", error="database_unavailable"))
        return JSONResponse(status_code=503, content=body.model_dump(exclude_none=True), headers=errors.retry_after())
    status: Literal["ok", "degraded"] = "ok" if state.at_head else "degraded"
    if not operator:
        return Health(status=status)
    return HealthReport(
        status=status, database="reachable", version=state.current, head=state.head, pending=len(state.pending), unknown=state.unknown
    )


async def _read_state() -> history.MigrationState:
    async with Tortoise.get_connection("default").acquire_connection() as connection:
        return await history.read_state(connection)
