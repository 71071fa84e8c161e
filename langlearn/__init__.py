"""langlearn-data: the data layer of a gamified language-learning backend on PostgreSQL.

What a service embeds:

    from langlearn import database, LanglearnError

    async with database(migrate="check") as startup:   # or "apply" (locked), or "off"
        ...                                            # the models of `langlearn.models` are ready

`langlearn.models` holds the Tortoise models (app label `models`), `langlearn.verify` checks a live
database, `langlearn.migrations` steps through the shipped history; every error raised on purpose
is a `LanglearnError` with a one-line message.
"""

from langlearn.errors import (
    ConfigError,
    DatabaseAhead,
    DatabaseBehind,
    HistoryEdited,
    LanglearnError,
    MigrationFailed,
    MigrationLockTimeout,
    NotConfirmed,
    PlanChanged,
    SchemaDrift,
    StartupError,
    UsageError,
)
from langlearn.startup import MODES, Mode, Startup, StartupOptions, database, prepare

__all__ = [
    "MODES",
    "ConfigError",
    "DatabaseAhead",
    "DatabaseBehind",
    "HistoryEdited",
    "LanglearnError",
    "MigrationFailed",
    "MigrationLockTimeout",
    "Mode",
    "NotConfirmed",
    "PlanChanged",
    "SchemaDrift",
    "Startup",
    "StartupError",
    "StartupOptions",
    "UsageError",
    "database",
    "prepare",
]
