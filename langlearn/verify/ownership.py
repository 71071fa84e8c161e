"""Whose table is whose: this package's models, a service's own apps, and the tables nobody claims.

The schema check compares every table of the current schema with a model. A table no model of the
package has is reported by who owns it:

- an app the caller registered (`database(apps=...)`, `langlearn verify --app`): its tables are compared with
  that app's own models, as the package's are;
- an app the `aerich` table records (a service migrating its own app with Aerich): left to that app;
- a name the caller ignores (`ignore`: names or shell-style patterns such as `tmp_*`): left alone;
- anything else is unclaimed, a warning. The advice to drop it is given only when this package's own
  history once created it (a model since removed); otherwise the advice is to claim it or ignore it:
  telling someone to drop a live table of theirs would be dangerous.

Only the current schema is read: a service may also keep its tables in a schema of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import asyncpg

from langlearn.history.files import load_history
from langlearn.settings import APP_LABEL, MIGRATIONS_LOCATION
from langlearn.verify.expected import AppModules, models_by_app
from langlearn.verify.findings import Finding, warning
from langlearn.verify.structure import quote

# the newest models state each other app recorded (Aerich writes one row per applied migration and app)
RECORDED_APPS = """
    SELECT DISTINCT ON (app) app, content FROM aerich
    WHERE app <> $1
    ORDER BY app, id DESC
"""


@dataclass(frozen=True)
class TableOwners:
    """Who claims the tables the package's models do not have."""

    registered: Mapping[str, str] = field(default_factory=dict)  # table -> label of an app the caller registered
    recorded: Mapping[str, str] = field(default_factory=dict)  # table -> label of an app the aerich table records
    ignored: tuple[str, ...] = ()  # names or fnmatch patterns

    def leaves_alone(self, table: str) -> bool:
        """Whether the package's check has nothing to say about `table` (another app's, or ignored)."""
        return table in self.recorded or any(fnmatchcase(table, pattern) for pattern in self.ignored)


def registered_tables(apps: AppModules | None) -> dict[str, str]:
    """The tables the service's registered apps declare, by app label (read from their models, no connection)."""
    if not apps:
        return {}
    return {model._meta.db_table: label for label, models in models_by_app(apps).items() if label != APP_LABEL for model in models}


async def recorded_tables(connection: asyncpg.Connection) -> dict[str, str]:
    """The tables other apps' Aerich histories declare, by app label (none where there is no aerich table)."""
    if not await connection.fetchval("SELECT to_regclass('aerich') IS NOT NULL"):
        return {}
    tables = {}
    for row in await connection.fetch(RECORDED_APPS, APP_LABEL):
        content = row["content"]
        state = json.loads(content) if isinstance(content, str) else content
        for model in (state or {}).values():
            if isinstance(model, dict) and model.get("table"):
                tables[model["table"]] = row["app"]
    return tables


async def table_owners(connection: asyncpg.Connection, apps: AppModules | None = None, ignore: Sequence[str] = ()) -> TableOwners:
    return TableOwners(registered_tables(apps), await recorded_tables(connection), tuple(ignore))


def formerly_ours(location: str = MIGRATIONS_LOCATION) -> dict[str, str]:
    """Tables this package's history created at some point, with the last migration whose models had them."""
    last_seen: dict[str, str] = {}
    for migration in load_history(location).migrations:
        for model in migration.models_state.values():
            last_seen[model["table"]] = migration.version
    return last_seen


def unclaimed_table(name: str, history: Mapping[str, str]) -> Finding:
    """The warning for a table no app claims; advice to drop it only for a table this package's history had
    (`history`: `formerly_ours()`; a table of the current models is never extra)."""
    if name in history:
        advice = (f"this package's models had it until {history[name]}; drop it (DROP TABLE {quote(name)}) once nothing reads it, "
                  "or add a model for it")
    else:
        advice = (f"if it is your service's, register its app (database(apps=...), `langlearn verify --app`) or ignore it "
                  f"(`--ignore-table {name}`); nothing here will drop it")
    return warning("schema", "extra_table", name, f"table {name} belongs to no app langlearn knows; {advice}")
