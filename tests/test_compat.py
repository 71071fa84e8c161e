"""One test per private API of Aerich, Tortoise and pgserver that `langlearn.compat` wraps, so an
upgrade of either library that changes one fails here, by name, and not deep in a migration."""

from __future__ import annotations

import asyncio
from pathlib import Path

from langlearn import compat, history
from langlearn.models import User, UserFollowing
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION, tortoise_config

FIRST = history.load_history().versions[0]


def test_index_name_is_tortoises_name_for_an_unnamed_index():
    from tortoise import Tortoise
    from tortoise.context import TortoiseContext

    with TortoiseContext():
        models = Tortoise.init_app(APP_LABEL, ["langlearn.models"])
        name = compat.index_name(models["User"], ["username"])
    assert name.startswith("idx_users_usernam_") and len(name) <= 63


def test_decompress_models_state_reads_a_migration_files_models_state_as_aerich_records_it():
    from aerich.utils import import_py_file

    compressed = import_py_file(Path(MIGRATIONS_LOCATION) / APP_LABEL / FIRST).MODELS_STATE
    state = compat.decompress_models_state(compressed)
    assert "models.User" in state and state["models.User"]["table"] == "users"


async def test_init_tortoise_with_global_fallback_makes_models_usable_from_a_task_outside_its_context(head_db):
    import contextvars

    import pytest
    from tortoise.context import TortoiseContext

    async def count_in_a_fresh_context() -> int:
        async def count() -> int:
            return await User.all().count() + await UserFollowing.all().count()

        # a task that does not inherit the caller's context: how a web server runs requests apart from lifespan
        return await asyncio.get_running_loop().create_task(count(), context=contextvars.Context())

    async with TortoiseContext() as context:
        await compat.init_tortoise(context, tortoise_config(head_db), global_fallback=True)
        assert await count_in_a_fresh_context() == 0
    async with TortoiseContext() as context:
        await compat.init_tortoise(context, tortoise_config(head_db), global_fallback=False)
        with pytest.raises(Exception, match="(?i)context|init"):
            await count_in_a_fresh_context()


def test_pgserver_bin_dir_holds_the_server_and_its_client_tools():
    folder = compat.pgserver_bin_dir()
    for tool in ("postgres", "pg_ctl", "initdb", "psql", "pg_dump", "pg_restore"):
        assert (folder / tool).exists(), tool


async def test_describe_models_is_the_models_state_a_migration_file_records():
    from tortoise.context import TortoiseContext

    async with TortoiseContext() as context:
        await context.init(config=tortoise_config("postgres://offline@127.0.0.1:1/offline"), init_connections=False)
        state = compat.describe_models(APP_LABEL)
    head = history.load_history().head
    assert head is not None and state.keys() == head.models_state.keys()
    assert state["models.User"]["table"] == "users" and {"pk_field", "data_fields", "fk_fields", "indexes"} <= state["models.User"].keys()


async def test_aerich_migrate_operators_is_aerichs_migrate_without_the_file():
    from aerich.migrate import Migrate
    from tortoise.context import TortoiseContext

    migrations = history.load_history()
    before, head = migrations.get(migrations.versions[4]), migrations.get(migrations.versions[5])  # 5 adds seed_runs
    config = tortoise_config("postgres://offline@127.0.0.1:1/offline")  # never connected to
    async with TortoiseContext() as context:
        await context.init(config=config, init_connections=False)
        operators = await compat.aerich_migrate_operators(config, APP_LABEL, MIGRATIONS_LOCATION, before.models_state, head.models_state)
        unchanged = await compat.aerich_migrate_operators(config, APP_LABEL, MIGRATIONS_LOCATION, head.models_state, head.models_state)
    assert operators.upgrade[0].startswith('CREATE TABLE IF NOT EXISTS "seed_runs"') and operators.downgrade == ('DROP TABLE IF EXISTS "seed_runs"',)
    assert unchanged == compat.AerichOperators((), (), ())
    assert Migrate.upgrade_operators == Migrate.downgrade_operators == Migrate._upgrade_fk_m2m_index_operators == []
    assert history.load_history().versions == migrations.versions  # no migration file written


async def test_outside_any_transaction_is_the_pooled_client_whose_other_connections_do_not_see_the_transaction(head_db):
    from tortoise.context import TortoiseContext
    from tortoise.transactions import in_transaction

    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(head_db))
        pooled = context.connections.get("default")
        assert compat.outside_any_transaction(pooled) is pooled
        async with in_transaction("default") as transaction:
            await transaction.execute_query("CREATE TABLE made_in_the_transaction (id int)")
            outside = compat.outside_any_transaction(transaction)
            assert outside is pooled
            _, rows = await outside.execute_query("SELECT to_regclass('made_in_the_transaction') IS NULL AS unseen")
            assert rows[0]["unseen"]
            await transaction.rollback()


async def test_aerich_migrations_folder_is_the_folder_aerichs_migrate_read():
    from aerich.migrate import Migrate
    from tortoise.context import TortoiseContext

    config = tortoise_config("postgres://offline@127.0.0.1:1/offline")  # never connected to
    async with TortoiseContext() as context:
        await context.init(config=config, init_connections=False)
        await Migrate.init(config, APP_LABEL, MIGRATIONS_LOCATION, offline=True)
    assert compat.aerich_migrations_folder() == Path(MIGRATIONS_LOCATION) / APP_LABEL


async def test_route_each_query_when_it_runs_leaves_a_routed_queryset_without_a_connection_until_it_runs(head_db):
    """With routers, `User.all()` must not fix a (read) connection that a chained `.update()` or
    `.select_for_update()` would then use; without routers, Tortoise's behaviour is kept."""
    from tortoise.context import TortoiseContext

    from langlearn.routing import Router

    async with TortoiseContext() as context:
        await compat.init_tortoise(context, tortoise_config(head_db), global_fallback=False)
        assert User.all()._db is not None  # Tortoise's own: chosen when the queryset is made
    config = {**tortoise_config(head_db, replicas=[head_db]), "routers": [Router]}
    async with TortoiseContext() as context:
        await compat.init_tortoise(context, config, global_fallback=False)
        assert User.all()._db is None
        assert User.all().select_for_update()._choose_db(True).connection_name == "default"
        assert await User.all().filter(username="nobody").update(display_name="y") == 0
