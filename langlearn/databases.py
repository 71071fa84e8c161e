"""Databases on the configured server: `langlearn db create|drop|reset`, the tests' and the benchmarks'.

The server's URL (DATABASE_URL's, or the private server's) names any database on it; creating and
dropping needs a user with CREATEDB. Administrative statements run from the server's maintenance
database `postgres` (so the database named by DATABASE_URL itself can be reset), falling back to
the configured one where `postgres` does not exist or is not open to the user.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

import asyncpg

from langlearn.errors import ConfigError, LanglearnError, UsageError
from langlearn.settings import marked_production, open_connection, server_address

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
SYSTEM_DATABASES = frozenset({"postgres", "template0", "template1"})


def with_database(url: str, name: str) -> str:
    """The same server and credentials, another database."""
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def checked_name(name: str) -> str:
    """`name` if it is a database name this tool creates and drops, else a UsageError."""
    if not NAME.match(name):
        raise UsageError(f"{name!r} is not a database name: use 1 to 63 letters, digits, _ or -, starting with a letter or _")
    if name in SYSTEM_DATABASES:
        raise UsageError(f"{name!r} is one of PostgreSQL's own databases; pick another name")
    return name


async def admin_connection(url: str) -> asyncpg.Connection:
    """A connection for CREATE/DROP DATABASE on the server of `url`; one-line ConfigErrors when it cannot be had."""
    try:
        return await open_connection(with_database(url, "postgres"))
    except ConfigError:  # no `postgres` database, or not open to this user: the configured one will do
        return await open_connection(url)


async def database_exists(connection: asyncpg.Connection, name: str) -> bool:
    return bool(await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


async def create_database(url: str, name: str, *, template: str | None = None) -> str:
    """Create database `name` (a copy of `template`, default template0) on the server of `url`; return its URL."""
    checked_name(name)
    connection = await admin_connection(url)
    try:
        if await database_exists(connection, name):
            raise LanglearnError(f"database {name!r} already exists on {server_address(url)}; `langlearn db reset {name} --yes` empties it")
        await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template or "template0"}"')
    except asyncpg.InsufficientPrivilegeError:
        raise LanglearnError(f"the user of DATABASE_URL may not create databases on {server_address(url)}; grant it CREATEDB") from None
    finally:
        await connection.close()
    return with_database(url, name)


async def drop_database(url: str, name: str, *, refuse_production: bool = True) -> bool:
    """Drop database `name` on the server of `url`, ending its sessions; False when it did not exist.

    Refuses a database marked production (its `langlearn.environment` is set to anything but
    development or test) unless `refuse_production` is False (scratch databases a test made)."""
    checked_name(name)
    connection = await admin_connection(url)
    try:
        if not await database_exists(connection, name):
            return False
        marker = await connection.fetchval(
            """SELECT split_part(setting, '=', 2) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase,
                      unnest(s.setconfig) AS setting
               WHERE d.datname = $1 AND s.setrole = 0 AND setting LIKE 'langlearn.environment=%'""",
            name,
        )
        if refuse_production and marked_production(marker):
            raise LanglearnError(
                f"database {name!r} is marked langlearn.environment = {marker!r}; this tool drops only development "
                "and test databases (drop it yourself if you really mean to)"
            )
        await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    except asyncpg.InsufficientPrivilegeError:
        raise LanglearnError(f"the user of DATABASE_URL may not drop database {name!r} on {server_address(url)}; only its owner may") from None
    finally:
        await connection.close()
    return True


class ScratchDatabases:
    """Creates and drops databases named `<prefix><random>` (or as asked) on the server of `url`."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    async def admin(self) -> asyncpg.Connection:
        return await open_connection(self.url)

    async def create(self, template: str | None = None, name: str | None = None) -> str:
        """A new database, a copy of `template` (default: template0); returns its URL."""
        return await create_database(self.url, name or f"{self.prefix}{uuid.uuid4().hex[:10]}", template=template)

    async def drop(self, url: str) -> None:
        await drop_database(self.url, database_name(url), refuse_production=False)

