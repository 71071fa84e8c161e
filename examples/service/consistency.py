"""Read-your-writes for each client once the service reads from hot standbys (`DATABASE_REPLICA_URL`).

A response to a request that wrote carries `X-Read-Token: <LSN>`, the primary's WAL position after the write's
COMMIT (`langlearn.routing.write_operation`). The client sends the last token it got back in `X-Read-Token` on
its next requests; that request's reads (its access token's check included) then see the write: they go to a
standby that has replayed it within `LANGLEARN_REPLICA_WAIT` (default 50 ms), else to the primary. A header, not
a cookie: the clients are apps holding bearer tokens, each device keeps its own token, and nothing is sent that
the client did not choose to send (no cookie jar, no CSRF question). A malformed token is refused: 400.

A client that does not echo the token (an older app) would read a standby that may not have its write yet. So an
account that wrote is pinned to the primary for `READ_PIN_SECONDS` (default 5) after each write, for every
request that comes without a token. The pin lives in the worker that served the write: with several workers or
replicas a request may land elsewhere, so the token is the guarantee and the pin only narrows the window.

Without standbys this middleware passes requests through untouched: no header, no pin, no round trip.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from langlearn.operations.errors import InvalidRequest
from langlearn.routing import check_token, primary_reads, read_after, standbys, track_writes
from service import config
from service.errors import refusal_response
from service.fairness import subject

TOKEN_HEADER = "X-Read-Token"
PIN_SECONDS = config.positive("READ_PIN_SECONDS", 5.0, float)


class ReadYourWrites:
    """ASGI middleware: a request's reads see the writes of the token it carries, or of its account's recent writes."""

    def __init__(self, app: ASGIApp, pin_seconds: float) -> None:
        self.app = app
        self.pin_seconds = pin_seconds
        self.pinned_until: dict[str, float] = {}  # account -> until when its token-less reads go to the primary

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not standbys():
            return await self.app(scope, receive, send)
        token = Headers(scope=scope).get(TOKEN_HEADER)
        if token is not None:
            try:
                check_token(token.strip())
            except ValueError as error:
                refusal = InvalidRequest(f"the {TOKEN_HEADER} header: {error}; send back the header of the last response that had one")
                return await refusal_response(refusal)(scope, receive, send)
        account = subject(scope)
        async with track_writes() as written:

            async def send_with_token(message: Message) -> None:
                if message["type"] == "http.response.start" and written.lsn is not None:
                    MutableHeaders(scope=message).append(TOKEN_HEADER, written.lsn)
                    if account is not None:
                        self._pin(account)
                await send(message)

            if token is None and account is not None and self._pinned(account):
                async with primary_reads():
                    return await self.app(scope, receive, send_with_token)
            async with read_after(token.strip() if token else None):
                return await self.app(scope, receive, send_with_token)

    def _pin(self, account: str) -> None:
        now = time.monotonic()
        for expired in [name for name, until in self.pinned_until.items() if until <= now]:  # holds only recent writers
            del self.pinned_until[expired]
        self.pinned_until[account] = now + self.pin_seconds

    def _pinned(self, account: str) -> bool:
        return self.pinned_until.get(account, 0.0) > time.monotonic()


def install(app: FastAPI) -> None:
    """Read-your-writes per client (`X-Read-Token`; READ_PIN_SECONDS for clients that do not echo it)."""
    app.add_middleware(ReadYourWrites, pin_seconds=PIN_SECONDS)
