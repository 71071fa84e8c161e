"""Every private API of Aerich, Tortoise and pgserver this package uses, in one place.

None of these is documented, so an upgrade of either library may change them. Each has a test in
`tests/test_compat.py`, so such an upgrade fails there, loudly, instead of somewhere deep in a
migration or a schema check.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from aerich import Command
    from tortoise.backends.base.client import BaseDBAsyncClient
    from tortoise.backends.base_postgres.client import BasePostgresClient
    from tortoise.backends.base_postgres.schema_generator import BasePostgresSchemaGenerator
    from tortoise.context import TortoiseContext
    from tortoise.models import Model


async def init_tortoise(context: TortoiseContext, config: dict[str, Any], *, global_fallback: bool) -> None:
    """`TortoiseContext.init`, with the models usable from other tasks than the one that entered
    (Tortoise's private `_enable_global_fallback`): a web server runs lifespan and requests apart."""
    await context.init(config=config, _enable_global_fallback=global_fallback)


def schema_generator() -> BasePostgresSchemaGenerator:
    """Tortoise's PostgreSQL schema generator, made without a client: only its naming of indexes is
    used (`_get_index_name`, `Index.index_name`), and that never touches the client."""
    from tortoise.backends.base_postgres.schema_generator import BasePostgresSchemaGenerator

    return BasePostgresSchemaGenerator(cast("BasePostgresClient", None))


def index_name(model: type[Model], columns: list[str]) -> str:
    """The name Tortoise gives an unnamed index on `columns` (its schema generator's private naming)."""
    return schema_generator()._get_index_name("idx", model, columns)


def version_modules() -> list[pkgutil.ModuleInfo]:
    """The migration files of the app an initialised Aerich `Command` was made for, in order."""
    from aerich.migrate import Migrate

    return Migrate.get_all_version_modules()


def load_version_module(module: pkgutil.ModuleInfo) -> ModuleType:
    """Execute a migration file as Aerich does (its names are not importable module names)."""
    from aerich.utils import import_py_module

    return import_py_module(module)


async def apply_version(command: Command, connection: BaseDBAsyncClient, module: pkgutil.ModuleInfo) -> None:
    """Run one migration's upgrade on `connection` and record it in the `aerich` table, as `aerich upgrade` does."""
    await command._upgrade(connection, module.name + ".py", version_module=module)


def models_state_of(path: Path) -> dict[str, Any] | None:
    """The models state (`MODELS_STATE`) a migration file carries, decompressed as Aerich records it."""
    from aerich.utils import decompress_dict, import_py_file

    compressed = getattr(import_py_file(path), "MODELS_STATE", None)
    if not compressed:
        return None
    state: dict[str, Any] = decompress_dict(compressed)
    return state


def pgserver_bin_dir() -> Path:
    """The folder of the PostgreSQL binaries inside the pgserver wheel; ImportError without the wheel."""
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)
