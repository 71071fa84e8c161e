"""A time budget for a request's database work, so that a database that stops answering (a network
partition, a frozen server) costs a client seconds, not minutes.

Cancelling asyncpg work does not end it at once: the driver then sends a cancel request and waits
for it before the connection goes back to the pool, and over a dead network that wait lasts as long
as its connect timeout (60 s). So the work runs in a task of its own; when the budget is spent the
request answers at once (TimeoutError, an OSError: a 503 through `service.errors`) and the task is
cancelled and left to wind down in the background.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

from langlearn.operations.retry import retry_seconds
from service.config import positive
from service.errors import log

T = TypeVar("T")


# how long a request may wait for the database before it answers 503
DATABASE_TIMEOUT_SECONDS = positive("DATABASE_TIMEOUT_SECONDS", 10.0, float)
# how long a keyed write retries a failover (langlearn.operations.retry, which reads it per call): read here too, so a
# bad value stops the service at start. The request's budget above still bounds it: past that, a timeout's 503.
retry_seconds()

_winding_down: set[asyncio.Task[Any]] = set()


def _forget(task: asyncio.Task[Any]) -> None:
    _winding_down.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("abandoned database work ended with %r", task.exception())


async def within(seconds: float, work: Coroutine[Any, Any, T]) -> T:
    """The result of `work`, or TimeoutError after `seconds` (the work is then cancelled, not awaited)."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    _winding_down.add(task)  # a reference, so the task is not garbage-collected while it winds down
    task.add_done_callback(_forget)
    raise TimeoutError(f"the database did not answer within {seconds:g} s")


class BoundedRoute(APIRoute):
    """An APIRoute whose handler gets at most DATABASE_TIMEOUT_SECONDS."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            return await within(DATABASE_TIMEOUT_SECONDS, handler(request))

        return bounded
