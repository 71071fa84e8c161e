"""The example service's knobs, read once from the environment when the app is imported.

A bad value stops the service before it serves with one line naming the variable and the fix
(a `ConfigError`, which uvicorn's log shows as that line: see `service.app.OneLineRefusal`).
docs/security.md lists every knob with what it guards.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TypeVar

from langlearn import ConfigError

N = TypeVar("N", int, float)

ON, OFF = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}
SECRET_MIN_BYTES = 32
MAKE_A_SECRET = "python -c \"import secrets; print(secrets.token_urlsafe(48))\""


def positive(name: str, default: N, parse: Callable[[str], N]) -> N:
    """A positive, finite number (`parse` is int or float); `default` when the variable is unset or blank."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        value = parse("0")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name}={raw!r} is not a positive {'whole ' if parse is int else ''}number; unset it for {default}")
    return value


def switch(name: str) -> bool:
    """An on/off setting, off unless set to 1, true, yes or on."""
    raw = os.environ.get(name, "").strip().lower()
    if raw not in ON | OFF:
        raise ConfigError(f"{name}={raw!r} is neither on nor off; use 1 or 0")
    return raw in ON


def secret(name: str) -> bytes | None:
    """A shared secret of at least 32 bytes, or None when the variable is unset (the feature it unlocks is off)."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    if len(raw.strip().encode()) < SECRET_MIN_BYTES:
        raise ConfigError(f"{name} is shorter than {SECRET_MIN_BYTES} bytes; make one with {MAKE_A_SECRET}, or unset it")
    return raw.strip().encode()
