"""The example service: a FastAPI app whose lifespan enters `langlearn.database`.

It uses only the installed package (`pip install 'langlearn-data[service]'`):

    uvicorn --app-dir examples service.app:app                        # DATABASE_URL unset: the private server
    MIGRATE_ON_START=apply uvicorn --app-dir examples service.app:app --workers 4

`MIGRATE_ON_START` picks the startup mode: `check` (default: refuse to start against the wrong
schema), `apply` (take the migration lock and upgrade; safe with any number of workers or
replicas) or `off`. A refused start exits before the server accepts a request.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from tortoise import Tortoise

from langlearn import MODES, ConfigError, database, history
from service.routes import router

HEALTH_TIMEOUT_SECONDS = 2.0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    mode = os.environ.get("MIGRATE_ON_START", "check").strip() or "check"
    if mode not in MODES:
        raise ConfigError(f"MIGRATE_ON_START={mode!r} is not a startup mode; use one of {', '.join(MODES)}")
    async with database(migrate=mode) as startup:
        app.state.startup = startup
        yield


app = FastAPI(title="langlearn example service", lifespan=lifespan)
app.include_router(router)


class Health(BaseModel):
    status: str
    database: str
    version: str | None = None
    head: str | None = None
    pending: int | None = None
    unknown: list[str] = []
    error: str | None = None


@app.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health():
    """Whether the database answers, the schema version it is at and how many migrations it lacks."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            async with Tortoise.get_connection("default").acquire_connection() as connection:
                state = await history.read_state(connection)
    except Exception as error:
        body = Health(status="unavailable", database="unreachable", error=" ".join(str(error).split()) or type(error).__name__)
        return JSONResponse(status_code=503, content=body.model_dump())
    return Health(
        status="ok" if state.at_head else "degraded",
        database="reachable",
        version=state.current,
        head=state.head,
        pending=len(state.pending),
        unknown=state.unknown,
    )
