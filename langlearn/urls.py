"""DATABASE_URL as text: its one printable form, its validation, and what each driver gets from it.

`redact()` is the only way a URL is printed: it hides the password however malformed the URL is.
`validate_url()` refuses what would be read differently by different parsers (an unencoded reserved
character in the password, an unknown query parameter) in one line that never echoes the password.
The query parameters (`QUERY_PARAMETERS`) are then handed to whoever understands them:
`connect_args()` for asyncpg, `tortoise_connection()` for Tortoise's pool (the pool sizes go only
there), `libpq_url()` for psql and pg_dump.

A URL may name several servers (`postgres://u:p@h1:5432,h2:5433/db`, libpq's spelling): each is
validated like a single host and given the default port 5432 if it has none; `hosts()` lists them.
asyncpg and libpq try them in order and keep the first whose role matches `target_session_attrs`
(`read-write` finds the primary after a failover). Tortoise takes only one port, so its pool gets the
host list and a `connect` (`HostListConnect`) that hands asyncpg the port of each.
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from langlearn.errors import ConfigError

TORTOISE_ENGINE = "tortoise.backends.asyncpg"
SCHEMES = {"postgres", "postgresql", "asyncpg"}

URL_SHAPE = "postgres://user:password@host:port/database"
HINT = f"expected {URL_SHAPE}"
EMPTY_MESSAGE = f"DATABASE_URL is set but empty; unset it to use the private server, or set it to {URL_SHAPE}"
ENCODE_COMMAND = """python -c "import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=''))" 'PASSWORD'"""

# --- redaction -------------------------------------------------------------------------------------

_SCHEME_SLASHES = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.\-]*://")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(//)?")
# What may follow the `@` that ends the credentials: host[:port], a host list, an IPv6 literal (even
# a broken one). Never whitespace, another `@`, or the `=&;'"` of a query or a password.
_PLAUSIBLE_HOSTS = re.compile(r"[^\s@/?#=&;'\"\\<>{}|^`]*")
# host[:port][,host[:port]...] with nothing that could be a password after a colon
_ONE_HOST = r"(?:\[[0-9A-Fa-f:.%\w]*\]?|[^:\[\]@,]*)(?::\d*)?"  # an IPv6 literal may lack its closing bracket
_HOST_LIST = re.compile(rf"{_ONE_HOST}(?:,{_ONE_HOST})*")
# a query parameter carrying a secret (password=, sslpassword=), however spelled
_SECRET_PARAMETER = re.compile(r"(?i)([?&;][^=&#]*pass(?:word)?=)[^&#]*")


def _authority(rest: str) -> str:
    """`rest` up to the first / ? or # (after `scheme://`: the credentials and the hosts)."""
    return re.split(r"[/?#]", rest, maxsplit=1)[0]


def _credentials_end(rest: str) -> int | None:
    """Where the credentials of `rest` (a URL after `scheme://`) end: the last `@` followed by a
    plausible host, else the last `@`; None when there is no `@` at all."""
    positions = [index for index, char in enumerate(rest) if char == "@"]
    for index in reversed(positions):
        if _PLAUSIBLE_HOSTS.fullmatch(_authority(rest[index + 1 :])):
            return index
    return positions[-1] if positions else None


def redact(url: str) -> str:
    """The URL with its password hidden, fit for logs and messages: the one printable form of a URL.

    Robust to malformed URLs (an unencoded `@ / ? #` in the password, a broken IPv6 literal): the
    credentials run to the last `@` followed by a plausible host, and everything after the first `:`
    in them is hidden; a `password=` in the query is hidden too. Hiding too much is fine; a password
    shows never."""
    match = _SCHEME_SLASHES.match(url)
    head, rest = (url[: match.end()], url[match.end() :]) if match else ("", url)
    end = _credentials_end(rest)
    if end is not None:
        user, colon, _ = rest[:end].partition(":")
        credentials, rest = user + (":***" if colon else ""), rest[end:]
    else:
        authority = _authority(rest)
        if ":" in authority and not _HOST_LIST.fullmatch(authority):
            # no `@`, yet something other than a port follows a colon: perhaps `user:password` without a host
            return head + rest.partition(":")[0] + ":***"
        credentials = ""
    return head + credentials + _SECRET_PARAMETER.sub(r"\1***", rest)


# --- validation ------------------------------------------------------------------------------------

# What a user name or password may hold unencoded (RFC 3986 userinfo): unreserved, sub-delims, `:`, %XX.
_USERINFO = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*")

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
VERIFYING_SSL_MODES = ("require", "verify-ca", "verify-full")
TLS_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1, "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
SESSION_ATTRIBUTES = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
SSL_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")
# Parameters that need an SSL context of their own (the rest of SSL is the `sslmode` string).
SSL_CONTEXT_PARAMETERS = (*SSL_FILES, "sslpassword", "ssl_min_protocol_version", "ssl_max_protocol_version")
POOL_PARAMETERS = {"minsize": "minsize", "min_size": "minsize", "maxsize": "maxsize", "max_size": "maxsize",
                   "max_queries": "max_queries", "max_inactive_connection_lifetime": "max_inactive_connection_lifetime"}
STATEMENT_CACHE_PARAMETERS = ("statement_cache_size", "max_cached_statement_lifetime", "max_cacheable_statement_size")
# The connection's parameters, libpq's names: what psql and pg_dump understand too
LIBPQ_PARAMETERS = (
    "sslmode", *SSL_FILES, "sslpassword", "sslnegotiation", "ssl_min_protocol_version", "ssl_max_protocol_version",
    "connect_timeout", "application_name", "options", "target_session_attrs", "krbsrvname", "gsslib", "passfile",
)
# Every query parameter DATABASE_URL may carry: libpq's names for the connection, Tortoise's for its pool.
QUERY_PARAMETERS = (*LIBPQ_PARAMETERS, *STATEMENT_CACHE_PARAMETERS, *POOL_PARAMETERS)
# What to write instead of parameters other tools accept
INSTEAD = {
    "timeout": "use connect_timeout=SECONDS",
    "ssl": "use sslmode=require (or verify-ca, verify-full)",
    "schema": "use options=-c%20search_path%3DSCHEMA",
    "password": "put the password in the URL (user:password@host), percent-encoded",
    "user": "put the user in the URL (user:password@host)",
    "host": "put the host in the URL (@host:port)",
    "port": "put the port in the URL (@host:port)",
    "dbname": "put the database in the URL's path (/database)",
    "database": "put the database in the URL's path (/database)",
}


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _refuse_parameter(name: str, problem: str) -> ConfigError:
    return ConfigError(f"DATABASE_URL parameter {name!r} {problem}")


def _number(name: str, value: str, *, integer: bool, minimum: float) -> float:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= minimum):
        what = "a whole number" if integer else "a number"
        bound = "above 0" if minimum > 0 and not integer else f"of at least {minimum:g}"
        raise _refuse_parameter(name, f"must be {what} {bound}, not {value!r}")
    return number


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _refuse_parameter(name, f"must be one of {', '.join(choices)}, not {value!r}")
    return value


def query_parameters(query: str) -> dict[str, str]:
    """The URL's query parameters, checked (the last of a repeated one wins); one-line ConfigError otherwise."""
    parameters: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in QUERY_PARAMETERS:
            instead = INSTEAD.get(name.lower(), f"the supported ones are {', '.join(QUERY_PARAMETERS)}")
            raise _refuse_parameter(name[:40], f"is not supported; {instead}")
        parameters[POOL_PARAMETERS.get(name, name)] = value
    for name, value in parameters.items():
        if name == "sslmode":
            _choice(name, value, SSL_MODES)
        elif name == "sslnegotiation":
            _choice(name, value, ("postgres", "direct"))
        elif name in ("ssl_min_protocol_version", "ssl_max_protocol_version"):
            _choice(name, value, tuple(TLS_VERSIONS))
        elif name == "target_session_attrs":
            _choice(name, value, SESSION_ATTRIBUTES)
        elif name == "gsslib":
            _choice(name, value, ("gssapi", "sspi"))
        elif name == "connect_timeout":
            _number(name, value, integer=False, minimum=math.ulp(0))
        elif name in ("minsize", "statement_cache_size", "max_cached_statement_lifetime", "max_cacheable_statement_size"):
            _number(name, value, integer=True, minimum=0)
        elif name in ("maxsize", "max_queries"):
            _number(name, value, integer=True, minimum=1)
        elif name == "max_inactive_connection_lifetime":
            _number(name, value, integer=False, minimum=0)
        elif name in SSL_FILES and not (os.path.isfile(value) and os.access(value, os.R_OK)):
            raise _refuse_parameter(name, f"names {value!r}, which is not a readable file")
    if "minsize" in parameters and "maxsize" in parameters and int(parameters["minsize"]) > int(parameters["maxsize"]):
        raise _refuse_parameter("minsize", f"({parameters['minsize']}) must not exceed maxsize ({parameters['maxsize']})")
    mode = parameters.get("sslmode")
    for name in SSL_CONTEXT_PARAMETERS:
        if name in parameters and mode not in VERIFYING_SSL_MODES:
            raise _refuse_parameter(name, f"needs sslmode=require, verify-ca or verify-full (sslmode={mode or 'prefer, the default,'} would not use it)")
    if parameters.get("sslnegotiation") == "direct" and mode not in VERIFYING_SSL_MODES:
        raise _refuse_parameter("sslnegotiation", "direct needs sslmode=require, verify-ca or verify-full")
    if "sslkey" in parameters and "sslcert" not in parameters:
        raise _refuse_parameter("sslkey", "needs sslcert=FILE, the certificate of that key")
    return parameters


def _check_credentials(authority: str) -> None:
    """Refuse a user name or password holding characters a URL reserves, without echoing either."""
    userinfo, at, _ = authority.rpartition("@")
    if not at:
        return
    user, _, password = userinfo.partition(":")
    for what, text in (("user name", user), ("password", password)):
        if not _USERINFO.fullmatch(text):
            raise ConfigError(
                f"the {what} in DATABASE_URL holds characters that must be percent-encoded in a URL "
                f"(such as @ / ? # [ ] % \\ \" a space or non-ASCII letters); encode it with: {ENCODE_COMMAND}"
            )


@dataclass(frozen=True)
class Host:
    """One server a URL names: `name` as the drivers get it (an IPv6 literal without brackets, a socket
    directory decoded), `port` a number (the default 5432 once validated)."""

    name: str
    port: int

    @property
    def address(self) -> str:
        """`host:port` as messages name the server (`[::1]:5432` for IPv6)."""
        return f"[{self.name}]:{self.port}" if ":" in self.name else f"{self.name}:{self.port}"


def _host_specs(netloc: str) -> list[str]:
    """The `host[:port]` items of a netloc (after the credentials), split at the commas of a host list."""
    return netloc.rpartition("@")[2].split(",")


@dataclass(frozen=True)
class _HostSpec:
    written: str  # the host as the URL spells it (percent-encoded, an IPv6 literal in brackets)
    name: str
    port: int | None


def _parse_host(spec: str) -> _HostSpec:
    """A `host[:port]` item checked as urllib checks a single host (ValueError otherwise); the name as
    written (hostname would lowercase a socket path), an IPv6 literal without its brackets."""
    parts = urlsplit(f"//{spec}")
    port, hostname = parts.port, parts.hostname  # both raise ValueError for a bad port or IPv6 literal
    if not hostname:
        raise ValueError("a host of its host list is empty")
    written = spec.rpartition("]")[0] + "]" if spec.startswith("[") else spec.partition(":")[0]
    return _HostSpec(written, hostname if spec.startswith("[") else unquote(written), port)


def hosts(url: str) -> tuple[Host, ...]:
    """The servers a validated URL names, in the order the drivers try them (one, or a host list)."""
    return tuple(Host(spec.name, spec.port or 5432) for spec in map(_parse_host, _host_specs(urlsplit(url).netloc)))


def validate_url(url: str) -> str:
    """Check the shape of a DATABASE_URL and return it normalised to the `postgres://` scheme.

    Checks the credentials (reserved characters must be percent-encoded) and the query parameters
    (`query_parameters`). No message holds the password."""
    url = url.strip()
    if not url:
        raise ConfigError(EMPTY_MESSAGE)
    named = _SCHEME.match(url)
    scheme = named.group(1).lower() if named else ""
    if scheme not in SCHEMES:
        raise ConfigError(f"DATABASE_URL scheme {scheme or '(none)'!r} is not PostgreSQL; {HINT}")
    if not named or not named.group(2):
        raise ConfigError(f"DATABASE_URL {redact(url)!r} is malformed (no // after {scheme}:); {HINT}")
    rest = url[named.end() :]
    authority = _authority(rest)
    after = rest[len(authority) :]
    if "@" in after:
        raise ConfigError(
            "DATABASE_URL holds an @ after its host, so its password probably holds an unencoded / ? # or @ "
            f"(an @ in the database name or a parameter must be written %40); percent-encode the password: {ENCODE_COMMAND}"
        )
    _check_credentials(authority)
    if "#" in after:
        raise ConfigError(f"DATABASE_URL holds a #, which ends a URL; write it %23 (percent-encode a password with: {ENCODE_COMMAND})")
    try:
        parts = urlsplit(url)
        specs = _host_specs(parts.netloc)
        if len(specs) == 1:
            port, hostname = parts.port, parts.hostname
        else:  # a host list: every item must be a host as good as a single one
            port, hostname = None, "list"
            listed = [_parse_host(spec) for spec in specs]
    except ValueError as error:
        raise ConfigError(f"DATABASE_URL {redact(url)!r} is malformed ({one_line(error)}); {HINT}") from None
    if not hostname:
        raise ConfigError(f"DATABASE_URL {redact(url)!r} names no host; {HINT}")
    if not unquote(parts.path.lstrip("/")):
        raise ConfigError(f"DATABASE_URL {redact(url)!r} names no database; {HINT}")
    query_parameters(parts.query)
    if len(specs) > 1:
        userinfo, at, _ = parts.netloc.rpartition("@")
        with_ports = ",".join(f"{spec.written}:{spec.port or 5432}" for spec in listed)
        parts = parts._replace(netloc=f"{userinfo}{at}{with_ports}")
    elif port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:5432")
    return parts._replace(scheme="postgres").geturl()


# --- what the drivers get --------------------------------------------------------------------------


def _ssl_context(mode: str, parameters: Mapping[str, str]) -> ssl.SSLContext:
    """An SSL context honouring libpq's sslrootcert, sslcert, sslkey, sslcrl, sslpassword and TLS versions."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = mode == "verify-full"
    rootcert = parameters.get("sslrootcert")
    if rootcert is None and mode != "require":  # libpq's default for verify-ca and verify-full
        try:
            default = Path(os.environ.get("PGSSLROOTCERT") or Path.home() / ".postgresql" / "root.crt")
        except RuntimeError:  # no home directory
            default = Path("/nonexistent")
        if not default.is_file():
            raise _refuse_parameter("sslmode", f"{mode} needs the server's CA certificate: add sslrootcert=FILE")
        rootcert = str(default)
    try:
        if rootcert is not None:  # libpq: with a root certificate, even `require` verifies the chain
            context.load_verify_locations(cafile=rootcert)
            context.verify_mode = ssl.CERT_REQUIRED
        else:
            context.verify_mode = ssl.CERT_NONE
        if "sslcrl" in parameters:
            context.load_verify_locations(cafile=parameters["sslcrl"])
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
        if "sslcert" in parameters:
            password = parameters.get("sslpassword") or None
            context.load_cert_chain(parameters["sslcert"], keyfile=parameters.get("sslkey"), password=password)
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        reason = error.strerror if isinstance(error, OSError) and error.strerror else one_line(error)
        raise ConfigError(f"the SSL files named by DATABASE_URL could not be loaded ({reason}); check sslrootcert, sslcert, sslkey, sslcrl and sslpassword") from None
    context.minimum_version = TLS_VERSIONS[parameters.get("ssl_min_protocol_version", "TLSv1.2")]
    if "ssl_max_protocol_version" in parameters:
        context.maximum_version = TLS_VERSIONS[parameters["ssl_max_protocol_version"]]
    if ssl.HAS_ALPN:
        context.set_alpn_protocols(["postgresql"])
    return context


def connect_args(url: str) -> tuple[str, dict[str, Any]]:
    """What `asyncpg.connect` gets for a DATABASE_URL: `dsn, kwargs = connect_args(url)`, then
    `await asyncpg.connect(dsn, **kwargs)`.

    The DSN holds only the credentials, host, port and database; every query parameter becomes the
    keyword it belongs to: `connect_timeout` the `timeout`, `sslmode` and the SSL files `ssl`,
    `application_name` and `options` `server_settings`. The pool sizes belong to Tortoise only."""
    url = validate_url(url)
    parts = urlsplit(url)
    parameters = query_parameters(parts.query)
    kwargs: dict[str, Any] = {}
    if "connect_timeout" in parameters:
        kwargs["timeout"] = float(parameters["connect_timeout"])
    settings = {name: parameters[name] for name in ("application_name", "options") if name in parameters}
    if settings:
        kwargs["server_settings"] = settings
    mode = parameters.get("sslmode")
    if mode is not None:
        needs_context = any(name in parameters for name in SSL_CONTEXT_PARAMETERS)
        kwargs["ssl"] = _ssl_context(mode, parameters) if needs_context else mode
    if parameters.get("sslnegotiation") == "direct":
        kwargs["direct_tls"] = True
    for name in ("target_session_attrs", "krbsrvname", "gsslib", "passfile"):
        if name in parameters:
            kwargs[name] = parameters[name]
    for name in STATEMENT_CACHE_PARAMETERS:
        if name in parameters:
            kwargs[name] = int(parameters[name])
    return urlunsplit(("postgresql", parts.netloc, parts.path, "", "")), kwargs


def asyncpg_url(url: str) -> str:
    """The URL as one DSN asyncpg parses itself. Prefer `connect_args()`, which also passes the
    connect timeout and the statement cache; this keeps the parameters asyncpg's DSN understands
    and drops the ones it would send the server as settings (which the server refuses)."""
    url = validate_url(url)
    parts = urlsplit(url)
    kept = [(name, value) for name, value in query_parameters(parts.query).items()
            if name not in ("connect_timeout", *STATEMENT_CACHE_PARAMETERS, *set(POOL_PARAMETERS.values()))]
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(kept), ""))


def libpq_url(url: str) -> str:
    """The URL for libpq's tools (psql, pg_dump, pg_restore): without the parameters only the pool and
    asyncpg know (libpq refuses them), connect_timeout in the whole seconds libpq reads."""
    url = validate_url(url)
    parts = urlsplit(url)
    kept = []
    for name, value in query_parameters(parts.query).items():
        if name in LIBPQ_PARAMETERS:
            kept.append((name, str(math.ceil(float(value))) if name == "connect_timeout" else value))
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(kept, quote_via=quote), ""))


def tortoise_connection(url: str, server_settings: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Tortoise's connection for a DATABASE_URL: the credentials `expand_db_url` would make, with the
    query parameters translated (pool sizes for its pool, the rest as for `connect_args`) and
    `server_settings` set on every connection of the pool."""
    dsn, kwargs = connect_args(url)
    parts = urlsplit(dsn)
    parameters = query_parameters(urlsplit(url).query)
    servers = hosts(dsn)
    credentials: dict[str, Any] = {
        "host": servers[0].name if len(servers) == 1 else [server.name for server in servers],
        "port": servers[0].port,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "database": unquote(parts.path.lstrip("/")),
        **kwargs,
    }
    if len(servers) > 1:
        credentials["connect"] = HostListConnect(tuple(server.port for server in servers))
    if server_settings:
        credentials["server_settings"] = {**credentials.get("server_settings", {}), **server_settings}
    for name in ("minsize", "maxsize", "max_queries"):
        if name in parameters:
            credentials[name] = int(parameters[name])
    if "max_inactive_connection_lifetime" in parameters:
        credentials["max_inactive_connection_lifetime"] = float(parameters["max_inactive_connection_lifetime"])
    return {"engine": TORTOISE_ENGINE, "credentials": credentials}


@dataclass(frozen=True)
class HostListConnect:
    """asyncpg's pool `connect` for a host list: Tortoise hands the pool one port (it int()s it), so this
    gives asyncpg the port of each host."""

    ports: tuple[int, ...]

    async def __call__(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        return await asyncpg.connect(*args, **{**kwargs, "port": list(self.ports)})
