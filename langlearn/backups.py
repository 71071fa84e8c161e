"""Backups of the configured database with pg_dump, and their restore with pg_restore.

pg_dump must be at least as new as the server: the `[local]` extra's wheel ships PostgreSQL 16's
client tools, so a backup works against the private server and any server up to 16 whatever the
machine has installed; without the extra, the tools on PATH are used. The password reaches them
through `PGPASSWORD`, never on their command line, where `ps` would show it. A backup is written
beside its destination and renamed when pg_dump succeeds, so a failed one leaves no file behind.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

from langlearn.errors import ConfigError, LanglearnError
from langlearn.local_server import LocalServerError, client_tool
from langlearn.settings import check_reachable, open_connection
from langlearn.urls import libpq_url, redact

BACKUP_FOLDER = Path("backups")  # git-ignored in a checkout


@dataclass(frozen=True)
class LibpqTarget:
    """What a libpq client gets: a connection string without the password, and the environment carrying it."""

    dsn: str
    environment: dict[str, str]


def libpq_target(url: str) -> LibpqTarget:
    parts = urlsplit(libpq_url(url))
    environment = dict(os.environ)
    netloc = parts.netloc
    if parts.password is not None:
        environment["PGPASSWORD"] = unquote(parts.password)
        netloc = netloc.rsplit("@", 1)[1]
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
    return LibpqTarget(parts._replace(scheme="postgresql", netloc=netloc).geturl(), environment)


def client_program(name: str) -> Path:
    """The wheel's client tool `name` (psql, pg_dump, pg_restore), else the one on PATH."""
    try:
        return client_tool(name)
    except LocalServerError:
        found = shutil.which(name)
        if found is None:
            raise ConfigError(f"no {name} found: install the [local] extra (pip install 'langlearn-data[local]') or PostgreSQL's client tools") from None
        return Path(found)


async def run_client(name: str, url: str, *arguments: str) -> int:
    """Run a client tool on the database of `url`, in the foreground (its output is the user's); return its exit code."""
    target = libpq_target(url)
    process = await asyncio.create_subprocess_exec(str(client_program(name)), "--dbname", target.dsn, *arguments, env=target.environment)
    return await process.wait()


def default_destination(url: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return BACKUP_FOLDER / f"{urlsplit(url).path.lstrip('/')}-{stamp}.dump"


async def backup(url: str, destination: Path) -> Path:
    """Dump the database of `url` to `destination` (pg_dump's custom format, for pg_restore); return it.

    A partitioned table comes back whole: its parent, every partition with its bounds, and the rows."""
    if destination.exists():
        raise LanglearnError(f"{destination} already exists; choose another --output or move it away")
    await check_reachable(url)  # a bad URL, password or server is a one-line configuration error, before any file
    return await _dump(url, destination, redact(url))


async def dump_table(url: str, schema: str, table: str, destination: Path) -> Path:
    """Dump one table of `url` (definition, keys, indexes, rows) to `destination`,
    in pg_dump's custom format; return it. What `langlearn partitions retire --archive` keeps."""
    if destination.exists():
        raise LanglearnError(f"{destination} already exists; move it away or choose another --archive folder")
    return await _dump(url, destination, f"table {table} of {redact(url)}", "--table", f'"{schema}"."{table}"')


async def _dump(url: str, destination: Path, what: str, *arguments: str) -> Path:
    """pg_dump into `destination` by way of a `.partial` file renamed when pg_dump succeeded."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    failure = await _run_captured("pg_dump", url, "--format=custom", "--file", str(partial), *arguments)
    if failure is not None:
        partial.unlink(missing_ok=True)
        raise LanglearnError(f"pg_dump of {what} failed, nothing written: {failure}")
    partial.rename(destination)
    return destination


async def restore(url: str, source: Path) -> None:
    """Restore a backup into the database of `url`, which must hold no table, in one transaction: a
    failed restore leaves it empty. (Restoring over a database that moved on would keep whatever the
    backup does not name, so the result would be neither state; reset the database first.)"""
    if not source.is_file():
        raise ConfigError(f"no backup at {source}; pass the file `langlearn backup` wrote")
    connection = await open_connection(url)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
        )
    finally:
        await connection.close()
    if tables:
        name = urlsplit(url).path.lstrip("/")
        raise LanglearnError(
            f"database {name!r} holds {tables} table(s); restore into an empty database (`langlearn db reset {name} --yes` empties it)"
        )
    failure = await _run_captured("pg_restore", url, "--no-owner", "--single-transaction", "--exit-on-error", str(source))
    if failure is not None:
        raise LanglearnError(f"pg_restore of {source} into {redact(url)} failed and changed nothing: {failure}")


async def _run_captured(name: str, url: str, *arguments: str) -> str | None:
    """Run a client tool; None when it succeeded, else its last error line (any password hidden)."""
    target = libpq_target(url)
    process = await asyncio.create_subprocess_exec(
        str(client_program(name)), "--dbname", target.dsn, *arguments,
        env=target.environment, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    if process.returncode == 0:
        return None
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]  # the tools follow their error with detail lines
    detail = (errors or lines or [f"exit code {process.returncode}"])[0]
    password = urlsplit(url).password
    return detail.replace(unquote(password), "***") if password else detail
