"""Stamp a database: record migrations as applied without running them (Alembic's `alembic stamp`).

For tables created outside the history (restored from a schema-only dump, built by hand): under the
migration lock and in one transaction, Aerich's table and the digests' table are created when
missing, and every version up to the one named that is not recorded yet is recorded exactly as the
runner records an applied migration (the plan's own bookkeeping: Aerich's row with the models
state, the digests), while none of its SQL runs. Whether the tables really are what those
migrations build is for the schema check to say (`langlearn migrations stamp` runs it next).

A stamp only adds versions: a database that records one beyond the target, or one the code does
not have, is refused unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from langlearn.errors import StartupError, UsageError
from langlearn.history.checksums import CHECKSUM_TABLE, CREATE_AERICH_TABLE
from langlearn.history.files import BASE, History, Migration, load_history, version_number
from langlearn.history.lock import acquire_migration_lock
from langlearn.history.runner import DEFAULT_LOCK_WAIT, Target, plan_now
from langlearn.history.state import MigrationState, has_table, read_state
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION

HEAD = "head"
BOOKKEEPING_TABLES = ("aerich", CHECKSUM_TABLE)


@dataclass(frozen=True)
class Stamped:
    """What a stamp found and recorded."""

    target: str  # the version stamped up to
    recorded: tuple[str, ...]  # versions recorded as applied by this stamp, in order
    adopted: tuple[str, ...]  # versions recorded before without digests (by `aerich upgrade`): their digests recorded now
    created: tuple[str, ...]  # bookkeeping tables this stamp created
    state: MigrationState  # after the stamp
    lock_waited: float


def stamp_target(history: History, spec: str) -> Migration:
    """The migration a stamp records up to: `head`, or one named by number or file name."""
    spec = spec.strip()
    if spec == HEAD:
        if history.head is None:
            raise UsageError(f"no migration in {history.folder}, so there is nothing to stamp")
        return history.head
    if spec == BASE:
        raise UsageError("a stamp records every version up to a migration (a number, a file name or `head`); `base` would record none")
    try:
        target = history.resolve(spec)
    except UsageError:
        numbers = ", ".join(str(migration.number) for migration in history) or "none"
        raise UsageError(f"no migration {spec!r} in {history.folder}; name one by number ({numbers}), by file name, or `head`") from None
    assert target is not None  # only `base` resolves to None
    return target


async def stamp(
    connection: asyncpg.Connection, version: str = HEAD, *, location: str = MIGRATIONS_LOCATION, lock_wait: float = DEFAULT_LOCK_WAIT,
    app: str = APP_LABEL,
) -> Stamped:
    """Under the migration lock taken on `connection`, record every migration up to `version` (a number, a file name
    or `head`) that the database does not record yet, without running any of them, in one transaction.

    Refuses (StartupError, database unchanged) a database that records a version beyond `version` or one the code
    does not have, and an applied migration edited since it ran; UsageError for a `version` not in the history.
    The lock stays held until `connection` closes, as after `migrate`."""
    target = stamp_target(load_history(location, app), version)
    waited = await acquire_migration_lock(connection, lock_wait)
    # the upgrade the runner would make, of which only the bookkeeping is written
    plan, state = await plan_now(connection, Target("up", target.version), location, app)
    beyond = [recorded for recorded in dict.fromkeys(state.applied) if version_number(recorded) > target.number]
    if beyond:
        raise StartupError(
            f"the database already records {', '.join(beyond)}, beyond {target.version}; a stamp only adds versions, "
            "so nothing was recorded (`langlearn status` lists what it records)"
        )
    if not (plan.steps or plan.adopt):
        return Stamped(target.version, (), (), (), state, waited)
    missing = tuple([name for name in BOOKKEEPING_TABLES if not await has_table(connection, name)])
    statements = [CREATE_AERICH_TABLE, *plan.preparation, *(statement for step in plan.steps for statement in step.bookkeeping)]
    try:
        async with connection.transaction():
            for statement in statements:
                await connection.execute(statement)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise StartupError(f"the stamp recorded nothing: {' '.join(str(error).split())}") from None
    return Stamped(
        target=target.version,
        recorded=plan.versions,
        adopted=tuple(migration.version for migration in plan.adopt),
        created=missing,
        state=await read_state(connection, location=location, app=app),
        lock_waited=waited,
    )
