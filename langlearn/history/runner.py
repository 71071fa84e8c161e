"""Run a plan on a database: under the migration lock, with the session's timeouts, refusing an edited history.

Aerich applies every pending migration at once (`aerich upgrade`) and reverts a version with
everything after it (`aerich downgrade -v N`); this runner steps through the same files to any
target, up or down, and records each step exactly as Aerich does (its `aerich` rows), plus the
digests of the SQL it ran. A transactional migration runs with its bookkeeping in one transaction;
one with `RUN_IN_TRANSACTION = False` sends its statements one by one (each commits on its own,
which `CREATE INDEX CONCURRENTLY` needs) and records itself after the last one; there a concurrent index
build or drop on a partitioned table goes partition by partition (`partitionwise`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import asyncpg

from langlearn.errors import DatabaseAhead, HistoryEdited, MigrationFailed, PlanChanged, UsageError
from langlearn.history import checksums
from langlearn.history.files import BASE, Direction, History, load_history
from langlearn.history.lock import acquire_migration_lock
from langlearn.history.partitionwise import expansion
from langlearn.history.plan import Plan, Step, downgrade_plan, steps_back, upgrade_plan
from langlearn.history.state import MigrationState, read_state
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION

log = logging.getLogger("langlearn.history")

# A migrator killed mid-statement (kill -9, a lost pod) would otherwise leave its statement running,
# holding its table locks, until it ends on its own; the server checks the socket this often and
# cancels (PostgreSQL >= 14). Measured: the orphan is gone 0.97 s after kill -9, against 60 s without.
DEAD_CLIENT_CHECK = "1s"

# How long a migrator waits for the migration lock, how long a statement waits for a table lock, and how
# long one statement runs, unless told otherwise (`langlearn upgrade`, startup, `aerich upgrade` alike)
DEFAULT_LOCK_WAIT = 300.0
DEFAULT_LOCK_TIMEOUT = 5.0
DEFAULT_STATEMENT_TIMEOUT = 120.0


def timeout_settings(*, lock_timeout: float | None = None, statement_timeout: float | None = None) -> dict[str, str]:
    """PostgreSQL session settings for a migration: how long DDL waits for a lock, how long one statement
    runs, and how soon the server notices that the migrating process died."""
    settings = {"client_connection_check_interval": DEAD_CLIENT_CHECK}
    for name, seconds in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
        if seconds is not None:
            if seconds <= 0:  # 0 would mean "no limit" to PostgreSQL, the opposite of what was asked
                raise ValueError(f"{name} must be a positive number of seconds, not {seconds}")
            settings[name] = f"{max(1, round(seconds * 1000))}ms"
    return settings


def session_statements(settings: dict[str, str]) -> tuple[str, ...]:
    return tuple(f"SET {name} = '{value}'" for name, value in settings.items())


@dataclass(frozen=True)
class Target:
    """Where to take a database: up to `version` (None: head), or down to `version` or by `steps`."""

    direction: Direction = "up"
    version: str | None = None  # a migration's number or file name, or `base` (down only)
    steps: int | None = None

    def plan(self, history: History, applied: list[str]) -> Plan:
        if self.direction == "up":
            if self.version == BASE:
                raise UsageError("`base` is where a downgrade ends; an upgrade goes to a migration (default: head)")
            return upgrade_plan(history, applied, history.resolve(self.version) if self.version else None)
        if self.steps is not None:
            return downgrade_plan(history, applied, steps_back(history, applied, self.steps))
        if self.version is None:
            raise UsageError("a downgrade needs a target: a version (or `base`) or a number of steps",
                             command_line="a downgrade needs a target: --to VERSION (or `base`) or --steps K")
        return downgrade_plan(history, applied, history.resolve(self.version))


@dataclass(frozen=True)
class Outcome:
    """What a locked run found and did."""

    plan: Plan
    state: MigrationState  # after the run
    adopted: tuple[str, ...]  # applied versions whose digests were recorded for the first time
    lock_waited: float

    @property
    def done(self) -> tuple[str, ...]:
        return self.plan.versions


class StepFailed(Exception):
    """A statement of a step failed; `cause` is the database's error."""

    def __init__(self, step: Step, number: int, cause: BaseException) -> None:
        super().__init__(f"{step.version}: statement {number} of {len(step.statements)} failed: {cause}")
        self.step, self.number, self.cause = step, number, cause


async def run_plan(connection: asyncpg.Connection, plan: Plan, announce: Callable[[Step], None] | None = None) -> None:
    """Run the steps in order on `connection` (the caller holds the lock and set the timeouts)."""
    for step in plan.steps:
        log.info("%s %s", "applying" if step.direction == "up" else "reverting", step.version)
        if announce is not None:
            announce(step)
        if step.transactional:
            async with connection.transaction():
                await run_statements(connection, step)
                for statement in step.bookkeeping:
                    await connection.execute(statement)
        else:
            await run_statements(connection, step)
            async with connection.transaction():
                for statement in step.bookkeeping:
                    await connection.execute(statement)


# A statement of a migration outside a transaction that could not take its lock in time, or that
# PostgreSQL chose as a deadlock's victim, changed nothing; such migrations are written to be run
# again, so it is retried after these pauses before the migration gives up (as strong_migrations
# retries lock timeouts). Not a concurrent index build: its failure leaves an INVALID index, which
# `IF NOT EXISTS` would then keep; only a rerun of the whole migration (whose first statement drops
# it) recovers that.
LOCK_RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0)
LOCK_ERRORS = (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError)


async def run_statements(connection: asyncpg.Connection, step: Step) -> None:
    for number, statement in enumerate(step.statements, 1):
        for sent in await _statements_to_send(connection, step, number, statement):
            await _send(connection, step, number, sent)


async def _statements_to_send(connection: asyncpg.Connection, step: Step, number: int, statement: str) -> list[str]:
    """`statement`, or, outside a transaction, what `partitionwise` turns a concurrent index build or drop into."""
    query = expansion(statement, in_transaction=step.transactional)
    if query is None:
        return [statement]
    try:
        return [row[0] for row in await connection.fetch(query)]
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise StepFailed(step, number, error) from error


async def _send(connection: asyncpg.Connection, step: Step, number: int, statement: str) -> None:
    retryable = not step.transactional and "CONCURRENTLY" not in statement.upper()
    pauses = iter(LOCK_RETRY_PAUSES if retryable else ())
    while True:
        try:
            await connection.execute(statement)
            return
        except LOCK_ERRORS as error:
            pause = next(pauses, None)
            if pause is None:
                raise StepFailed(step, number, error) from error
            log.warning("%s: statement %d of %d did not get its lock (%s); trying again in %g s", step.version, number, len(step.statements), error, pause)
            await asyncio.sleep(pause)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise StepFailed(step, number, error) from error


async def migrate(
    connection: asyncpg.Connection,
    target: Target = Target(),
    *,
    location: str = MIGRATIONS_LOCATION,
    lock_wait: float = 300.0,
    lock_timeout: float | None = None,
    statement_timeout: float | None = None,
    expected: tuple[str, ...] | None = None,
    announce: Callable[[Step], None] | None = None,
    app: str = APP_LABEL,
) -> Outcome:
    """Take the migration lock on `connection`, then take `app`'s history in the database to `target`.

    Refuses (StartupError, database unchanged) a database ahead of the code, an applied migration
    edited since it ran, and, with `expected`, a plan other than the one a user confirmed. Digests
    missing for applied migrations (applied before checksums were kept, or by an `aerich upgrade` that could not record them)
    are recorded, with a note in the log."""
    waited = await acquire_migration_lock(connection, lock_wait)
    plan, before = await plan_now(connection, target, location, app)
    if expected is not None and plan.versions != expected:
        raise PlanChanged(
            f"the database changed since the plan was shown: it would now {plan.summary()}; nothing was done, look at it again"
        )
    settings = timeout_settings(lock_timeout=lock_timeout, statement_timeout=statement_timeout)
    for statement in session_statements(settings):
        await connection.execute(statement)
    if plan.preparation:
        async with connection.transaction():
            for statement in plan.preparation:
                await connection.execute(statement)
    adopted = tuple(migration.version for migration in plan.adopt)
    if adopted:
        log.info(
            "recorded the checksums of %d migration(s) applied before langlearn kept them (%s); an edit of their SQL is refused from now on",
            len(adopted), ", ".join(adopted),
        )
    try:
        await run_plan(connection, plan, announce)
    except (StepFailed, asyncpg.InterfaceError) as error:
        # a step that failed with its connection (terminated, server gone) surfaces as the transaction's failed exit
        failed = error if isinstance(error, StepFailed) else error.__context__
        if not isinstance(failed, StepFailed):
            raise
        now, server_timeouts = await _after_failure(connection, location, app, before, plan, failed.step)
        raise MigrationFailed(
            failure_message(failed, now, lock_timeout, statement_timeout, server_timeouts=server_timeouts),
            failed.step.version, failed.number, len(failed.step.statements), now.current,
        ) from failed
    return Outcome(plan=plan, state=await read_state(connection, location=location, app=app), adopted=adopted, lock_waited=waited)


async def plan_now(
    connection: asyncpg.Connection, target: Target, location: str = MIGRATIONS_LOCATION, app: str = APP_LABEL
) -> tuple[Plan, MigrationState]:
    """The plan that takes `app`'s history in the database to `target` from where it stands (reads only), with the
    digests to record first. Refuses (StartupError) a database ahead of the code and an applied migration edited since it ran."""
    history = load_history(location, app)
    state = await read_state(connection, location=location, app=app)
    if state.unknown:
        raise DatabaseAhead(tuple(state.unknown), None if app == APP_LABEL else app)
    report = await checksums.compare(connection, history, state)
    if report.edited:
        raise HistoryEdited(
            report.edited[0].message + (f" ({len(report.edited) - 1} more edited)" if len(report.edited) > 1 else ""),
            tuple(edit.version for edit in report.edited),
        )
    plan = replace(target.plan(history, list(state.applied)), adopt=tuple(history.get(version) for version in report.unrecorded))
    return plan, state


async def _after_failure(
    connection: asyncpg.Connection, location: str, app: str, before: MigrationState, plan: Plan, failed: Step
) -> tuple[MigrationState, dict[str, str]]:
    """Where the database stands after a failed step, and the session's timeouts as the server set them.

    Read on the connection while it lives. When the failure took it (pg_terminate_backend, a server
    restart), the database is where the steps before the failed one left it: the migration lock kept
    other migrators out, and a failed step records nothing (its transaction, or its bookkeeping's, is gone)."""
    if not connection.is_closed():
        settings = await connection.fetchrow("SELECT current_setting('lock_timeout') AS lock_timeout, current_setting('statement_timeout') AS statement_timeout")
        return await read_state(connection, location=location, app=app), dict(settings)
    done = plan.versions[: plan.steps.index(failed)]
    applied = (*before.applied, *done) if plan.direction == "up" else tuple(version for version in before.applied if version not in done)
    return MigrationState(on_disk=before.on_disk, applied=applied), {}


def failure_message(
    failed: StepFailed,
    now: MigrationState,
    lock_timeout: float | None,
    statement_timeout: float | None,
    runner: str = "langlearn",
    *,
    server_timeouts: Mapping[str, str] | None = None,
) -> str:
    """One line: which statement of which migration failed, what stays applied, the database's reason, and what to run.
    `server_timeouts`: the session's `lock_timeout` and `statement_timeout` as PostgreSQL shows them, named when
    the runner set none of its own."""
    step = failed.step
    verb = "migration" if step.direction == "up" else "the downgrade of"
    if step.transactional:
        what = f"{verb} {step.version} failed at statement {failed.number} of {len(step.statements)} and was rolled back"
    else:
        what = (
            f"{verb} {step.version} failed at statement {failed.number} of {len(step.statements)}; it runs outside a transaction, "
            f"so the {failed.number - 1} statement(s) before it stay applied and it is not recorded"
        )
    return (
        f"{what}: {database_reason(failed.cause, lock_timeout, statement_timeout, server_timeouts)}; the database stays at {now.current or 'no version'}; "
        f"fix the cause, then run `{runner} {'upgrade' if step.direction == 'up' else 'downgrade'}`"
    )


def database_reason(
    cause: BaseException, lock_timeout: float | None, statement_timeout: float | None, server_timeouts: Mapping[str, str] | None = None
) -> str:
    """The database's own words for a failed statement, with the timeout that applied and the fix for the two timeouts."""
    text = " ".join(str(cause).split()) or type(cause).__name__
    if isinstance(cause, asyncpg.LockNotAvailableError):
        return (
            f"{text} (another session held a table lock longer than {_timeout('lock_timeout', lock_timeout, server_timeouts)}; "
            "retry when it is done, or raise the lock timeout)"
        )
    if isinstance(cause, asyncpg.QueryCanceledError) and "statement timeout" in text:
        return f"{text} (a statement ran longer than {_timeout('statement_timeout', statement_timeout, server_timeouts)}; raise it if the migration needs longer)"
    return text


def _timeout(name: str, seconds: float | None, server_timeouts: Mapping[str, str] | None) -> str:
    """The timeout that applied: the runner's, or, when it was given none (`upgrade()`'s default), the server's own."""
    if seconds is not None:
        return f"{name}={seconds:g} s"
    setting = (server_timeouts or {}).get(name)
    return f"the server's {name}" + (f" of {setting}" if setting else "") + ", as none was given"


@dataclass(frozen=True)
class Repair:
    """What `langlearn migrations repair` re-recorded."""

    edits: tuple[checksums.Edit, ...]  # applied migrations whose digests (and models state) now match their edited files
    adopted: tuple[str, ...]  # applied migrations whose digests were recorded for the first time


async def repair(
    connection: asyncpg.Connection, *, location: str = MIGRATIONS_LOCATION, lock_wait: float = 300.0, app: str = APP_LABEL
) -> Repair:
    """Under the migration lock, record the files' current digests and models state for every applied migration of `app`
    whose recorded ones differ (a deliberate edit, like Flyway's `repair`), and for those that have none."""
    await acquire_migration_lock(connection, lock_wait)
    history = load_history(location, app)
    state = await read_state(connection, location=location, app=app)
    report = await checksums.compare(connection, history, state)
    statements = [checksums.CREATE_CHECKSUM_TABLE]
    for edit in report.edited:
        migration = history.get(edit.version)
        statements.append(checksums.record_checksum(migration, "repair"))
        if "models state" in edit.parts:
            statements.append(checksums.record_models_state(migration))
    statements += [checksums.record_checksum(history.get(version), "adopt") for version in report.unrecorded]
    if report.edited or report.unrecorded:
        async with connection.transaction():
            for statement in statements:
                await connection.execute(statement)
    for edit in report.edited:
        log.warning("re-recorded %s: its %s as the file now has it", edit.version, " and ".join(edit.parts))
    return Repair(edits=report.edited, adopted=report.unrecorded)
