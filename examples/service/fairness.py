"""Fairness: at most `USER_CONCURRENCY_LIMIT` requests of one account in flight per worker.

Each worker has a pool of a few connections (`LANGLEARN_POOL_SIZE`, default 5). Without a bound, one
account's concurrent requests, each waiting for that account's wallet lock while holding a pooled
connection, take them all, and every other user waits behind them. So a request carrying a valid
access token counts against its subject while it runs (its response sent); past the limit (default 4,
below the pool's size) it is refused at once with 429 `too_many_requests` and `Retry-After`, before it
touches the database.

The subject is read from the token the way `service.auth` verifies it (signature, expiry, type: no
database), so a forged token cannot spend another user's share; a request without a valid token is not
counted (its route refuses it, or needs no account). The count lives in the worker: with W workers an
account may have W × limit requests in flight in all, each worker keeping room for everyone else.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from langlearn.operations.errors import Throttled, Unauthorized, status_of
from service import config
from service.auth import request_claims
from service.errors import RETRY_AFTER_HEADER, refusal_response

LIMIT = config.positive("USER_CONCURRENCY_LIMIT", 4, int)  # below the pool's 5 connections
THROTTLED = status_of(Throttled(""))
# declared by reference to the refusals' model (the routes' own responses put it in the document's components)
THROTTLED_RESPONSE = {
    "description": "Too many requests of this account at once (`too_many_requests`); retry after `Retry-After` seconds",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    "headers": RETRY_AFTER_HEADER,
}


class PerUserConcurrency:
    """ASGI middleware: refuses a request of an account that already has `limit` requests in flight here."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = subject(scope) if scope["type"] == "http" else None
        if user is None:
            return await self.app(scope, receive, send)
        if self.in_flight[user] >= self.limit:
            refusal = Throttled(f"this account already has {self.limit} requests in progress; retry when one has finished")
            return await refusal_response(refusal)(scope, receive, send)
        self.in_flight[user] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[user] -= 1
            if not self.in_flight[user]:
                del self.in_flight[user]  # the counter holds only the accounts in flight


def subject(scope: Scope) -> str | None:
    """The user id of a valid access token in the Authorization header; None without one."""
    scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
    key = getattr(scope["app"].state, "signing_key", None)  # set by the lifespan
    if scheme.lower() != "bearer" or not token or key is None:
        return None
    try:
        return str(request_claims(scope.setdefault("state", {}), key, token.strip())["sub"])
    except Unauthorized:
        return None


def install(app: FastAPI) -> None:
    """Bound each account's requests in flight (USER_CONCURRENCY_LIMIT, default 4), and declare the 429 on every
    operation that takes a token (FastAPI's documented way to extend the OpenAPI document)."""
    app.add_middleware(PerUserConcurrency, limit=LIMIT)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()  # kept as app.openapi_schema: changed here once
        for operations in document["paths"].values():
            for operation in operations.values():
                if operation.get("security"):
                    operation["responses"][str(THROTTLED)] = THROTTLED_RESPONSE
        return document

    app.openapi = openapi  # type: ignore[method-assign]
