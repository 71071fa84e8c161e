"""`langlearn partitions ensure | retire | status`: the monthly partitions of the history tables, without pg_partman.

    langlearn partitions ensure [--ahead N]                       # cron, daily: this month and N more exist
    langlearn partitions retire --before DATE (--archive DIR | --drop) --yes
    langlearn partitions status                                   # partitions, bounds, sizes, rows

`ensure` is idempotent and takes its own advisory lock, so any number of hosts may run it; `upgrade`
and startup's apply mode run it too. `retire` removes only whole partitions entirely before DATE
(midnight UTC), never the current month's. The design is in `langlearn.partitions`.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from langlearn import partitions
from langlearn.cli import Parser, Streams, positive_seconds
from langlearn.errors import UsageError
from langlearn.history.lock import refuse_transaction_pooler
from langlearn.settings import open_connection


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    command = commands.add_parser(
        "partitions", help="monthly partitions of the history tables: create ahead, retire old months, report",
        description="The monthly partitions of question_attempts and activity_feeds (every table of the schema "
        "partitioned by range on a timestamptz column), on the database named by DATABASE_URL.",
    )
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=Parser)
    ensure = actions.add_parser(
        "ensure", help="create this month's partition and the next N months' (idempotent; for cron)",
        description="Create the partitions of this month and the next N months (UTC) that are missing, finish a "
        "detach left pending, and empty and drop a DEFAULT partition. Safe to run twice or from several hosts.",
    )
    ensure.add_argument("--ahead", type=months, default=partitions.DEFAULT_AHEAD, metavar="N",
                        help=f"months past the current one to create (default {partitions.DEFAULT_AHEAD})")
    add_wait_options(ensure)
    ensure.set_defaults(handler=run_ensure)
    retire = actions.add_parser(
        "retire", help="detach (CONCURRENTLY) and drop or archive the partitions entirely before a date",
        description="Detach every partition that ends on or before DATE (midnight UTC) with DETACH PARTITION … "
        "CONCURRENTLY, then drop it (--drop) or pg_dump it into DIR first (--archive). A database marked "
        "langlearn.environment = production takes --archive only.",
    )
    retire.add_argument("--before", type=iso_date, required=True, metavar="YYYY-MM-DD",
                        help="retire the partitions whose every row is older than this date (at most the first of this month)")
    what = retire.add_mutually_exclusive_group(required=True)
    what.add_argument("--archive", type=Path, metavar="DIR", help="pg_dump each partition into DIR/<partition>.dump before dropping it")
    what.add_argument("--drop", action="store_true", help="drop the partitions without a copy")
    retire.add_argument("--yes", action="store_true", help="confirm: the rows leave the database")
    add_wait_options(retire)
    retire.set_defaults(handler=run_retire)
    status = actions.add_parser("status", help="list the partitions with bounds, sizes and row estimates",
                                description="List each partitioned table's partitions (bounds from the catalog, sizes, row "
                                "estimates), the rows in a DEFAULT partition, unfinished retires and pg_partman's presence.")
    status.set_defaults(handler=run_status)


def add_wait_options(parser: Parser) -> None:
    parser.add_argument("--lock-wait", type=positive_seconds, default=partitions.DEFAULT_LOCK_WAIT, metavar="S",
                        help=f"wait this long for another ensure or retire to finish (default {partitions.DEFAULT_LOCK_WAIT:g})")
    parser.add_argument("--lock-timeout", type=positive_seconds, default=partitions.DEFAULT_LOCK_TIMEOUT, metavar="S",
                        help=f"a statement that blocks the table while it waits gives up after this (default {partitions.DEFAULT_LOCK_TIMEOUT:g})")


def months(text: str) -> int:
    """An argparse type: a number of months from 0 to 120."""
    if not text.strip().isdigit() or int(text) > 120:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of months from 0 to 120")
    return int(text)


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


async def run_ensure(options: argparse.Namespace, streams: Streams) -> int:
    url = streams.direct_url()  # the maintenance lock is a session's: PostgreSQL itself, as for migrations
    connection = await open_connection(url)
    try:
        await refuse_transaction_pooler(connection, url, "partition maintenance")
        result = await partitions.ensure(connection, ahead=options.ahead, lock_wait=options.lock_wait, lock_timeout=options.lock_timeout)
    finally:
        await connection.close()
    for line in ensure_lines(result):
        print(line, file=streams.out)
    return 0


def ensure_lines(result: partitions.EnsureResult) -> list[str]:
    if not result.tables:
        return ["no partitioned table in this database: nothing to do"]
    lines = result.changes() + [f"{name}: left to pg_partman, which manages it" for name in result.left_to_partman]
    if not result.changes():
        lines.append(f"{', '.join(result.tables)}: every partition needed exists, nothing to do")
    return lines


async def run_retire(options: argparse.Namespace, streams: Streams) -> int:
    partitions.retire_moment(options.before)  # a date in the current month: refused before any question of --yes
    if not options.yes:
        how = f"--archive {options.archive}" if options.archive else "--drop"
        raise UsageError(f"`langlearn partitions retire --before {options.before} {how}` removes those months' rows from the database; add --yes to confirm")
    retired = await partitions.retire(streams.direct_url(), options.before, archive=options.archive,
                                      lock_wait=options.lock_wait, lock_timeout=options.lock_timeout)
    if not retired:
        print(f"no partition ends on or before {options.before}: nothing to retire", file=streams.out)
    for each in retired:
        bounds = "detached by an earlier run" if each.resumed else partitions.describe_bounds(each.lower, each.upper)
        where = f"archived to {each.archive}, dropped" if each.archive else "dropped"
        print(f"retired {each.name} of {each.table} {bounds}: {where}", file=streams.out)
    return 0


async def run_status(options: argparse.Namespace, streams: Streams) -> int:
    connection = await open_connection(streams.configured_url())
    try:
        status = await partitions.read_status(connection)
    finally:
        await connection.close()
    print("\n".join(status_lines(status)), file=streams.out)
    return 0


def status_lines(status: partitions.Status) -> list[str]:
    lines = []
    for table in status.tables:
        lines.append(f"{table.name} (by {table.key}): {len(table.partitions)} partition(s)"
                     + ("" if table.default else ", no DEFAULT partition"))
        for each in table.partitions:
            bounds = "DEFAULT" if each.is_default else partitions.describe_bounds(each.lower, each.upper)
            rows = (f"{status.default_rows[table.name]:,} rows" if each.is_default
                    else "rows unknown (not analysed)" if each.row_estimate is None else f"~{each.row_estimate:,} rows")
            pending = "  DETACH PENDING (the next ensure or retire finishes it)" if each.detach_pending else ""
            lines.append(f"  {each.name:<34} {bounds:<28} {_size(each.size_bytes):>10}  {rows}{pending}")
    if not status.tables:
        lines.append("no partitioned table in this database")
    lines += [f"retire unfinished: {name} is detached, not dropped yet (run retire again)" for name in status.retiring]
    partman = status.partman
    if partman.installed:
        managed = ", ".join(partman.manages) or "none of these tables"
        lines.append(f"pg_partman {partman.installed} is installed here and manages {managed}; ensure and retire leave those to it")
    elif partman.available:
        lines.append(f"pg_partman {partman.available} is available on this server (not installed): langlearn's own ensure and retire "
                     "do its work here; see docs/scale-out.md to use it instead")
    return lines


def _size(size: int) -> str:
    """pg_size_pretty's way: bytes, kB, MB or GB."""
    scaled, unit = float(size), "bytes"
    for larger in ("kB", "MB", "GB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, larger
    return f"{size} bytes" if unit == "bytes" else f"{scaled:,.1f} {unit}"
