"""The example service: a FastAPI app whose lifespan enters `langlearn.database`.

It uses only the installed package (`pip install 'langlearn-data[service]'`):

    uvicorn --app-dir examples service.app:app                        # DATABASE_URL unset: the private server
    MIGRATE_ON_START=apply uvicorn --app-dir examples service.app:app --workers 4

`MIGRATE_ON_START` picks the startup mode: `check` (default: refuse to start against the wrong
schema), `apply` (take the migration lock and upgrade; safe with any number of workers or
replicas) or `off`. A refused start exits before the server accepts a request.

While the database is unreachable every route answers 503 with `Retry-After` (see `service.errors`);
the connection pool reconnects by itself once the database is back. A request waits at most
`DATABASE_TIMEOUT_SECONDS` (default 10; /health: 2) for a database that does not answer at all.

The write routes (`service.write_routes`) sign access tokens with `LANGLEARN_SECRET_KEY`, without
which the service refuses to start, except against the private development server (see `service.auth`).
A refused start (any `LanglearnError`) logs its one-line message, not a traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from tortoise import Tortoise

from langlearn import MODES, ConfigError, database, history
from langlearn.logs import OneLineRefusal
from service import auth, errors, fairness
from service.routes import router
from service.timeouts import within
from service.write_routes import router as write_router

HEALTH_TIMEOUT_SECONDS = 2.0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    mode = os.environ.get("MIGRATE_ON_START", "check").strip() or "check"
    if mode not in MODES:
        raise ConfigError(f"MIGRATE_ON_START={mode!r} is not a startup mode; use one of {', '.join(MODES)}")
    key = auth.configured_key()  # before connecting: a service without its key stops at once
    app.state.user_concurrency_limit = fairness.configured_limit()
    async with database(migrate=mode) as startup:
        app.state.startup = startup
        app.state.signing_key = key or auth.development_key()
        yield


# uvicorn logs a failed startup's whole traceback; for the package's refusals the one line naming the fix is all
logging.getLogger("uvicorn.error").addFilter(OneLineRefusal())

app = FastAPI(title="langlearn example service", lifespan=lifespan, responses={503: errors.UNAVAILABLE_RESPONSE})
errors.install(app)
app.include_router(router)
app.include_router(write_router)
fairness.install(app)  # after the routes: it declares its 429 on those that take a token


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    database: Literal["reachable", "unreachable"]
    version: str | None = None
    head: str | None = None
    pending: int | None = None
    unknown: list[str] = []
    error: Literal["database_unavailable"] | None = None


@app.get(
    "/health",
    response_model=Health,
    responses={503: {**errors.UNAVAILABLE_RESPONSE, "model": Health, "description": "The database is not reachable"}},
)
async def health():
    """Whether the database answers, the schema version it is at and how many migrations it lacks.

    `degraded`: reachable, but not at the head of the migration history (`pending` behind, or
    `unknown` versions ahead). Never names the database's host, port or user.
    """
    try:
        state = await within(HEALTH_TIMEOUT_SECONDS, _read_state())
    except errors.DATABASE_UNAVAILABLE as error:
        errors.log.warning("503 for /health: database unavailable (%s)", errors.summary(error))
        body = Health(status="unavailable", database="unreachable", error="database_unavailable")
        return JSONResponse(status_code=503, content=body.model_dump(), headers=errors.retry_after())
    return Health(
        status="ok" if state.at_head else "degraded",
        database="reachable",
        version=state.current,
        head=state.head,
        pending=len(state.pending),
        unknown=state.unknown,
    )


async def _read_state() -> history.MigrationState:
    async with Tortoise.get_connection("default").acquire_connection() as connection:
        return await history.read_state(connection)
