"""What the service accepts as a request body: at most `MAX_BODY_BYTES`, and strict JSON.

The size limit is FastAPI's own (`FastAPI(max_body_size=...)`, set in `service.app`): a declared
`Content-Length` over the limit is refused before any byte is read (Starlette's plain-text 413), a
chunked body as soon as the bytes received pass it (413 `too_large`, `service.errors`).

Python's `json` accepts more than JSON: `NaN`, `Infinity` and `-Infinity`, numbers too large for a
float (`1e400` becomes infinity), lone surrogates (`"\\ud800"`, which no UTF-8 text can hold) and
NUL (which PostgreSQL text cannot hold). A body holding any of them, anywhere, is refused here as
a JSON decode error (422 `invalid_request`, naming the problem, never the value), before
validation, so no route and no log line ever sees such a value. `StrictJSONRoute` is the
one place it happens: every router of the service uses it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response

from service.config import positive
from service.timeouts import BoundedRoute

# 256 KiB: a lesson attempt's answers (at most 1000 characters each) with room to spare; every other body is < 2 KiB
MAX_BODY_BYTES = positive("SERVICE_MAX_BODY_BYTES", 256 * 1024, int)

UNREPRESENTABLE = re.compile(r"[\x00\ud800-\udfff]")  # NUL, and a surrogate a decoded str holds only when it was lone


class StrictJSONError(json.JSONDecodeError):
    """A body that Python's `json` would accept but JSON (RFC 8259) or PostgreSQL would not."""


def strict_loads(body: bytes) -> Any:
    """The JSON value of `body` (UTF-8), refusing what `json.loads` lets through; a JSONDecodeError otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise StrictJSONError("the body is not UTF-8", "", error.start) from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise StrictJSONError("the body nests too deeply", text, 0) from None
    except json.JSONDecodeError:  # ours from the hooks below, or the decoder's own
        raise
    except ValueError as error:  # an integer of more than 4300 digits
        raise StrictJSONError(f"a number cannot be read ({str(error).split(';')[0]})", text, 0) from None
    _refuse_unrepresentable(value, text)
    return value


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON number", name, 0)


def _finite(literal: str) -> float:
    number = float(literal)
    if number in (float("inf"), float("-inf")):
        raise StrictJSONError("a number too large for a double is not accepted", literal, 0)
    return number


def _refuse_unrepresentable(value: Any, text: str) -> None:
    """Walk every key and string of the parsed body (iteratively: a deep body must not overflow the stack)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and (found := UNREPRESENTABLE.search(item)):
            what = "NUL (\\u0000)" if found.group() == "\x00" else "a lone surrogate (\\ud800-\\udfff)"
            raise StrictJSONError(f"a string holds {what}, which text cannot store", text, 0)


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_loads(await self.body())
        return self._json


class StrictJSONRoute(BoundedRoute):
    """A BoundedRoute whose JSON body is parsed by `strict_loads`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
