"""Every private API of Aerich, Tortoise and pgserver this package uses, in one place.

None of these is documented, so an upgrade of either library may change them. Each has a test in
`tests/test_compat.py`, so such an upgrade fails there, loudly, instead of somewhere deep in a
migration or a schema check.
"""

from __future__ import annotations

import copy
import io
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from tortoise import BaseDBAsyncClient
    from tortoise.backends.base_postgres.client import BasePostgresClient
    from tortoise.backends.base_postgres.schema_generator import BasePostgresSchemaGenerator
    from tortoise.context import TortoiseContext
    from tortoise.models import Model


async def init_tortoise(context: TortoiseContext, config: dict[str, Any], *, global_fallback: bool) -> None:
    """`TortoiseContext.init`, with the models usable from other tasks than the one that entered
    (Tortoise's private `_enable_global_fallback`): a web server runs lifespan and requests apart;
    and pooled transactions that give their connection back when BEGIN fails."""
    release_connection_when_begin_fails()
    if config.get("routers"):
        route_each_query_when_it_runs()
    await context.init(config=config, _enable_global_fallback=global_fallback)


def route_each_query_when_it_runs() -> None:
    """Tortoise 1.1's `Model._db_queryset` (private) asks the router for a queryset's connection when the queryset is
    made: `User.all()` is a read, so an `.update()`, `.delete()` or `.select_for_update()` chained on it ran on
    the read connection, a standby, which refuses it (read-only). Wrapped once per process: while routers are
    configured (tortoise.router's private `_routers`), a queryset made without `using_db` has no connection yet, so
    each query it makes asks the router when it runs, as the write, locking read or read it is. Without routers,
    Tortoise's own behaviour."""
    from tortoise.models import Model
    from tortoise.router import router

    made = Model.__dict__["_db_queryset"].__func__
    if getattr(made, "routes_each_query", False):
        return

    def unrouted(cls: type[Model], using_db: BaseDBAsyncClient | None = None, for_write: bool = False) -> Any:
        if using_db is None and router._routers:
            return cls._meta.manager.get_queryset()
        return made(cls, using_db, for_write)

    unrouted.routes_each_query = True  # type: ignore[attr-defined]
    Model._db_queryset = classmethod(unrouted)  # type: ignore[assignment,method-assign]


def release_connection_when_begin_fails() -> None:
    """Tortoise 1.1's pooled transaction (the private `TransactionContextPooled.__aenter__`) takes a connection,
    binds the task to the transaction, then sends BEGIN, all before the `async with` body's try/finally: a BEGIN that
    fails (a session the server ended while its connection sat in the pool) kept the connection checked out for good
    and the task bound to the dead transaction. Under terminated sessions a pool lost every connection this way, and
    its service hung. Its `__aexit__` unbinds the task only after giving the connection back, so a release that fails
    (a connection asyncpg cannot reset) left the task bound too. Wrapped once per process: a failed enter unbinds the
    task and gives the connection back; a failed exit unbinds the task."""
    from contextlib import suppress

    from tortoise.backends.base.client import TransactionContextPooled
    from tortoise.connection import get_connections

    enter, leave = TransactionContextPooled.__aenter__, TransactionContextPooled.__aexit__
    if getattr(enter, "gives_back_on_failure", False):
        return

    async def entered(self: TransactionContextPooled) -> Any:
        try:
            return await enter(self)
        except BaseException:
            token = getattr(self, "token", None)  # set once a connection was taken
            if token is not None:
                get_connections().reset(token)
                # the BEGIN's error is the one to raise; asyncpg terminates a connection it cannot reset
                with suppress(Exception):
                    await self.client._parent._pool.release(self.client._connection)
            raise

    async def left(self: TransactionContextPooled, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        try:
            await leave(self, exc_type, exc_val, exc_tb)
        except BaseException:
            if not self.token._used:  # used already when the release succeeded and the commit or rollback failed
                get_connections().reset(self.token)
            raise

    entered.gives_back_on_failure = True  # type: ignore[attr-defined]
    TransactionContextPooled.__aenter__ = entered  # type: ignore[method-assign]
    TransactionContextPooled.__aexit__ = left  # type: ignore[method-assign]


def schema_generator() -> BasePostgresSchemaGenerator:
    """Tortoise's PostgreSQL schema generator, made without a client: only its naming of indexes is
    used (`_get_index_name`, `Index.index_name`), and that never touches the client."""
    from tortoise.backends.base_postgres.schema_generator import BasePostgresSchemaGenerator

    return BasePostgresSchemaGenerator(cast("BasePostgresClient", None))


def index_name(model: type[Model], columns: list[str]) -> str:
    """The name Tortoise gives an unnamed index on `columns` (its schema generator's private naming)."""
    return schema_generator()._get_index_name("idx", model, columns)


def outside_any_transaction(db: BaseDBAsyncClient) -> BaseDBAsyncClient:
    """The pooled client behind `db`: `db` itself, or the one a transaction was opened on (Tortoise's private
    `TransactionWrapper._parent`), whose other connections are outside that transaction."""
    from tortoise.backends.base.client import TransactionalDBClient

    if isinstance(db, TransactionalDBClient):
        parent: BaseDBAsyncClient = db._parent
        return parent
    return db


def aerich_migrations_folder() -> Path | None:
    """The app's migrations folder of the Aerich command running in this process (its `Migrate.migrate_location`,
    set once Aerich read its config), None before that."""
    from aerich.migrate import Migrate

    return Path(Migrate.migrate_location) if Migrate.migrate_location is not None else None


def route_aerich_history(app: str, folder: Path) -> None:
    """Make Aerich read `app`'s history from `folder` when its `location` holds no folder of that app's own (a service's
    `location` holds its own apps' histories; the package's ships inside the package). Aerich computes every app's
    folder with `Migrate.get_migration_dir(location, app)`; it is replaced once per process."""
    from aerich.migrate import Migrate

    aerich_own = Migrate.get_migration_dir
    if getattr(aerich_own, "routed_by_langlearn", False):
        return

    def get_migration_dir(location: str, name: str) -> Path:
        own = aerich_own(location, name)
        return folder if name == app and not own.exists() else own

    get_migration_dir.routed_by_langlearn = True  # type: ignore[attr-defined]
    Migrate.get_migration_dir = staticmethod(get_migration_dir)  # type: ignore[method-assign,assignment]


def initialise_one_app_at_a_time() -> None:
    """Make `aerich --app NAME init-db` (and `init-migrations`) write the schema of NAME's models only.

    Aerich writes Tortoise's schema for every model on the app's connection, so a service's first migration would
    recreate the package's tables; this writes the command's app's tables, in Tortoise's own statements and
    order, counting a foreign key to another app's table as already there (that app's history creates it)."""
    import aerich
    from aerich.migrate import Migrate
    from tortoise import Tortoise
    from tortoise.exceptions import ConfigurationError

    if getattr(aerich.get_schema_sql, "routed_by_langlearn", False):  # type: ignore[attr-defined]
        return

    def app_schema_sql(client: BaseDBAsyncClient, safe: bool) -> str:
        generator = client.schema_generator(client)
        models = [model for model in Tortoise.apps[Migrate.app].values() if model._meta.db == client]
        pending = [generator._get_table_sql(model, safe) for model in models]
        own = {table["table"] for table in pending}
        created: set[str] = set()
        statements: list[str] = []
        m2m: list[str] = []
        while pending:
            ready = next((table for table in pending if (table["references"] & own) <= created | {table["table"]}), None)
            if ready is None:
                raise ConfigurationError(f"the models of app {Migrate.app!r} reference each other in a cycle; break it with a nullable foreign key")
            pending.remove(ready)
            created.add(ready["table"])
            statements.append(ready["table_creation_string"])
            m2m += ready["m2m_tables"]
        return "\n".join(statements + m2m)

    async def generate_app_schema(client: BaseDBAsyncClient, safe: bool) -> None:
        await client.execute_script(app_schema_sql(client, safe))

    app_schema_sql.routed_by_langlearn = True  # type: ignore[attr-defined]
    aerich.get_schema_sql = app_schema_sql  # type: ignore[attr-defined]
    aerich.generate_schema_for_client = generate_app_schema  # type: ignore[attr-defined]


def aerich_app() -> str:
    """The app label of the Aerich command running in this process (`aerich --app NAME`; Aerich's default is the
    config's first app)."""
    from aerich.migrate import Migrate

    return str(Migrate.app)


def decompress_models_state(compressed: str) -> dict[str, Any]:
    """A migration file's `MODELS_STATE`, decompressed as Aerich records it in its `aerich` table."""
    from aerich.utils import decompress_dict

    state: dict[str, Any] = decompress_dict(compressed)
    return state


def encode_models_state(state: dict[str, Any]) -> str:
    """A models state as the JSON Aerich writes into `aerich.content` (its JSON field's own encoder)."""
    from aerich.coder import encoder

    return encoder(state)


def pgserver_bin_dir() -> Path:
    """The folder of the PostgreSQL binaries inside the pgserver wheel; ImportError without the wheel."""
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def describe_models(app: str) -> dict[str, Any]:
    """The models of `app` as Aerich records them in `MODELS_STATE` (`get_models_describe`); Tortoise must be
    initialised, its connections need not be."""
    from aerich.utils import get_models_describe

    return get_models_describe(app)


@dataclass(frozen=True)
class AerichOperators:
    """The SQL statements `aerich migrate` would write into a new migration file, and the warnings it printed."""

    upgrade: tuple[str, ...]
    downgrade: tuple[str, ...]
    warnings: tuple[str, ...]


async def aerich_migrate_operators(config: dict[str, Any], app: str, location: str, old: dict[str, Any], new: dict[str, Any]) -> AerichOperators:
    """What `aerich migrate --offline --no-input` would generate to go from the models state `old` to `new`,
    without writing the file: Aerich's own `Migrate.migrate()` up to the point where it writes.

    Tortoise must be initialised with `config`; its connections need not be (Aerich's DDL class only
    holds the client, which connects lazily, and offline `init` reads no database). `--no-input`
    because a check must not prompt: Aerich then takes a same-typed field dropped and added as a
    rename. `Migrate` keeps its operators in class attributes, so they are reset before and after,
    and its warnings (printed with click) are captured instead of printed."""
    from aerich.migrate import Migrate

    _reset_aerich_migrate()
    try:
        with redirect_stdout(io.StringIO()) as printed:
            await Migrate.init(config, app, location, offline=True)
            # diff_models pops entries from what it is given: the caller's states stay whole
            last, current = Migrate._exclude_model_name_changes(copy.deepcopy(old), copy.deepcopy(new))
            Migrate.diff_models(last, current, no_input=True)
            Migrate.diff_models(current, last, False, no_input=True)
            Migrate._merge_operators()
        warnings = tuple(line.strip() for line in printed.getvalue().splitlines() if line.strip())
        return AerichOperators(tuple(Migrate.upgrade_operators), tuple(Migrate.downgrade_operators), warnings)
    finally:
        _reset_aerich_migrate()


def _reset_aerich_migrate() -> None:
    from aerich.migrate import Migrate

    for name in ("upgrade_operators", "downgrade_operators", "_upgrade_fk_m2m_index_operators", "_downgrade_fk_m2m_index_operators", "_upgrade_m2m", "_downgrade_m2m"):
        setattr(Migrate, name, [])
    Migrate._rename_fields = {}
    Migrate._rename_models = {}
    Migrate._last_version_content = None
