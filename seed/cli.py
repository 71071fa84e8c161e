"""`langlearn seed`: fill a database at head with a realistic, consistent, reproducible history.

    langlearn seed                          # the demo: 36 learners, 3 documented demo accounts
    langlearn seed --users 20000            # a scale database (same shape, linear in --users)
    langlearn seed --preset scale --seed 7  # 1000 users drawn from another seed

Exit status: 0 when the database holds the requested seed (written now or before), 1 when the seed
refused or failed (the database is then as it was, or resumable), 2 for bad arguments or
configuration, reported before anything is written.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import TextIO

from rich.console import Console

from langlearn.errors import UsageError
from langlearn.seed.bulk import BULK_MIN_USERS
from langlearn.seed.run import DEMO_USERS, MAX_USERS, METHODS, SCALE_USERS, SeedOptions, render_summary, seed

MAX_SEED = 2**63 - 1
EARLIEST_ANCHOR = date(1970, 1, 1)
SUMMARY = __doc__.split("\n\n")[0].split(": ", 1)[1]


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {text!r}")
        return value

    return parse


def _day(text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a date like 2024-06-01, got {text!r}") from None
    if day < EARLIEST_ANCHOR:  # the history and the catalogue reach months back from the anchor
        raise argparse.ArgumentTypeError(f"{day} is too early; the history must end on {EARLIEST_ANCHOR} or later")
    if day > datetime.now(timezone.utc).date():
        raise argparse.ArgumentTypeError(f"{day} is in the future; the history must end by today (UTC)")
    return day


def add_arguments(cli: argparse.ArgumentParser) -> None:
    """The seed's options, on the `langlearn seed` subcommand."""
    cli.add_argument("--preset", choices=("demo", "scale"), default=None,
                     help=f"demo (default): {DEMO_USERS} learners including the documented demo accounts; "
                          f"scale: --users learners ({SCALE_USERS} by default) with no known password")
    cli.add_argument("--users", type=_whole(1, MAX_USERS), metavar="N",
                     help="number of learners; implies --preset scale (rows grow linearly with it)")
    cli.add_argument("--seed", type=_whole(0, MAX_SEED), default=42, metavar="S",
                     help="random seed: the same seed writes byte-identical rows, ids included (default 42)")
    cli.add_argument("--anchor", type=_day, metavar="YYYY-MM-DD",
                     help="the day the eight weeks of history end (midnight UTC); default: today at the first run, "
                          "then whatever the database recorded")
    cli.add_argument("--force", action="store_true",
                     help="seed even a database marked production; every secret is then random and demo accounts "
                          "get no known password (rows are no longer reproducible)")
    cli.add_argument("--no-progress", action="store_true",
                     help="no progress bars (they only show on a terminal anyway), and the summary in one line instead of a table")
    cli.add_argument("--method", choices=METHODS, default="auto",
                     help=f"how rows go in: bulk (bare tables, keys and indexes rebuilt at the end, as pg_restore does) or "
                          f"per-row; auto (default): bulk for a fresh database of {BULK_MIN_USERS} learners or more")
    cli.add_argument("--workers", type=_whole(1, 64), default=os.cpu_count() or 1, metavar="N",
                     help="processes generating rows (default: one per core); the rows do not depend on it")


def options_from(args: argparse.Namespace) -> SeedOptions:
    """Cross-check the parsed options, raising UsageError before anything touches a database."""
    if args.preset == "demo" and args.users is not None:
        raise UsageError("--users applies to the scale preset; drop --preset demo or use --preset scale")
    preset = args.preset or ("scale" if args.users is not None else "demo")
    users = DEMO_USERS if preset == "demo" else (args.users or SCALE_USERS)
    return SeedOptions(preset=preset, users=users, seed=args.seed, anchor=args.anchor, force=args.force,
                       progress=not args.no_progress, method=args.method, workers=args.workers)


async def run(options: SeedOptions, url: str, out: TextIO) -> int:
    """Seed the database at `url`; LanglearnErrors go to the caller, which prints them."""
    console = Console(file=out, highlight=False)
    report = await seed(url, options, console)
    render_summary(report, console, per_table=options.progress)
    return 0
