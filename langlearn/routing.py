"""Which server each query goes to once hot standbys are configured (`database(replica_url=...)`).

Tortoise's connections: `PRIMARY` ("default", the name every app and transaction uses) and one per
standby (`replica1`, `replica2`, ...). One rule, applied in one place (`read_connection()`), by
Tortoise's router (`Router`, for ORM queries) and by `reader()` (for raw SQL reads):

    writes, select_for_update          the primary (Tortoise asks the router's db_for_write)
    any read inside a transaction      the primary: the transaction's own connection, which sees its rows
    a read under read_after(token)     a standby that has replayed `token` within the bound, else the primary
    a read under primary_reads()       the primary
    any other read                     a standby, in turn

Every transaction names its connection (`in_transaction(PRIMARY)`): with two connections Tortoise
refuses an unnamed one. Without standbys nothing here runs: Tortoise gets no router, and a write
operation reads no LSN (the same single connection, no extra round trip).

Read-your-writes. A write operation (`@write_operation`) returns, in its result's `lsn`, the primary's
WAL insert position read after its COMMIT (`pg_current_wal_insert_lsn()` on a pooled connection, only
with standbys: two round trips, the query and asyncpg's reset of the connection). A later read given
that token (`read_after`) polls the standby's `pg_last_wal_replay_lsn()` (one round trip when it has
caught up, the usual case), after 1, 2, 4, ... ms (`FIRST_POLL_SECONDS`, doubling: at most 7 polls in
50 ms, so a token from the future costs the standby little) for at most `wait`
seconds (`LANGLEARN_REPLICA_WAIT`, default 0.05), and reads the primary if the standby has not
replayed it by then. PostgreSQL 19's `WAIT FOR LSN '…' WITH (timeout '50ms')` does the polling in the
server (docs/scale-out.md). A write operation called inside a caller's transaction returns no token:
its COMMIT is the caller's (read `commit_lsn()` after it).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, Protocol, TypeVar

import asyncpg
from tortoise import connections
from tortoise.backends.base.client import TransactionalDBClient
from tortoise.exceptions import BaseORMException

from langlearn.errors import ConfigError, StartupError
from langlearn.settings import REPLICA_URL_VARIABLE, STANDBY_PREFIX, as_setting, environment_number, open_connection
from langlearn.urls import redact

if TYPE_CHECKING:
    from tortoise import BaseDBAsyncClient

log = logging.getLogger(__name__)

PRIMARY = "default"
WAIT_VARIABLE = "LANGLEARN_REPLICA_WAIT"
DEFAULT_WAIT = 0.05  # seconds a token read waits for its standby before it reads the primary
FIRST_POLL_SECONDS = 0.001  # then doubling
# pg_lsn's text form: two hexadecimal numbers of up to 32 bits
TOKEN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")
# NULL on a server that is not in recovery: not a standby (promoted?), so not trusted to have replayed anything
REPLAYED = "SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false) AS replayed"
INSERT_LSN = "SELECT pg_current_wal_insert_lsn()::text AS lsn"

# the connection a task's reads were pinned to (read_after, primary_reads); None: the rule decides
_pinned: ContextVar[str | None] = ContextVar("langlearn_pinned_reads", default=None)
# where write operations leave their tokens for whoever asked (`track_writes`)
_written: ContextVar[Written | None] = ContextVar("langlearn_written", default=None)
_turn = itertools.count()
# what a standby that is down, restarting or refusing raises: its reads go to the primary instead
STANDBY_FAILURES = (OSError, BaseORMException, asyncpg.PostgresError, asyncpg.InterfaceError)


def standbys() -> list[str]:
    """The standbys' connection names in the current Tortoise context (none: reads go to the primary)."""
    return [name for name in connections.db_config if name.startswith(STANDBY_PREFIX)]


def in_transaction_now() -> bool:
    """Whether this task has a transaction open on the primary (its reads must see its own rows)."""
    return isinstance(connections.get(PRIMARY), TransactionalDBClient)


def read_connection() -> str:
    """The rule: the connection a read goes to now (see the module's table)."""
    names = standbys()
    if not names or in_transaction_now():
        return PRIMARY
    return _pinned.get() or names[next(_turn) % len(names)]


def reader() -> BaseDBAsyncClient:
    """The connection for a raw SQL read, by the same rule as the ORM's (`read_connection`)."""
    connection: BaseDBAsyncClient = connections.get(read_connection())
    return connection


class Router:
    """Tortoise's router (`routers` in its config, set by `database()` when standbys are configured)."""

    def db_for_read(self, model: type[Any]) -> str:
        return read_connection()

    def db_for_write(self, model: type[Any]) -> str:
        return PRIMARY


# --- read-your-writes ------------------------------------------------------------------------------


def check_token(text: str) -> str:
    """A read-your-writes token as a client sent it back: the text of a pg_lsn (ValueError otherwise)."""
    if not TOKEN.fullmatch(text):
        raise ValueError("a read token is a WAL position like 16/B374D848, as a write returned it")
    return text


@dataclass(frozen=True)
class ReadChoice:
    """Where `read_after` sends this task's reads: `connection` (None: not pinned, the rule decides each read),
    after `waited` seconds; `fell_back` when the standby had not replayed the token within the bound (so the
    reads go to the primary)."""

    connection: str | None
    waited: float = 0.0
    fell_back: bool = False


def configured_wait(wait: float | None = None) -> float:
    """`wait` if given, else LANGLEARN_REPLICA_WAIT, else DEFAULT_WAIT (seconds, at least 0)."""
    if wait is not None:
        if not wait >= 0:
            raise ValueError(f"wait must be a number of seconds of at least 0, not {wait!r}")
        return wait
    return environment_number(WAIT_VARIABLE, DEFAULT_WAIT)


@asynccontextmanager
async def read_after(token: str | None, *, wait: float | None = None) -> AsyncIterator[ReadChoice]:
    """Within the block, this task's reads see the writes up to `token` (an operation's `lsn`): they go to a
    standby that has replayed it, waited for at most `wait` seconds, else to the primary. No token, or no
    standby: the block changes nothing (and sends nothing)."""
    names = standbys()
    if token is None or not names:
        yield ReadChoice(None)
        return
    check_token(token)
    standby = names[next(_turn) % len(names)]
    started = time.monotonic()
    caught_up = await _replayed(standby, token, configured_wait(wait))
    choice = ReadChoice(standby if caught_up else PRIMARY, time.monotonic() - started, not caught_up)
    pinned = _pinned.set(choice.connection)
    try:
        yield choice
    finally:
        _pinned.reset(pinned)


@asynccontextmanager
async def primary_reads() -> AsyncIterator[None]:
    """Within the block, this task's reads go to the primary (a client pinned there for a while)."""
    pinned = _pinned.set(PRIMARY)
    try:
        yield
    finally:
        _pinned.reset(pinned)


async def _replayed(standby: str, token: str, wait: float) -> bool:
    """Whether `standby` replays `token` within `wait` seconds; an unreachable standby has not."""
    deadline = time.monotonic() + wait
    pause = FIRST_POLL_SECONDS
    connection = connections.get(standby)
    try:
        while True:
            if (await connection.execute_query_dict(REPLAYED, [token]))[0]["replayed"]:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(pause, left))
            pause *= 2
    except STANDBY_FAILURES as error:
        log.warning("standby %s did not say how far it has replayed (%s); reading the primary", standby, " ".join(str(error).split()))
        return False


async def commit_lsn() -> str:
    """The primary's WAL insert position now: after a COMMIT, a token covering that transaction."""
    rows = await connections.get(PRIMARY).execute_query_dict(INSERT_LSN)
    return str(rows[0]["lsn"])


@dataclass
class Written:
    """The newest token of the write operations run inside a `track_writes()` block (None: none wrote)."""

    lsn: str | None = None


@asynccontextmanager
async def track_writes() -> AsyncIterator[Written]:
    """Collects the token of every write operation run within (a request's, for its response)."""
    written = Written()
    tracked = _written.set(written)
    try:
        yield written
    finally:
        _written.reset(tracked)


class Result(Protocol):
    """A write operation's result: a frozen dataclass with an `lsn` field."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def lsn(self) -> str | None: ...


P = ParamSpec("P")
R = TypeVar("R", bound=Result)


def write_operation(operation: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Marks a write operation: with standbys, its result carries the primary's LSN read after its COMMIT
    (two round trips more: the query and the pool's reset), which `read_after` takes; without standbys, the result as it was (`lsn` None)."""

    @functools.wraps(operation)
    async def written(*args: P.args, **kwargs: P.kwargs) -> R:
        result = await operation(*args, **kwargs)
        if not standbys() or in_transaction_now():
            return result
        lsn = await commit_lsn()
        tracked = _written.get()
        if tracked is not None:
            tracked.lsn = lsn
        return replace(result, lsn=lsn)

    return written


# --- at startup: each standby is one of this primary's ------------------------------------------------

CLUSTER = "SELECT system_identifier::text AS cluster, pg_is_in_recovery() AS in_recovery FROM pg_control_system()"


async def check_standbys(primary_url: str, replicas: Sequence[str], timeout: float = 5.0) -> None:
    """Refuse a standby URL that names another cluster than the primary's (reads would return another
    database's rows): one StartupError naming it. A standby not reachable now, or not in recovery (promoted?),
    is logged, not refused: it may be restarting, and the reads routed to it fail (503) until it is back.
    Without standbys: nothing (no connection)."""
    if not replicas:
        return
    primary = await open_connection(primary_url, timeout)
    try:
        ours = (await primary.fetchrow(CLUSTER))["cluster"]
    finally:
        await primary.close()
    for url in replicas:
        try:
            standby = await open_connection(url, timeout)
        except ConfigError as error:
            log.warning("standby %s is not reachable now (%s); the reads routed to it fail until it is", redact(url), as_setting(REPLICA_URL_VARIABLE, error))
            continue
        try:
            state = await standby.fetchrow(CLUSTER)
        finally:
            await standby.close()
        if state["cluster"] != ours:
            raise StartupError(f"{REPLICA_URL_VARIABLE} names {redact(url)}, which is not a standby of the primary "
                               f"(its cluster {state['cluster']} is not the primary's {ours}); fix {REPLICA_URL_VARIABLE}")
        if not state["in_recovery"]:
            log.warning("standby %s is not in recovery (a primary: promoted?); it serves reads, but receives no WAL", redact(url))


# --- how far each standby is behind (`langlearn status`) ---------------------------------------------

STANDBY_STATE = """
SELECT pg_is_in_recovery() AS in_recovery, pg_last_wal_replay_lsn()::text AS replayed,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS since_last_replayed
"""
BYTES_BEHIND = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint"


@dataclass(frozen=True)
class StandbyReport:
    """One standby as `langlearn status` shows it: unreachable (`problem`), not a standby, or its replay lag."""

    url: str  # redacted
    problem: str | None = None
    in_recovery: bool = True
    lag_bytes: int | None = None
    lag_seconds: float | None = None

    def line(self) -> str:
        if self.problem is not None:
            return f"standby {self.url}: unreachable ({self.problem})"
        if not self.in_recovery:
            return f"standby {self.url}: reachable, but not in recovery (a primary: promoted?); remove it from DATABASE_REPLICA_URL"
        return f"standby {self.url}: reachable, replay lag {self.lag_bytes} bytes, {self.lag_seconds:.1f} s"


async def standby_report(primary: asyncpg.Connection, url: str, timeout: float = 5.0) -> StandbyReport:
    """How far the standby at `url` has replayed the primary's WAL: in bytes (the primary's position minus its
    replay position) and in seconds (since the last transaction it replayed; 0 when it has replayed everything)."""
    try:
        standby = await open_connection(url, timeout)
    except ConfigError as error:
        return StandbyReport(redact(url), problem=str(as_setting(REPLICA_URL_VARIABLE, error)))
    try:
        state = await standby.fetchrow(STANDBY_STATE)
    finally:
        await standby.close()
    if not state["in_recovery"]:
        return StandbyReport(redact(url), in_recovery=False)
    behind = max(0, await primary.fetchval(BYTES_BEHIND, state["replayed"]))
    seconds = max(0.0, state["since_last_replayed"] or 0.0) if behind else 0.0
    return StandbyReport(redact(url), lag_bytes=behind, lag_seconds=seconds)
