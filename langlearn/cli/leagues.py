"""`langlearn leagues close-week [--week YYYY-MM-DD]`: close a leaderboard week, for the weekly cron job.

Prints one summary line and exits 0, also when the week was already closed (a rerun, or a second
cron host, changes nothing). A bad --week (not a date, not a Monday, not over yet) is exit 2 with one line.
"""

from __future__ import annotations

import argparse
from datetime import date

from langlearn.cli import Parser, Streams
from langlearn.errors import UsageError
from langlearn.operations import leagues
from langlearn.operations.errors import InvalidRequest


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    command = commands.add_parser(
        "leagues",
        help="weekly leagues: close a week (ranks, promotions, demotions, next week's leagues, rewards)",
        description="Weekly leagues on the database named by DATABASE_URL (or the private server).",
    )
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=Parser)
    close = actions.add_parser(
        "close-week",
        help="close a week: final ranks, promotions and demotions, next week's entries and rewards (idempotent)",
        description="Close a leaderboard week (Monday to Sunday, UTC). Safe to run twice or concurrently: "
        "a week already closed is reported and left as it is. Exit 0 done or already closed, 2 bad input.",
    )
    close.add_argument(
        "--week", type=monday, metavar="YYYY-MM-DD",
        help="the week's Monday (default: the last week that has ended, UTC)",
    )
    close.set_defaults(handler=run_close_week)


def monday(text: str) -> date:
    """An argparse type: an ISO date (whether it is a Monday of an ended week, the operation checks)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


async def run_close_week(options: argparse.Namespace, streams: Streams) -> int:
    from langlearn.startup import database

    week: date = options.week or leagues.last_ended_week()
    try:
        leagues.check_week(week)  # before connecting: bad input is exit 2 even without a server
    except InvalidRequest as refused:
        raise UsageError(refused.detail) from None
    # a batch job waits for the rows it locks (a user's request holds one for moments); requests are the ones bounded
    async with database(streams.configured_url(), migrate="check", pool_lock_timeout=0):
        try:
            closed = await leagues.close_week(week)
        except InvalidRequest as refused:  # the day changed (UTC) between the check and the close
            raise UsageError(refused.detail) from None
    print(summary(closed), file=streams.out)
    return 0


def summary(closed: leagues.WeekClosed) -> str:
    """The command's one line."""
    if closed.already_closed:
        return f"week {closed.week_start} already closed: nothing to do"
    return (
        f"week {closed.week_start} closed: {closed.ranked} entries ranked, {closed.promoted} promoted, {closed.demoted} demoted; "
        f"next week: {closed.next_created} entries created, {closed.next_moved} moved; {closed.rewards_paid} promotion rewards paid"
    )
