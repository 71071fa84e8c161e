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
WAL insert position read after its COMMIT (`pg_current_wal_insert_lsn()`, one round trip, only with
standbys). A later read given that token (`read_after`) polls the standby's `pg_last_wal_replay_lsn()`
(one round trip when it has caught up, the usual case) every `POLL_SECONDS` for at most `wait`
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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, Protocol, TypeVar

import asyncpg
from tortoise import connections
from tortoise.backends.base.client import TransactionalDBClient
from tortoise.exceptions import BaseORMException

from langlearn.settings import STANDBY_PREFIX, environment_number

if TYPE_CHECKING:
    from tortoise import BaseDBAsyncClient

log = logging.getLogger(__name__)

PRIMARY = "default"
WAIT_VARIABLE = "LANGLEARN_REPLICA_WAIT"
DEFAULT_WAIT = 0.05  # seconds a token read waits for its standby before it reads the primary
POLL_SECONDS = 0.001
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
    connection = connections.get(standby)
    try:
        while True:
            if (await connection.execute_query_dict(REPLAYED, [token]))[0]["replayed"]:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(POLL_SECONDS, left))
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
    (one round trip more), which `read_after` takes; without standbys, the result as it was (`lsn` None)."""

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
