"""Closing a league week (langlearn.operations.leagues, `langlearn leagues close-week`) on a real PostgreSQL, races included."""

from __future__ import annotations

import argparse
import asyncio
import io
from datetime import date, datetime, time, timedelta, timezone
from uuid import UUID

import asyncpg
import pytest
from tortoise import Tortoise

from langlearn import cli, history, rules
from langlearn.cli import leagues as leagues_cli
from langlearn.operations import leagues, wallet
from langlearn.operations.errors import InvalidRequest
from langlearn.startup import database
from langlearn.verify import check_invariants
from tests.test_seed import DEMO, seed_cli

pytestmark = pytest.mark.clock  # a week closes by the clock
POOL = 5
WEEK = date(2026, 11, 2)  # a Monday before any day the tests run: ended, and so has the week after it
NEXT = WEEK + timedelta(days=7)

# (league, XP earned in WEEK): bronze is the bottom league, diamond the top one
PLAYERS = {
    "b_high": ("bronze", 200),
    "b_edge": ("bronze", rules.PROMOTE_AT["bronze"]),  # exactly the threshold: promoted
    "b_low1": ("bronze", 10),  # under every demotion line, but bronze has none
    "b_low2": ("bronze", 10),  # a tie: the lower user id ranks first
    "s_stay": ("silver", rules.DEMOTE_BELOW["silver"]),  # exactly the line: stays
    "s_down": ("silver", rules.DEMOTE_BELOW["silver"] - 1),
    "s_up": ("silver", rules.PROMOTE_AT["silver"] + 10),
    "g_mid": ("gold", rules.DEMOTE_BELOW["gold"] + 5),
    "d_top": ("diamond", 1000),  # the top league: never promoted
    "d_idle": ("diamond", 0),  # an entry with no XP: demoted
}
NEXT_XP = {"b_high": 30}  # already earned next week (its entry exists, in the old league)


def pooled(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}maxsize={POOL}"


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=timezone.utc)


def this_week() -> date:
    """The Monday of today (UTC), read when a test runs: a week the clock has not finished."""
    return rules.week_start(datetime.now(timezone.utc).date())


async def build_week(connection) -> dict[str, UUID]:
    """Users with lesson attempts in WEEK (and one in NEXT), their entries carrying that XP, unranked and unflagged."""
    course = await connection.fetchval("INSERT INTO courses (title, language, level, total_lessons) VALUES ('c', 'en', 'A1', 1) RETURNING id")
    lesson = await connection.fetchval("INSERT INTO lessons (course_id, title, order_index) VALUES ($1, 'l', 0) RETURNING id", course)
    users: dict[str, UUID] = {}
    for name, (league, xp) in PLAYERS.items():
        total = xp + NEXT_XP.get(name, 0)
        users[name] = user = await connection.fetchval(
            "INSERT INTO users (email, username, hashed_password, total_xp) VALUES ($1, $2, '$argon2id$x', $3) RETURNING id",
            f"{name}@example.com", name, total,
        )
        for day, amount in ((WEEK + timedelta(days=2), xp), (NEXT + timedelta(days=1), NEXT_XP.get(name, 0))):
            if amount:
                await connection.execute(
                    "INSERT INTO lesson_attempts (user_id, lesson_id, started_at, passed, xp_earned) VALUES ($1, $2, $3, true, $4)",
                    user, lesson, at(day), amount,
                )
        await connection.execute(
            """INSERT INTO leaderboard_entries (user_id, week_start, week_end, league, xp_earned, lessons_completed)
               VALUES ($1, $2, $3, $4, $5, $6)""", user, WEEK, WEEK + timedelta(days=6), league, xp, 1 if xp else 0,
        )
        if name in NEXT_XP:
            await connection.execute(
                """INSERT INTO leaderboard_entries (user_id, week_start, week_end, league, xp_earned, lessons_completed)
                   VALUES ($1, $2, $3, $4, $5, 1)""", user, NEXT, NEXT + timedelta(days=6), league, NEXT_XP[name],
            )
    # one user holds a wallet already (a ledger entry to order the reward after)
    wallet = await connection.fetchval(
        "INSERT INTO user_wallets (user_id, gems, total_gems_earned) VALUES ($1, 50, 50) RETURNING id", users["b_high"])
    await connection.execute(
        """INSERT INTO wallet_transactions (wallet_id, user_id, transaction_type, amount, balance_after, source, idempotency_key)
           VALUES ($1, $2, 'earn', 50, 50, 'welcome_bonus', 'welcome')""", wallet, users["b_high"],
    )
    return users


async def digest(connection) -> dict[str, str]:
    """Everything a close may write, as one hash per table."""
    return {
        table: await connection.fetchval(f"SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY t.id)), '') FROM {table} t")
        for table in ("leaderboard_entries", "wallet_transactions", "user_wallets", "activity_feeds")
    }


async def marked(connection) -> list[date]:
    """The weeks `league_weeks` says are closed."""
    return [row["week_start"] for row in await connection.fetch("SELECT week_start FROM league_weeks ORDER BY week_start")]


async def assert_consistent(connection) -> None:
    findings = await check_invariants(connection)
    assert findings == [], [f.message for f in findings]


async def assert_closed(connection, users: dict[str, UUID]) -> None:
    """The state one close of WEEK leaves, checked against the rule book."""
    rows = {r["user_id"]: r for r in await connection.fetch("SELECT * FROM leaderboard_entries WHERE week_start = $1", WEEK)}
    names = {user: name for name, user in users.items()}
    for league in rules.LEAGUES:
        board = {user: row["xp_earned"] for user, row in rows.items() if row["league"] == league}
        assert {user: rows[user]["current_rank"] for user in board} == rules.ranks(board)
    low1, low2 = sorted([users["b_low1"], users["b_low2"]])
    assert rows[low1]["current_rank"] < rows[low2]["current_rank"]  # the tie-break
    promoted = {names[u] for u, r in rows.items() if r["is_promoted"]}
    demoted = {names[u] for u, r in rows.items() if r["is_demoted"]}
    assert promoted == {"b_high", "b_edge", "s_up"}
    assert demoted == {"s_down", "d_idle"}

    following = {r["user_id"]: r for r in await connection.fetch("SELECT * FROM leaderboard_entries WHERE week_start = $1", NEXT)}
    assert set(following) == set(users.values())  # every user of the week has next week's entry
    for name, (league, xp) in PLAYERS.items():
        row = following[users[name]]
        assert row["league"] == rules.close_week(league, xp).next_league, name
        assert (row["xp_earned"], row["week_end"]) == (NEXT_XP.get(name, 0), NEXT + timedelta(days=6)), name
    assert following[users["b_high"]]["lessons_completed"] == 1  # next week's progress kept, only the league moved

    rewards = await connection.fetch(
        """SELECT user_id, amount, balance_after, transaction_type::text AS kind, idempotency_key, reference_id
           FROM wallet_transactions WHERE source = 'league_promotion'""")
    assert {names[r["user_id"]]: r["amount"] for r in rewards} == {
        "b_high": rules.promotion_gems("bronze"), "b_edge": rules.promotion_gems("bronze"), "s_up": rules.promotion_gems("silver"),
    }
    for reward in rewards:
        assert (reward["kind"], reward["reference_id"], reward["idempotency_key"]) == ("reward", WEEK.isoformat(), f"league_promotion:{WEEK}")
    gems = dict(await connection.fetch("SELECT u.username, w.gems FROM user_wallets w JOIN users u ON u.id = w.user_id"))
    assert gems == {"b_high": 50 + rules.promotion_gems("bronze"), "b_edge": rules.promotion_gems("bronze"), "s_up": rules.promotion_gems("silver")}
    feed = await connection.fetch("SELECT user_id, message FROM activity_feeds WHERE activity_type = 'league_promoted'")
    assert sorted(names[r["user_id"]] for r in feed) == ["b_edge", "b_high", "s_up"]
    assert await marked(connection) == [WEEK]  # the week's marker, and no other (next week is open)
    await assert_consistent(connection)


async def test_close_week_ranks_promotes_demotes_and_pays(head_db, connect):
    connection = await connect(head_db)
    users = await build_week(connection)
    async with database(head_db, migrate="check", global_fallback=False):
        closed = await leagues.close_week(WEEK)
    assert closed == leagues.WeekClosed(WEEK, len(PLAYERS), 3, 2, len(PLAYERS) - 1, 1, 3, already_closed=False)
    await assert_closed(connection, users)


async def test_close_week_twice_changes_nothing_the_second_time(head_db, connect):
    connection = await connect(head_db)
    users = await build_week(connection)
    async with database(head_db, migrate="check", global_fallback=False):
        first = await leagues.close_week(WEEK)
        after_first = await digest(connection)
        second = await leagues.close_week(WEEK)
    assert not first.already_closed
    assert second == leagues.WeekClosed(WEEK, len(PLAYERS), 3, 2, 0, 0, 0, already_closed=True)
    assert await digest(connection) == after_first
    await assert_closed(connection, users)


async def test_the_week_closed_twice_at_once_gives_one_result(head_db, connect):
    connection = await connect(head_db)
    users = await build_week(connection)
    async with database(pooled(head_db), migrate="check", global_fallback=False):
        results = await asyncio.gather(leagues.close_week(WEEK), leagues.close_week(WEEK))
    assert sorted(result.already_closed for result in results) == [False, True]
    worker = next(result for result in results if not result.already_closed)
    assert (worker.rewards_paid, worker.next_created, worker.next_moved) == (3, len(PLAYERS) - 1, 1)
    await assert_closed(connection, users)


async def test_a_close_racing_wallet_operations_keeps_the_ledger_in_order(head_db, connect):
    connection = await connect(head_db)
    users = await build_week(connection)
    async with database(pooled(head_db), migrate="check", global_fallback=False):
        earned = [wallet.earn(users["b_high"], 5, "daily_goal", f"goal-{n}") for n in range(3)]
        await asyncio.gather(leagues.close_week(WEEK), *earned)
    assert await connection.fetchval("SELECT gems FROM user_wallets WHERE user_id = $1", users["b_high"]) == 65 + rules.promotion_gems("bronze")
    await assert_consistent(connection)


async def test_a_partly_applied_close_is_completed(head_db, connect):
    """A week whose flags were set but whose rewards and marker were not (e.g. by hand) is closed, paying only what is missing."""
    connection = await connect(head_db)
    users = await build_week(connection)
    async with database(head_db, migrate="check", global_fallback=False):
        await leagues.close_week(WEEK)
        await connection.execute("DELETE FROM activity_feeds")
        await connection.execute("DELETE FROM wallet_transactions WHERE source = 'league_promotion' AND user_id = $1", users["s_up"])
        await connection.execute("DELETE FROM user_wallets WHERE user_id = $1", users["s_up"])
        await connection.execute("DELETE FROM league_weeks")
        again = await leagues.close_week(WEEK)
    assert (again.already_closed, again.rewards_paid, again.next_created, again.next_moved) == (False, 1, 0, 0)
    assert await connection.fetchval("SELECT count(*) FROM wallet_transactions WHERE source = 'league_promotion'") == 3
    assert await marked(connection) == [WEEK]


async def test_a_week_that_only_looks_closed_is_closed_and_the_marker_alone_says_closed(head_db, connect):
    """The marker is the "already closed" test. A week whose ranks are final and which promotes and demotes no one looked
    closed to the close before it (ranks and flags were its marker): it closes now, creating next week's entry; a week
    with no entry at all closes too; the marker alone makes a close find its week closed, whatever its entries say."""
    connection = await connect(head_db)
    user = await connection.fetchval(
        "INSERT INTO users (email, username, hashed_password) VALUES ('calm@example.com', 'calm', '$argon2id$x') RETURNING id")
    await connection.execute(
        """INSERT INTO leaderboard_entries (user_id, week_start, week_end, league, xp_earned, current_rank)
           VALUES ($1, $2, $3, 'bronze', 0, 1)""", user, WEEK, WEEK + timedelta(days=6))
    empty_week = WEEK - timedelta(days=7)
    unclosed = WEEK - timedelta(days=14)  # marked closed by hand, its entry left unranked
    await connection.execute(
        """INSERT INTO leaderboard_entries (user_id, week_start, week_end, league, xp_earned) VALUES ($1, $2, $3, 'bronze', 0)""",
        user, unclosed, unclosed + timedelta(days=6))
    await connection.execute("INSERT INTO league_weeks (week_start) VALUES ($1)", unclosed)
    async with database(head_db, migrate="check", global_fallback=False):
        closed = await leagues.close_week(WEEK)
        empty = await leagues.close_week(empty_week)
        again = [await leagues.close_week(week) for week in (WEEK, empty_week, unclosed)]
    assert closed == leagues.WeekClosed(WEEK, 1, 0, 0, 1, 0, 0, already_closed=False)
    assert empty == leagues.WeekClosed(empty_week, 0, 0, 0, 0, 0, 0, already_closed=False)
    assert [result.already_closed for result in again] == [True, True, True]
    assert await marked(connection) == [unclosed, empty_week, WEEK]
    assert await connection.fetchval("SELECT league::text FROM leaderboard_entries WHERE user_id = $1 AND week_start = $2", user, NEXT) == "bronze"
    assert await connection.fetchval("SELECT current_rank FROM leaderboard_entries WHERE week_start = $1", unclosed) is None


@pytest.mark.parametrize("weeks_from_now, why", [
    (None, "Monday"),  # WEEK's Tuesday
    (0, "takes completions until"),  # this week: not over
    (1, "takes completions until"),  # a future week
])
async def test_refuses_a_day_that_is_not_a_monday_or_a_week_not_over(head_db, connect, weeks_from_now, why):
    day = WEEK + timedelta(days=1) if weeks_from_now is None else this_week() + timedelta(weeks=weeks_from_now)
    connection = await connect(head_db)
    await build_week(connection)
    before = await digest(connection)
    async with database(head_db, migrate="check", global_fallback=False):
        with pytest.raises(InvalidRequest, match=why):
            await leagues.close_week(day)
    assert await digest(connection) == before


def test_check_week_and_the_default_week():
    monday = date(2026, 11, 16)
    after = datetime(2026, 11, 23, tzinfo=timezone.utc) + rules.ATTEMPT_MAX_AGE  # the Monday after, once late completions are in
    leagues.check_week(monday, now=after)
    with pytest.raises(InvalidRequest, match="2026-11-23 02:00"):
        leagues.check_week(monday, now=after - timedelta(seconds=1))
    with pytest.raises(InvalidRequest, match="Tuesday"):
        leagues.check_week(date(2026, 11, 17), now=datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert leagues.last_ended_week(date(2026, 11, 23)) == monday
    assert leagues.last_ended_week(date(2026, 11, 29)) == monday
    assert leagues.last_ended_week(date(2026, 11, 30)) == date(2026, 11, 23)


async def test_round_trips_of_a_close_and_of_a_week_already_closed(head_db, connect):
    """As the module's docstring counts them (BEGIN and COMMIT included), whatever the number of entries."""
    connection = await connect(head_db)
    await build_week(connection)
    warm_week = WEEK - timedelta(days=7)  # a close with a reward first: asyncpg reads the types it meets once per connection
    warm = await connection.fetchval(
        "INSERT INTO users (email, username, hashed_password) VALUES ('warm@example.com', 'warm', '$argon2id$x') RETURNING id")
    await connection.execute(
        "INSERT INTO leaderboard_entries (user_id, week_start, week_end, league, xp_earned) VALUES ($1, $2, $3, 'bronze', 500)",
        warm, warm_week, warm_week + timedelta(days=6))
    async with database(f"{pooled(head_db).replace('maxsize=5', 'minsize=1&maxsize=1')}", migrate="check", global_fallback=False):
        client = Tortoise.get_connection("default")
        assert (await leagues.close_week(warm_week)).rewards_paid == 1
        async with client._pool.acquire() as raw:  # its one connection: every statement of the operation goes through it
            sent: list[str] = []
            raw.add_query_logger(lambda record: sent.append(record.query))
        counted = []
        for _ in range(2):
            sent.clear()
            await leagues.close_week(WEEK)
            counted.append(len(sent))
    # + 1: the pool resets the connection when the operation hands it back (asyncpg's reset query)
    assert counted == [5 + 3 + 1, 4 + 1], (counted, sent)


async def test_a_marker_of_a_day_that_is_not_a_monday_is_refused(head_db, connect):
    connection = await connect(head_db)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await connection.execute("INSERT INTO league_weeks (week_start) VALUES ($1)", WEEK + timedelta(days=1))
    assert refused.value.constraint_name == "league_weeks_week_start_check"
    await connection.execute("INSERT INTO league_weeks (week_start) VALUES ($1)", WEEK)
    with pytest.raises(asyncpg.UniqueViolationError):  # a week closes once
        await connection.execute("INSERT INTO league_weeks (week_start) VALUES ($1)", WEEK)


# --- the weeks closed before the marker (migration 14) ---------------------------------------------

LEAGUE_WEEKS = next(version for version in history.version_files() if version.endswith("_league_weeks.py"))
BEFORE_LEAGUE_WEEKS = history.version_files()[history.version_files().index(LEAGUE_WEEKS) - 1]


async def test_the_migration_marks_the_weeks_closed_before_it_and_unranks_the_weeks_it_cannot(head_db, connect):
    """A week closed before `league_weeks` existed gets its row (a close finds it closed); a past week an older seed ranked
    without its promotion and this week ranked by an older seed (open) are unranked, and close when their time comes."""
    connection = await connect(head_db)
    users = await build_week(connection)
    async with database(head_db, migrate="check", global_fallback=False):
        await leagues.close_week(WEEK)  # all a close leaves, marker aside
    older, current = WEEK - timedelta(days=7), this_week()
    for week in (older, current):  # as an older seed ranked them: the top bronze earned a promotion it was not given
        for rank, name in enumerate(("b_low1", "b_low2"), start=1):
            await connection.execute(
                """INSERT INTO leaderboard_entries (user_id, week_start, week_end, league, xp_earned, current_rank)
                   VALUES ($1, $2, $3, 'bronze', $4, $5)""",
                users[name], week, week + timedelta(days=6), rules.PROMOTE_AT["bronze"] if rank == 1 else 0, rank)
    ranks = "SELECT week_start, current_rank FROM leaderboard_entries WHERE current_rank IS NOT NULL ORDER BY id"
    closed_ranks = [row for row in await connection.fetch(ranks) if row["week_start"] == WEEK]
    await history.downgrade(head_db, to=BEFORE_LEAGUE_WEEKS)
    assert await connection.fetchval("SELECT to_regclass('league_weeks')") is None
    started = await connection.fetchval("SELECT now()")
    for _ in range(2):  # and again after a downgrade: the same result
        assert await history.upgrade(head_db, to=LEAGUE_WEEKS) == [LEAGUE_WEEKS]
        assert await marked(connection) == [WEEK]
        assert await connection.fetch(ranks) == closed_ranks  # the closed week keeps its ranks; the others have none
        await history.downgrade(head_db, to=BEFORE_LEAGUE_WEEKS)
    await history.upgrade(head_db)
    assert await connection.fetchval("SELECT created_at FROM league_weeks") >= started  # recognised by the upgrade
    async with database(head_db, migrate="check", global_fallback=False):
        again = await leagues.close_week(WEEK)
        reclosed = await leagues.close_week(older)
    assert again.already_closed
    assert (reclosed.already_closed, reclosed.promoted, reclosed.rewards_paid) == (False, 1, 1)
    assert await marked(connection) == [older, WEEK]


async def test_the_migration_recognises_every_week_a_seed_closed(head_db, connect):
    """A database seeded before `league_weeks` existed: the upgrade gives a row to every week the seed closed (ranks,
    flags, rewards as `source`/`reference_id`, next-week entries only for who practised), and to no other."""
    seeded = seed_cli(*DEMO, database=head_db)
    assert seeded.returncode == 0, seeded.stderr
    connection = await connect(head_db)
    closed = await marked(connection)
    await history.downgrade(head_db, to=BEFORE_LEAGUE_WEEKS)
    await history.upgrade(head_db)
    assert await marked(connection) == closed and closed
    await assert_consistent(connection)


# --- the seed --------------------------------------------------------------------------------------

async def test_the_seeds_last_complete_week(seeded_db, connect):
    """The seed closes a week on the Monday after it when its history (which ends the day before its anchor) holds that
    Monday: if it did, a close finds it closed and changes nothing; otherwise the close does it, and the data stays consistent."""
    connection = await connect(seeded_db)
    week = leagues.last_ended_week()
    seed_closed = week + timedelta(days=7) < (await connection.fetchval("SELECT anchor_at FROM seed_runs")).date()
    before = await digest(connection)
    async with database(seeded_db, migrate="check", global_fallback=False):
        closed = await leagues.close_week(week)
        again = await leagues.close_week(week)
    assert closed.ranked > 0
    assert again.already_closed
    if seed_closed:
        assert closed.already_closed, closed
        assert await digest(connection) == before
    else:
        assert not closed.already_closed
    await assert_consistent(connection)


# --- the command line ------------------------------------------------------------------------------

BUILD_PARSER = cli.build_parser


def _parser() -> cli.Parser:
    """The real parser, with this command registered unless build_parser already does."""
    parser = BUILD_PARSER()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "leagues" not in commands.choices:
        leagues_cli.register(commands)
    return parser


async def _run(monkeypatch, url: str, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "build_parser", _parser)
    monkeypatch.setenv("DATABASE_URL", url)
    out, err = io.StringIO(), io.StringIO()
    code = await cli.main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


async def test_cli_closes_then_reports_already_closed(head_db, connect, monkeypatch):
    connection = await connect(head_db)
    users = await build_week(connection)
    code, out, err = await _run(monkeypatch, head_db, "leagues", "close-week", "--week", WEEK.isoformat())
    assert (code, err) == (0, "")
    assert out == (f"week {WEEK} closed: {len(PLAYERS)} entries ranked, 3 promoted, 2 demoted; "
                   f"next week: {len(PLAYERS) - 1} entries created, 1 moved; 3 promotion rewards paid\n")
    await assert_closed(connection, users)
    code, out, err = await _run(monkeypatch, head_db, "leagues", "close-week", "--week", WEEK.isoformat())
    assert (code, out, err) == (0, f"week {WEEK} already closed: nothing to do\n", "")


async def test_cli_default_week_is_the_last_ended_one(head_db, monkeypatch):
    week = leagues.last_ended_week()
    code, out, err = await _run(monkeypatch, head_db, "leagues", "close-week")
    assert (code, err) == (0, "")
    assert out == (f"week {week} closed: 0 entries ranked, 0 promoted, 0 demoted; "  # no entries: only its marker is written
                   "next week: 0 entries created, 0 moved; 0 promotion rewards paid\n")
    code, out, err = await _run(monkeypatch, head_db, "leagues", "close-week")
    assert (code, out, err) == (0, f"week {week} already closed: nothing to do\n", "")


@pytest.mark.parametrize("week, message", [
    ("2026-13-01", "is not a date"),
    ("yesterday", "is not a date"),
    ((WEEK + timedelta(days=2)).isoformat(), "a week starts on a Monday"),
    ("this week", "close it from then"),
])
async def test_cli_bad_week_is_exit_2_with_one_line(head_db, monkeypatch, week, message):
    week = this_week().isoformat() if week == "this week" else week
    code, out, err = await _run(monkeypatch, head_db, "leagues", "close-week", "--week", week)
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
