"""Keyed writes survive a failover: `retried_on_failover` runs an operation again when the database went away under it.

A failover (Patroni promoting a standby, a primary restarted) shows up in the driver as a lost connection
(`errors.CONNECTION_LOST`: ConnectionDoesNotExistError mid-query, refused connections while no node is
primary, CannotConnectNowError from a node starting up, TargetServerAttributeNotMatched when a host list
holds no read-write node yet) or as a write refused by a node that is a standby now (`errors.READ_ONLY`).
Each of these either rolled the transaction back or cut the connection after COMMIT was sent, and the client
cannot tell which. Only an operation whose effect is recorded under the caller's idempotency key may be
run again: a retry whose first COMMIT did land finds the key and returns the first result (`replayed`),
so it applies once either way.

Retried (one decorator, on each operation): `wallet.earn`, `wallet.spend`, `wallet.purchase` (the ledger's
key), `lessons.complete_lesson` (the attempt's key), `leagues.close_week` (the week: a close run twice writes
nothing the second time); a read may use it too (the example service's token check does). Never retried here:
`accounts.register` (a retry of a landed COMMIT would answer `taken` for the caller's own account),
`accounts.sign_in` and `refresh` (a rotated refresh token sent twice is reuse, which revokes the device's
chain), `wallet.activate` and `reviews.review_word` (each call moves the state once more),
`social.follow`/`unfollow` (idempotent in effect, but the client's PUT/DELETE retry is the right layer: the
answer says whether this call changed anything). Their driver error reaches the caller at once
(`errors.database_refusal`: a 503).

The bound: tries go on, with a doubling pause (`FIRST_PAUSE_SECONDS` up to `LONGEST_PAUSE_SECONDS`), until
`LANGLEARN_WRITE_RETRY_SECONDS` (default `DEFAULT_RETRY_SECONDS`, 0: one try) have passed since the first
try; then `Unavailable` (503, `Retry-After`), raised from the last error. The default sits below the example
service's request budget (10 s), so a client gets the 503 rather than a timeout, and it covers a Patroni
failover after a crash (`primary_start_timeout: 0`, `loop_wait` 1 s: 1.5-3 s here, docs/scale-out.md). A
whole node lost takes up to Patroni's `ttl`: then the 503 reaches the client, which sends the same key again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from langlearn.operations.errors import Unavailable, failover_error
from langlearn.settings import environment_number

RETRY_SECONDS_VARIABLE = "LANGLEARN_WRITE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 8.0
FIRST_PAUSE_SECONDS, LONGEST_PAUSE_SECONDS = 0.1, 0.5  # a new primary is found within half a second of its promotion

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("langlearn.operations.retry")


def retry_seconds() -> float:
    """How long a keyed write keeps trying after a failover error (read per call: cheap, and tests change it)."""
    return environment_number(RETRY_SECONDS_VARIABLE, DEFAULT_RETRY_SECONDS)


def retried_on_failover(operation: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """`operation` tried again on a failover error within the bound, then `Unavailable`. Only for operations
    that apply once under their idempotency key (the module's docstring lists them)."""

    @functools.wraps(operation)
    async def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
        deadline = time.monotonic() + retry_seconds()
        pause = FIRST_PAUSE_SECONDS
        tries = 0
        while True:
            tries += 1
            try:
                return await operation(*args, **kwargs)
            except Exception as error:
                if not failover_error(error):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable(f"the database is not reachable right now (tried {tries} times); retry later") from error
                # the driver's words may name the host and user: the log keeps only the kind
                log.warning("%s: %s, try %d again in %.1f s", operation.__name__, type(error).__name__, tries + 1, min(pause, left))
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, LONGEST_PAUSE_SECONDS)

    return retrying
