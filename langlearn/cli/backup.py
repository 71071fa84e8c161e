"""`langlearn backup` and `langlearn restore`: pg_dump and pg_restore of the configured database."""

from __future__ import annotations

import argparse
from pathlib import Path

from langlearn import backups
from langlearn.cli import Parser, Streams
from langlearn.errors import NotConfirmed
from langlearn.urls import redact


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    backup = commands.add_parser(
        "backup", help="dump the database with pg_dump (custom format) into backups/, for `langlearn restore`",
        description="Dump the database named by DATABASE_URL (or the private server's) with pg_dump 16 from the [local] "
        "extra (servers up to PostgreSQL 16), else the pg_dump on PATH. A failed dump leaves no file.",
    )
    backup.add_argument("--output", type=Path, metavar="FILE", help="where to write it (default: backups/<database>-<UTC time>.dump)")
    backup.set_defaults(handler=run_backup)
    restore = commands.add_parser(
        "restore", help="restore a backup into the configured database, which must be empty, in one transaction",
        description="Restore FILE (written by `langlearn backup`) into the database named by DATABASE_URL, which must hold "
        "no table (`langlearn db reset NAME --yes` empties one), with pg_restore --single-transaction: a failure leaves it empty.",
    )
    restore.add_argument("file", type=Path, metavar="FILE")
    restore.add_argument("--yes", action="store_true", help="confirm the restore")
    restore.set_defaults(handler=run_restore)


async def run_backup(args: argparse.Namespace, streams: Streams) -> int:
    url = streams.direct_url()  # pg_dump and pg_restore set session settings: never through a transaction pooler
    written = await backups.backup(url, args.output or backups.default_destination(url))
    print(f"backed up {redact(url)} to {written} ({written.stat().st_size:,} bytes)", file=streams.out)
    return 0


async def run_restore(args: argparse.Namespace, streams: Streams) -> int:
    if not args.yes:
        raise NotConfirmed(f"`langlearn restore {args.file}` fills the database with the backup; add --yes to confirm")
    url = streams.direct_url()  # pg_dump and pg_restore set session settings: never through a transaction pooler
    await backups.restore(url, args.file)
    print(f"restored {args.file} into {redact(url)}", file=streams.out)
    return 0
