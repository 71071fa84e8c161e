"""One test per private API of Aerich, Tortoise and pgserver that `langlearn.compat` wraps, so an
upgrade of either library that changes one fails here, by name, and not deep in a migration."""

from __future__ import annotations

import asyncio
from pathlib import Path

from langlearn import compat, history
from langlearn.models import User, UserFollowing
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION, tortoise_config

FIRST = history.version_files()[0]


def test_index_name_is_tortoises_name_for_an_unnamed_index():
    from tortoise import Tortoise
    from tortoise.context import TortoiseContext

    with TortoiseContext():
        models = Tortoise.init_app(APP_LABEL, ["langlearn.models"])
        name = compat.index_name(models["User"], ["username"])
    assert name.startswith("idx_users_usernam_") and len(name) <= 63


def test_models_state_of_a_migration_file_is_the_models_description():
    state = compat.models_state_of(Path(MIGRATIONS_LOCATION) / APP_LABEL / FIRST)
    assert state is not None and "models.User" in state and state["models.User"]["table"] == "users"


def test_version_modules_and_load_version_module_read_the_history_in_order(head_db):
    async def read() -> list[str]:
        async with history.aerich_command(head_db) as _command:
            modules = compat.version_modules()
            assert getattr(compat.load_version_module(modules[0]), "RUN_IN_TRANSACTION", True) is True
            assert callable(compat.load_version_module(modules[0]).upgrade)
            return [module.name + ".py" for module in modules]

    assert asyncio.run(read()) == history.version_files()


async def test_apply_version_runs_and_records_one_migration(empty_db, connect):
    from tortoise.transactions import in_transaction

    async with history.aerich_command(empty_db) as command:
        first = compat.version_modules()[0]
        async with in_transaction("default") as connection:
            await compat.apply_version(command, connection, first)
    connection = await connect(empty_db)
    assert await connection.fetchval("SELECT version FROM aerich") == FIRST
    assert await connection.fetchval("SELECT to_regclass('users') IS NOT NULL")


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
