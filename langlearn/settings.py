"""Settings: the one place the database comes from.

`DATABASE_URL` (`postgres://user:pass@host:port/db`) names the database. When it is unset, the
private server of `langlearn.local_server` (the `[local]` extra) is started (or reused) instead. A malformed or unreachable
URL raises `ConfigError`, whose message is one line naming the problem and the fix.

`TORTOISE_ORM` (read lazily, so importing this module never starts a server) is what the Aerich
CLI loads, per `[tool.aerich]` in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from langlearn.errors import ConfigError
from langlearn.local_server import Announce, ensure_running

# The Tortoise app label: Aerich's history records it, so it never changes (the Python package may).
APP_LABEL = "models"
MODELS_MODULE = "langlearn.models"
MODEL_MODULES = [MODELS_MODULE, "aerich.models"]


def package_folder(package: str, *parts: str) -> Path:
    """A folder of data files shipped inside `package`, found through importlib.resources.

    Aerich and the seed need real paths; pip always installs packages unpacked, so the resource is one."""
    folder = files(package).joinpath(*parts)
    if not isinstance(folder, Path):
        raise ConfigError(f"{package} is installed in a form without real files ({type(folder).__name__}); install it unpacked with pip")
    return folder


# Aerich's `location`: the folder holding one folder of migration files per app, shipped in the package.
MIGRATIONS_LOCATION = str(package_folder("langlearn.migrations"))
SCHEMES = {"postgres", "postgresql", "asyncpg"}
# `ALTER DATABASE x SET langlearn.environment = '...'` marks a database; only these values say "not production"
ENVIRONMENT_SETTING = "langlearn.environment"
NON_PRODUCTION = frozenset({"development", "test"})
CONNECT_TIMEOUT_SECONDS = 5.0

AppsConfig = Mapping[str, Mapping[str, Any]]


def redact(url: str) -> str:
    """The URL with its password hidden, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def validate_url(url: str) -> str:
    """Check the shape of a DATABASE_URL and return it normalised to the `postgres://` scheme."""
    hint = "expected postgres://user:password@host:port/database"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise ConfigError(f"DATABASE_URL {redact(url)!r} is malformed ({error}); {hint}") from None
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"DATABASE_URL scheme {parts.scheme or '(none)'!r} is not PostgreSQL; {hint}")
    if not parts.hostname:
        raise ConfigError(f"DATABASE_URL {redact(url)!r} names no host; {hint}")
    if not unquote(parts.path.lstrip("/")):
        raise ConfigError(f"DATABASE_URL {redact(url)!r} names no database; {hint}")
    if port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:5432")
    return parts._replace(scheme="postgres").geturl()


def database_url(announce: Announce | None = None) -> str:
    """The validated DATABASE_URL, or the private server's when it is unset."""
    raw = os.environ.get("DATABASE_URL", "").strip()
    if raw:
        return validate_url(raw)
    return ensure_running(announce=announce)


def marked_production(marker: str | None) -> bool:
    """Whether a database's `langlearn.environment` marks it production: any value but development or
    test (trimmed, in any case), so `Production`, `prod` or a typo fail closed. Unset means unmarked."""
    return marker is not None and marker.strip().lower() not in NON_PRODUCTION


def asyncpg_url(url: str) -> str:
    """The URL in the scheme asyncpg accepts."""
    return "postgresql://" + url.split("://", 1)[1]


async def check_reachable(url: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Connect once and run `SELECT 1`, translating failures into one-line ConfigErrors."""
    import asyncpg

    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port}/{parts.path.lstrip('/')}"
    try:
        connection = await asyncpg.connect(asyncpg_url(url), timeout=timeout)
    except asyncpg.InvalidCatalogNameError:
        raise ConfigError(f"database {parts.path.lstrip('/')!r} does not exist on {parts.hostname}:{parts.port}; create it or fix DATABASE_URL") from None
    except asyncpg.InvalidPasswordError:
        raise ConfigError(f"password authentication failed for user {parts.username!r} at {where}; fix the credentials in DATABASE_URL") from None
    except asyncpg.InvalidAuthorizationSpecificationError as error:
        raise ConfigError(f"PostgreSQL at {where} refused user {parts.username!r} ({error}); fix DATABASE_URL") from None
    except (TimeoutError, OSError) as error:
        reason = "timed out" if isinstance(error, asyncio.TimeoutError) else (error.strerror or str(error))
        raise ConfigError(f"cannot reach PostgreSQL at {parts.hostname}:{parts.port} ({reason}); is the server running and DATABASE_URL right?") from None
    try:
        await connection.fetchval("SELECT 1")
    finally:
        await connection.close()


def tortoise_config(url: str, apps: AppsConfig | None = None) -> dict[str, Any]:
    """Tortoise's config: this package's app `models` on `url`, plus a service's own `apps`
    (`{"shop": {"models": ["myservice.models"]}}`, on the same connection unless they name another)."""
    config: dict[str, Any] = {
        "connections": {"default": url},
        "apps": {APP_LABEL: {"models": list(MODEL_MODULES), "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }
    for label, app in (apps or {}).items():
        if label == APP_LABEL:
            raise ConfigError(f"the app label {APP_LABEL!r} belongs to langlearn's models; register your models under another label")
        config["apps"][label] = {"default_connection": "default", **app}
    return config


def _checked_config_for_cli() -> dict[str, Any]:
    """Resolve and probe the database for the Aerich CLI, exiting with one line on failure."""
    try:
        url = database_url(announce=lambda line: print(line, file=sys.stderr))
        # The CLI imports this inside its own event loop, so probe on a private one.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, check_reachable(url)).result()
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
    return tortoise_config(url)


def __getattr__(name: str) -> Any:
    if name == "TORTOISE_ORM":
        return _checked_config_for_cli()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
