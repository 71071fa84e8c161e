"""Settings: the one place the database comes from.

`DATABASE_URL` (`postgres://user:pass@host:port/db`) names the database. When it is unset, the
private server of `langlearn.local_server` (the `[local]` extra) is started (or reused) instead; set
but empty is a mistake (a secret that failed to mount), refused rather than silently replaced. A
malformed or unreachable URL raises `ConfigError`, whose message is one line naming the problem and
the fix, and never holds the password: every printable form of a URL goes through `redact()`.

The URL itself (redaction, validation, what each driver gets) is `langlearn.urls`; this module
connects with it (`open_connection()`, with one-line errors) and builds Tortoise's config.

The application's pool (`PoolOptions`): at most `LANGLEARN_POOL_SIZE` connections per process
(default 5, Tortoise's), each session with `lock_timeout` = `LANGLEARN_POOL_LOCK_TIMEOUT` seconds
(default 2, 0 for none), so a request waits that long at most for a row another transaction holds
(a user's wallet, an attempt's key) instead of holding its pooled connection until the request's budget
runs out. A setting, sent when the connection opens: no round trip per query.

Hot standbys (optional): `DATABASE_REPLICA_URL` holds one standby's URL, or several separated by
spaces (a URL holds no unencoded space; a host list inside one URL is one pool that fails over,
not several to spread reads over). Each is validated like DATABASE_URL, its errors naming
DATABASE_REPLICA_URL; `tortoise_config` gives each a connection of its own (`replica1`, ...), with
the same pool options, and `langlearn.routing` decides which query goes where. Unset: no standby.

The config Aerich's CLI loads is `langlearn.history.aerich.TORTOISE_ORM` (`AERICH_CONFIG`).
"""

from __future__ import annotations

import math
import os
import socket
import ssl
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from langlearn.errors import ConfigError
from langlearn.local_server import Announce, ensure_running
from langlearn.urls import EMPTY_MESSAGE, connect_args, hosts, one_line, query_parameters, tortoise_connection, validate_url

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
# `ALTER DATABASE x SET langlearn.environment = '...'` marks a database; only these values say "not production"
ENVIRONMENT_SETTING = "langlearn.environment"
NON_PRODUCTION = frozenset({"development", "test"})
CONNECT_TIMEOUT_SECONDS = 5.0

POOL_SIZE_VARIABLE, POOL_LOCK_TIMEOUT_VARIABLE = "LANGLEARN_POOL_SIZE", "LANGLEARN_POOL_LOCK_TIMEOUT"
DEFAULT_POOL_SIZE = 5  # Tortoise's own default
# well below a request's budget (the example service's is 10 s), so a request stuck behind a lock still gets an answer
DEFAULT_POOL_LOCK_TIMEOUT = 2.0

AppsConfig = Mapping[str, Mapping[str, Any]]
# what `[tool.aerich] tortoise_orm` names: the config with the migration lock and limits for Aerich's CLI
AERICH_CONFIG = "langlearn.history.aerich.TORTOISE_ORM"

def database_url(announce: Announce | None = None) -> str:
    """The validated DATABASE_URL, or the private server's when it is unset (set but blank is an error)."""
    raw = os.environ.get("DATABASE_URL")
    if raw is None:
        return ensure_running(announce=announce)
    if not raw.strip():
        raise ConfigError(EMPTY_MESSAGE)
    return validate_url(raw)


REPLICA_URL_VARIABLE = "DATABASE_REPLICA_URL"
STANDBY_PREFIX = "replica"  # the standbys' Tortoise connections: replica1, replica2, ...


def as_setting(variable: str, error: ConfigError) -> ConfigError:
    """A URL's ConfigError (which names DATABASE_URL) naming the setting the URL came from instead."""
    return ConfigError(str(error).replace("DATABASE_URL", variable))


def replica_urls(given: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The standbys' validated URLs: `given` (one URL, several separated by spaces, or a sequence), else
    DATABASE_REPLICA_URL's; () when neither is set. Set but blank is refused, like DATABASE_URL."""
    raw = os.environ.get(REPLICA_URL_VARIABLE) if given is None else given
    if raw is None:
        return ()
    texts = raw.split() if isinstance(raw, str) else list(raw)
    if not texts:
        raise ConfigError(f"{REPLICA_URL_VARIABLE} is set but empty; unset it to read from the primary only, "
                          "or set it to one standby's URL (several separated by spaces)")
    try:
        return tuple(validate_url(text) for text in texts)
    except ConfigError as error:
        raise as_setting(REPLICA_URL_VARIABLE, error) from None


def marked_production(marker: str | None) -> bool:
    """Whether a database's `langlearn.environment` marks it production: any value but development or
    test (trimmed, in any case), so `Production`, `prod` or a typo fail closed. Unset means unmarked."""
    return marker is not None and marker.strip().lower() not in NON_PRODUCTION


def environment_number(variable: str, default: float, *, integer: bool = False, minimum: float = 0) -> float:
    """The number in the environment variable (unset or blank: `default`); anything else than a finite number
    of at least `minimum` (a whole one if `integer`) is a one-line ConfigError naming the variable."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = math.nan  # refused below, with the rest
    if not (math.isfinite(value) and value >= minimum):
        kind = "a whole number" if integer else "a number of seconds"
        raise ConfigError(f"{variable}={raw!r} is not {kind} of at least {minimum:g}; set it like {default:g}, or unset it")
    return value


@dataclass(frozen=True)
class PoolOptions:
    """The application's connection pool: `size` connections at most (None: the URL's `maxsize`, else 5), and
    how long a query waits for a lock (`lock_timeout`, seconds; 0 waits for ever)."""

    size: int | None = None
    lock_timeout: float = DEFAULT_POOL_LOCK_TIMEOUT

    def __post_init__(self) -> None:
        if self.size is not None and not (isinstance(self.size, int) and self.size >= 1):
            raise ValueError(f"pool_size must be a whole number of at least 1, not {self.size!r}")
        if not (math.isfinite(self.lock_timeout) and self.lock_timeout >= 0):
            raise ValueError(f"pool_lock_timeout must be a number of seconds of at least 0, not {self.lock_timeout!r}")

    @classmethod
    def from_environment(cls, size: int | None = None, lock_timeout: float | None = None) -> PoolOptions:
        """The arguments given, else LANGLEARN_POOL_SIZE and LANGLEARN_POOL_LOCK_TIMEOUT, else the defaults."""
        if size is None and os.environ.get(POOL_SIZE_VARIABLE, "").strip():
            size = int(environment_number(POOL_SIZE_VARIABLE, DEFAULT_POOL_SIZE, integer=True, minimum=1))
        if lock_timeout is None:
            lock_timeout = environment_number(POOL_LOCK_TIMEOUT_VARIABLE, DEFAULT_POOL_LOCK_TIMEOUT)
        return cls(size, lock_timeout)

    def server_settings(self) -> dict[str, str]:
        """The session settings every pooled connection opens with (PostgreSQL reads "0" as no limit)."""
        return {"lock_timeout": f"{round(self.lock_timeout * 1000)}ms" if self.lock_timeout else "0"}


# --- connecting ------------------------------------------------------------------------------------


def server_address(url: str) -> str:
    """`host:port` of a validated URL, as messages name the server (`[::1]:5432` for IPv6; a host list
    as `h1:5432,h2:5433`)."""
    return ",".join(host.address for host in hosts(url))


def connect_failure(url: str, error: BaseException, suffix: str = "") -> ConfigError:
    """The one-line ConfigError for a failed connection to `url` (already validated), naming the cause and the fix."""
    parts = urlsplit(url)
    server, database = server_address(url), unquote(parts.path.lstrip("/"))
    user = unquote(parts.username or "")
    reason = one_line(error) or type(error).__name__
    if isinstance(error, asyncpg.TargetServerAttributeNotMatched):
        wanted = query_parameters(parts.query).get("target_session_attrs", "any")
        message = (f"no server of {server} is what target_session_attrs={wanted} asks for (a failover under way?); "
                   "wait for it, or fix the host list or target_session_attrs in DATABASE_URL")
    elif isinstance(error, asyncpg.InvalidCatalogNameError):
        message = f"database {database!r} does not exist on {server}; create it or fix DATABASE_URL"
    elif isinstance(error, asyncpg.InvalidPasswordError):
        message = f"password authentication failed for user {user!r} at {server}/{database}; fix the credentials in DATABASE_URL"
    elif isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):
        message = f"PostgreSQL at {server}/{database} refused user {user!r} ({reason}); fix DATABASE_URL"
    elif isinstance(error, (asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)):
        message = f"PostgreSQL at {server} is not accepting connections ({reason}); is the server starting, or at its connection limit?"
    elif isinstance(error, asyncpg.PostgresError):
        message = f"PostgreSQL at {server}/{database} refused the connection ({reason}); fix DATABASE_URL"
    elif isinstance(error, ConnectionError) and "rejected SSL upgrade" in str(error):
        message = (f"PostgreSQL at {server} does not accept SSL connections, which DATABASE_URL's sslmode requires; "
                   "enable SSL on the server, or use sslmode=prefer or disable")
    elif isinstance(error, ssl.SSLError):
        message = f"the SSL connection to PostgreSQL at {server} failed ({one_line(error.reason or error)}); check sslmode and sslrootcert in DATABASE_URL"
    elif isinstance(error, socket.gaierror):
        servers = hosts(url)
        which = f"the host {servers[0].name!r}" if len(servers) == 1 else f"a host of {server}"
        message = f"cannot resolve {which} of DATABASE_URL ({error.strerror or reason}); fix the host name"
    elif isinstance(error, TimeoutError):
        message = f"cannot reach PostgreSQL at {server} (timed out); is the server running and DATABASE_URL right?"
    elif isinstance(error, OSError):
        message = f"cannot reach PostgreSQL at {server} ({error.strerror or reason}); is the server running and DATABASE_URL right?"
    else:
        message = f"cannot connect to PostgreSQL at {server} ({type(error).__name__}: {reason}); fix DATABASE_URL"
    return ConfigError(f"{message}{suffix}")


async def open_connection(url: str, timeout: float | None = None) -> asyncpg.Connection:
    """One asyncpg connection to the database of `url`, its query parameters applied; any failure is a
    one-line ConfigError. `timeout` defaults to the URL's connect_timeout, else CONNECT_TIMEOUT_SECONDS."""
    dsn, kwargs = connect_args(url)
    kwargs["timeout"] = timeout if timeout is not None else kwargs.get("timeout", CONNECT_TIMEOUT_SECONDS)
    try:
        return await asyncpg.connect(dsn, **kwargs)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as error:
        raise connect_failure(validate_url(url), error) from None


async def check_reachable(url: str, timeout: float | None = None) -> None:
    """Connect once and run `SELECT 1`, translating failures into one-line ConfigErrors."""
    connection = await open_connection(url, timeout)
    try:
        await connection.fetchval("SELECT 1")
    finally:
        await connection.close()


def tortoise_config(
    url: str, apps: AppsConfig | None = None, server_settings: Mapping[str, str] | None = None, pool: PoolOptions | None = None,
    replicas: Sequence[str] = (),
) -> dict[str, Any]:
    """Tortoise's config: this package's app `models` on `url`, plus a service's own `apps`
    (`{"shop": {"models": ["myservice.models"]}}`, on the same connection unless they name another);
    `server_settings` are set on every connection of its pool, after `pool`'s. Each of the `replicas`
    (validated standby URLs) gets a connection `replica1`, `replica2`, ... with the same pool options."""

    def pooled(target: str) -> dict[str, Any]:
        connection = tortoise_connection(target, {**(pool.server_settings() if pool else {}), **(server_settings or {})})
        if pool and pool.size is not None:
            credentials = connection["credentials"]
            credentials["maxsize"] = pool.size
            credentials["minsize"] = min(credentials.get("minsize", 1), pool.size)  # asyncpg refuses a minimum above the maximum
        return connection

    standbys = {f"{STANDBY_PREFIX}{index}": pooled(replica) for index, replica in enumerate(replicas, 1)}
    config: dict[str, Any] = {
        "connections": {"default": pooled(url), **standbys},
        "apps": {APP_LABEL: {"models": list(MODEL_MODULES), "default_connection": "default"}},
        "use_tz": True,
        "timezone": "UTC",
    }
    for label, app in (apps or {}).items():
        if label == APP_LABEL:
            raise ConfigError(f"the app label {APP_LABEL!r} belongs to langlearn's models; register your models under another label")
        config["apps"][label] = {"default_connection": "default", **app}
    return config


def __getattr__(name: str) -> Any:
    if name == "TORTOISE_ORM":  # the name Aerich's config used before the history's own module had it
        print(f"error: Aerich's config is now {AERICH_CONFIG}; set `tortoise_orm = \"{AERICH_CONFIG}\"` under [tool.aerich] in pyproject.toml",
              file=sys.stderr)
        raise SystemExit(2)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
