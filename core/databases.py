"""Scratch databases on one PostgreSQL server: the tests' database per test and the benchmarks' fresh ones.

The server's URL (DATABASE_URL's, or the private server's) names any database on it; the user needs
CREATEDB. Names carry a prefix so leftovers of a killed run can be found and dropped.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import asyncpg

from core.settings import asyncpg_url


def with_database(url: str, name: str) -> str:
    """The same server and credentials, another database."""
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


class ScratchDatabases:
    """Creates and drops databases named `<prefix><random>` (or as asked) on the server of `url`."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(asyncpg_url(self.url))

    async def create(self, template: str | None = None, name: str | None = None) -> str:
        """A new database, a copy of `template` (default: template0); returns its URL."""
        name = name or f"{self.prefix}{uuid.uuid4().hex[:10]}"
        connection = await self.admin()
        try:
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template or "template0"}"')
        finally:
            await connection.close()
        return with_database(self.url, name)

    async def drop(self, url: str) -> None:
        connection = await self.admin()
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')
        finally:
            await connection.close()
