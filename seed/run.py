"""One seed of one database: the guards, the run record, the resumable steps, COPY and the report.

A run is a fixed list of steps: the catalogue, one step per batch of `BATCH_USERS` users, then the
league ranks with the closed weeks' markers (`league_weeks`). Each step is one transaction that also advances `seed_runs.steps_done` and adds its
row counts, so a run killed at any moment (even SIGKILL) has either committed a step or left no
trace of it; the next run with the same arguments does the batches that are not in yet and, every
batch being a pure function of the seed, ends with exactly the rows an uninterrupted run writes. A
run whose record says it is complete does nothing.

Rows go in through binary `COPY` (asyncpg `copy_records_to_table`). The catalogue is copied here; each
batch of learners is generated, copied and committed by a worker (`workers.py`: processes, `--workers`,
one per core by default) on its own connection, which speaks the simulation's value types
(`loader.py`). Batch steps commute, so the workers never wait for each other; every batch being a pure
function of the seed, the rows do not depend on their number; at most `workers + 1` batches are ever
in memory, whatever the number of users.

A fresh database seeded with at least `bulk.BULK_MIN_USERS` learners is loaded in bulk (`bulk.py`): the
user tables' keys, indexes and foreign keys are taken off in the content step's transaction, the batches
copied into the bare tables, and everything rebuilt before the run is marked completed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import os
import shutil
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from datetime import time as clock_time
from importlib import metadata
from itertools import islice
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from langlearn import partitions, rules
from langlearn.errors import ConfigError, Interrupted, LanglearnError, SeedError
from langlearn.history import read_state
from langlearn.seed import bulk, workers
from langlearn.seed.content import Content, Row, data_files, dumps, load_content, package_name, seeded_uuid
from langlearn.seed.passwords import Passwords
from langlearn.seed.simulation import BATCH_USERS, RunContext
from langlearn.seed.simulation.clock import WEEK_CLOSED_AFTER_MS
from langlearn.seed.simulation.profiles import HISTORY_DAYS
from langlearn.seed.tables import CONTENT_TABLES, TABLES, USER_TABLES
from langlearn.settings import ENVIRONMENT_SETTING, marked_production, open_connection

DEMO_USERS = 36
SCALE_USERS = 1000
MAX_USERS = 10_000_000
# the server's disk per learner (tables, indexes, TOAST), measured on a fresh 100,000-learner seed: 16.9 GB
BYTES_PER_LEARNER = 170_000
DISK_HEADROOM = 1.25  # WAL and the index builds' sort files come on top while it runs
METHODS = ("auto", "bulk", "per-row")  # how rows go in: auto is bulk for a fresh database of BULK_MIN_USERS or more
LOCK_WAIT_SECONDS = 10
LOCK_KEY = int.from_bytes(hashlib.blake2b(b"langlearn:seed", digest_size=8).digest(), "big", signed=True)
# the weeks the simulation closed, each on a Monday of the history, so all but the week of its last day (the day before
# the anchor, even when the anchor is a Monday: that week closes after the history); an open week is ranked when it
# closes (langlearn.operations.leagues)
RANK_SQL = """
    UPDATE leaderboard_entries entry SET current_rank = ranked.position
    FROM (SELECT id, row_number() OVER (PARTITION BY week_start, league ORDER BY xp_earned DESC, user_id) AS position
          FROM leaderboard_entries WHERE week_start < $1) ranked
    WHERE entry.id = ranked.id AND entry.current_rank IS DISTINCT FROM ranked.position
"""
# and their markers (langlearn.models.LeagueWeek), closed when the simulation closed them ($2 after their Sunday's end);
# each id is the week's, drawn from the seed ($3), so that the same seed writes the same rows
CLOSED_WEEKS_SQL = "SELECT DISTINCT week_start FROM leaderboard_entries WHERE week_start < $1 ORDER BY week_start"
CLOSE_SQL = """
    INSERT INTO league_weeks (id, week_start, created_at)
    SELECT marker.id, marker.week_start, (marker.week_start + 7)::timestamp AT TIME ZONE 'UTC' + $2::interval
    FROM unnest($1::uuid[], $3::date[]) AS marker (id, week_start)
    ON CONFLICT (week_start) DO NOTHING
"""
# live ledger entries come after the seeded ones, whose ledger_seq the seed set itself (simulation/wallet.py)
LEDGER_SEQUENCE_SQL = """
    SELECT setval(pg_get_serial_sequence('wallet_transactions', 'ledger_seq'), max(ledger_seq))
    FROM wallet_transactions HAVING count(*) > 0
"""
# a step's record, in the step's transaction (a step is all or nothing)
ADVANCE_SQL = "UPDATE seed_runs SET steps_done = $2, counts = $3, updated_at = now() WHERE id = $1"


@dataclass(frozen=True)
class SeedOptions:
    preset: str = "demo"
    users: int = DEMO_USERS
    seed: int = 42
    anchor: date | None = None
    force: bool = False
    progress: bool = True
    method: str = "auto"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def parameters(self) -> dict[str, object]:
        """What, beside preset and seed, decides the rows: a run is resumed only with the same."""
        return {"users": self.users, "batch_users": BATCH_USERS, "forced": self.force}


@dataclass(frozen=True)
class RecordedRun:
    """A row of `seed_runs`: an earlier run of the seed into this database."""

    id: UUID
    preset: str
    seed: int
    code_version: str
    parameters: dict[str, object]
    anchor_at: datetime
    status: str
    steps_done: int
    counts: dict[str, int]
    finished_at: datetime | None
    deferred: list[bulk.DeferredObject]  # what a bulk load took off and has not rebuilt yet

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> RecordedRun:
        return cls(
            record["id"], record["preset"], record["seed"], record["code_version"], json.loads(record["parameters"]),
            record["anchor_at"], record["status"], record["steps_done"], json.loads(record["counts"]), record["finished_at"],
            bulk.recorded(record["deferred"]),
        )


@dataclass
class Report:
    """What a run did, for the summary: rows and COPY seconds per table, and the wall time."""

    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TABLES, 0.0))
    wall: float = 0.0
    rebuild_seconds: float = 0.0  # a bulk load's keys, indexes and foreign keys, after the copy
    message: str = ""

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def code_version() -> str:
    """The package version and a digest of everything that decides the rows (code and data)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    sources = [(path.relative_to(package).as_posix(), path) for path in sorted(package.glob("*.py"))]
    sources += [(package_name(path), path) for path in data_files()]
    for name, path in sources:
        digest.update(name.encode())
        digest.update(path.read_bytes())
    try:
        version = metadata.version("langlearn-data")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"{version}+{digest.hexdigest()[:12]}"


def default_anchor() -> datetime:
    """Midnight UTC today: the history ends with yesterday, so nothing lies in the future."""
    return datetime.combine(datetime.now(timezone.utc).date(), clock_time(), tzinfo=timezone.utc)


def _describe(run: RecordedRun) -> str:
    return (f"preset {run.preset}, seed {run.seed}, {run.parameters.get('users')} users"
            f"{' (forced)' if run.parameters.get('forced') else ''}, anchor {run.anchor_at.date()}")


class Seeder:
    """Seeds the database behind one asyncpg connection (a bulk load's rebuild opens more to `url`)."""

    def __init__(self, connection: asyncpg.Connection, url: str, options: SeedOptions, console: Console) -> None:
        self.connection = connection
        self.url = url
        self.options = options
        self.console = console
        self.report = Report()
        self.version = code_version()

    async def guard(self) -> RecordedRun | None:
        """Refuse a production database, a schema not at head, a concurrent seed, or foreign data;
        return the earlier run of this seed (to resume or confirm), if any."""
        connection, options = self.connection, self.options
        environment = await connection.fetchval("SELECT current_setting($1, true)", ENVIRONMENT_SETTING)
        if marked_production(environment) and not options.force:
            raise SeedError(
                f"this database is marked production ({ENVIRONMENT_SETTING} = {environment!r}; only development and test "
                "are not); the seed refuses it (pass --force only if you really mean to add seeded accounts to it)"
            )
        state = await read_state(connection)
        if state.pending:
            raise SeedError(f"the database is not at the head of the migration history ({len(state.pending)} "
                            "migration(s) pending); run `langlearn upgrade` first")
        if not state.at_head:
            problem = (f"versions unknown to this code: {', '.join(state.unknown)}" if state.unknown
                       else f"versions recorded twice: {', '.join(state.duplicates)}")
            raise SeedError(f"the database's migration history does not match this code ({problem}); "
                            "run `langlearn verify` for details")
        try:
            # a killed run's session may take a moment to end: wait for its lock rather than fail at once
            await connection.execute(f"SET lock_timeout = '{LOCK_WAIT_SECONDS}s'")
            await connection.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
            # and for the workers of a killed run to finish or roll back their batches, before reading what is done
            await connection.execute("SELECT pg_advisory_lock($1), pg_advisory_unlock($1)", workers.WORKERS_LOCK_KEY)
            await connection.execute("RESET lock_timeout")
        except asyncpg.LockNotAvailableError:
            raise SeedError(
                f"another seed has been running against this database for {LOCK_WAIT_SECONDS} s; wait for it to finish"
            ) from None
        runs = [RecordedRun.from_record(run) for run in await connection.fetch("SELECT * FROM seed_runs ORDER BY started_at")]
        if not runs:
            occupied = await connection.fetchval("SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM courses)")
            if occupied:
                raise SeedError("the database already holds users or courses that no seed run wrote; seed an empty database at head")
            return None
        run = runs[0]
        same = (run.preset == options.preset and run.seed == options.seed
                and run.parameters == options.parameters and len(runs) == 1)
        if not same:
            raise SeedError(
                f"this database was already seeded with {_describe(run)}; the seed never mixes two seeds in one "
                "database: use a fresh database for a different preset, seed or size"
            )
        if options.anchor and options.anchor != run.anchor_at.date():
            raise SeedError(
                f"this seed's history ends at {run.anchor_at.date()} in this database (recorded by its first run); "
                f"drop --anchor or use a fresh database for {options.anchor}"
            )
        if run.status != "completed" and run.code_version != self.version:
            raise SeedError(
                f"the interrupted run was started by code version {run.code_version} and this is {self.version}: "
                "resuming would mix rows of two versions; seed a fresh database"
            )
        return run

    async def run(self) -> Report:
        started = time.perf_counter()
        options = self.options
        previous = await self.guard()
        if previous is not None and previous.status == "completed":
            self.report.message = (
                f"Nothing to do: this database was seeded with {_describe(previous)} "
                f"(finished {previous.finished_at:%Y-%m-%d %H:%M} UTC, {sum(previous.counts.values())} rows); "
                "a second run adds nothing."
            )
            return self.report
        anchor = previous.anchor_at if previous else (
            datetime.combine(options.anchor, clock_time(), tzinfo=timezone.utc) if options.anchor else default_anchor())
        batches_done = max(0, previous.steps_done - 1) if previous else 0  # every step after the first is a batch
        await self._check_disk(max(0, options.users - batches_done * BATCH_USERS))
        content = load_content(options.seed, anchor)
        demo_accounts = len(content.demo["accounts"]) if options.preset == "demo" else 0
        passwords = Passwords(
            options.seed, demo_password=content.demo["password"] if options.preset == "demo" else None,
            demo_accounts=demo_accounts, unpredictable=options.force,
        )
        context = RunContext(options.seed, options.users, anchor, content, passwords, demo_accounts, options.force)
        steps_total = context.batches + 2
        counts: dict[str, int]
        if previous is None:
            run_id, steps_done, counts = uuid4(), 0, {}
        else:
            run_id, steps_done, counts = previous.id, previous.steps_done, dict(previous.counts)
            await self.connection.execute(
                "UPDATE seed_runs SET resumes = resumes + 1, status = 'running', error = NULL, updated_at = now() "
                "WHERE id = $1", run_id)
            self.console.print(
                f"Resuming the interrupted run ({_describe(previous)}) after step {steps_done} of {steps_total}.",
                soft_wrap=True)
        deferred = previous.deferred if previous else []
        try:
            if steps_done == 0:  # every month of the history gets its partition before a row is written (the
                # DEFAULT partitions stay, as upgrade left them: dropping them is the maintenance job's)
                await partitions.ensure(self.connection, now=max(anchor, datetime.now(timezone.utc)),
                                        since=anchor - timedelta(days=HISTORY_DAYS + 1), drop_default=False)
                deferred = await self._content_step(run_id, anchor, steps_total, content, counts, bulk_load=self._bulk(previous))
            await self._user_steps(run_id, context, previous is not None, counts)
            last_day = anchor.date() - timedelta(days=1)
            async with self.connection.transaction():  # a week is ranked exactly when it is marked closed
                await self.connection.execute(RANK_SQL, rules.week_start(last_day))  # ranks are set before any index is rebuilt
                weeks = [row[0] for row in await self.connection.fetch(CLOSED_WEEKS_SQL, rules.week_start(last_day))]
                ids = [seeded_uuid(options.seed, f"league_week:{week}") for week in weeks]
                await self.connection.execute(CLOSE_SQL, ids, timedelta(milliseconds=WEEK_CLOSED_AFTER_MS), weeks)
            await self.connection.execute(LEDGER_SEQUENCE_SQL)
            if deferred:
                await self._rebuild(run_id, deferred)
            for table in await partitions.read_tables(self.connection):  # autovacuum analyses partitions, never their parent
                await self.connection.execute(f"ANALYZE {partitions.quote(table.name)}")
            await self.connection.execute(
                "UPDATE seed_runs SET steps_done = steps_total, status = 'completed', finished_at = now(), "
                "updated_at = now() WHERE id = $1", run_id)
        except (asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError) as error:
            user = await self.connection.fetchval("SELECT current_user")
            raise ConfigError(
                f"the user {user!r} may not write to this database ({error}); seed with a role that may insert into its tables"
            ) from None
        except (asyncpg.PostgresError, OSError, workers.WorkerError) as error:
            await self._record_failure(run_id, error)
            raise SeedError(f"the seed failed and can be resumed by running it again ({type(error).__name__}: {error})") from None
        self.report.wall = time.perf_counter() - started
        written = f"{self.report.total_rows:,} rows in {self.report.wall:.1f} s"
        if previous is not None:
            written += f" ({sum(counts.values()):,} in all, with the interrupted run's)"
        self.report.message = (
            f"Seeded preset {options.preset} (seed {options.seed}, {options.users:,} users, history ending "
            f"{anchor.date()}): {written}."
        )
        return self.report

    async def _record_failure(self, run_id: UUID, error: Exception) -> None:
        if self.connection.is_closed():
            return
        try:
            await self.connection.execute(
                "UPDATE seed_runs SET status = 'failed', error = $2, updated_at = now() WHERE id = $1",
                run_id, f"{type(error).__name__}: {error}")
        except (asyncpg.PostgresError, OSError):
            pass  # the original error is the one to report

    async def _copy(self, table: str, rows: list[Row]) -> None:
        """COPY the catalogue's rows (the learners' are copied by the workers)."""
        if not rows:
            return
        began = time.perf_counter()
        await self.connection.copy_records_to_table(table, records=rows, columns=CONTENT_TABLES[table])
        self.report.seconds[table] += time.perf_counter() - began
        self.report.rows[table] += len(rows)

    async def _check_disk(self, learners: int) -> None:
        """Say how much disk the rows will take, and refuse when the server's data directory is on this machine and
        obviously cannot hold them (a server elsewhere is not ours to measure)."""
        needed = learners * BYTES_PER_LEARNER * DISK_HEADROOM
        if learners >= bulk.BULK_MIN_USERS:
            self.console.print(f"{learners:,} learners will take about {needed / 1e9:,.1f} GB on the server.", soft_wrap=True)
        try:
            directory = await self.connection.fetchval("SELECT current_setting('data_directory')")
        except asyncpg.InsufficientPrivilegeError:  # only superusers and pg_read_all_settings may read it
            return
        if not directory or not Path(directory).is_dir():
            return
        free = shutil.disk_usage(directory).free
        if needed > free:
            raise SeedError(
                f"{learners:,} learners need about {needed / 1e9:,.1f} GB and the server's disk ({directory}) has "
                f"{free / 1e9:,.1f} GB free; seed fewer (--users) or free some space"
            )

    def _bulk(self, previous: RecordedRun | None) -> bool:
        """Whether to load in bulk: asked for, or (auto) a large seed starting on a fresh database."""
        if self.options.method == "auto":
            return previous is None and self.options.users >= bulk.BULK_MIN_USERS
        return self.options.method == "bulk"

    async def _rebuild(self, run_id: UUID, deferred: list[bulk.DeferredObject]) -> None:
        began = time.perf_counter()
        self.console.print(f"Rebuilding {len(deferred)} keys, indexes and foreign keys of the bulk load…", soft_wrap=True)
        await bulk.rebuild(lambda: open_connection(self.url), self.connection, run_id, deferred)
        self.report.rebuild_seconds = time.perf_counter() - began

    async def _content_step(
        self, run_id: UUID, anchor: datetime, steps_total: int, content: Content, counts: dict[str, int], *, bulk_load: bool,
    ) -> list[bulk.DeferredObject]:
        """The catalogue, the run's record and (bulk) the user tables made bare, in one transaction."""
        options = self.options
        deferred: list[bulk.DeferredObject] = []
        async with self.connection.transaction():
            await self.connection.execute(
                "INSERT INTO seed_runs (id, preset, seed, code_version, parameters, anchor_at, steps_total, started_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, now())",
                run_id, options.preset, options.seed, self.version, dumps(options.parameters), anchor, steps_total)
            for table in CONTENT_TABLES:
                await self._copy(table, content.rows[table])
                counts[table] = counts.get(table, 0) + len(content.rows[table])
            if bulk_load:
                deferred = await bulk.take_off(self.connection, run_id, list(USER_TABLES))
            await self.connection.execute(ADVANCE_SQL, run_id, 1, dumps(counts))
        return deferred

    async def _user_steps(self, run_id: UUID, context: RunContext, resuming: bool, counts: dict[str, int]) -> None:
        """A step per batch of learners, each generated, copied and committed by a worker (`workers.py`) in any order;
        a resumed run does the batches whose learners are not in yet."""
        done = await workers.done_batches(self.connection, context) if resuming else set()
        batches = [index for index in range(context.batches) if index not in done]
        if not batches:
            return
        loop = asyncio.get_running_loop()
        progress = Progress(
            TextColumn("{task.description:>22}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=Console(stderr=True), disable=not self.options.progress, transient=True,
        )
        to_do = context.users - len(done) * BATCH_USERS  # done batches are whole: only the last one may be short
        learners = progress.add_task("learners", total=to_do)  # its rate and the time left are the run's
        table_tasks = {table: progress.add_task(table, total=None) for table in USER_TABLES}
        done_users = 0
        ahead = self.options.workers + 1  # batches handed out at once: every worker busy, one waiting
        setup = workers.LoadSetup(context, self.url, run_id.int, os.getpid())
        queue = iter(batches)
        pool = _workers(setup, self.options.workers, len(batches))
        try:
            with progress, pool:
                running = {loop.run_in_executor(pool, workers.load_batch, index) for index in islice(queue, ahead)}
                try:
                    while running:
                        finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                        running |= {loop.run_in_executor(pool, workers.load_batch, index) for index in islice(queue, len(finished))}
                        done_users += sum(self._count(future.result(), counts) for future in finished)
                        progress.update(learners, completed=done_users)
                        for table in USER_TABLES:
                            written = self.report.rows[table]
                            # totals are estimated from the batches so far: the shape is the same at any size
                            progress.update(table_tasks[table], completed=written, total=round(written * to_do / done_users))
                except BaseException:
                    # no new batch starts; those under way finish (each is whole) before the run says where it stopped
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
        finally:
            if isinstance(pool, ThreadPoolExecutor):  # its connection lives in the worker thread's event loop, now idle
                closing = threading.Thread(target=workers.finish)
                closing.start()
                closing.join()


    def _count(self, loaded: workers.BatchLoaded, counts: dict[str, int]) -> int:
        """Add a committed batch to the run's counts and the report; its learners."""
        for table, rows in loaded.rows.items():
            counts[table] = counts.get(table, 0) + rows
            self.report.rows[table] += rows
            self.report.seconds[table] += loaded.seconds[table]
        return loaded.learners


class RateColumn(ProgressColumn):
    """Rows (or learners) per second, over rich's recent window."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f}/s" if task.speed else "")


def _workers(setup: workers.LoadSetup, count: int, batches: int) -> Executor:
    """Worker processes (Python-bound work needs processes, not threads), given the setup once each; a single
    thread when there is one worker or one batch (a process costs more to start than a small seed takes)."""
    if count <= 1 or batches <= 1:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="seed-worker", initializer=workers.start, initargs=(setup,))
    # spawn, not fork: the parent runs an event loop and threads, which a forked child would inherit half-made
    return ProcessPoolExecutor(max_workers=min(count, batches), mp_context=multiprocessing.get_context("spawn"),
                               initializer=workers.start, initargs=(setup,))


def render_summary(report: Report, console: Console, *, per_table: bool = True) -> None:
    """Rows per table, COPY time and rate, and the run's total wall time and rate; or (`per_table` False,
    as `--no-progress` asks) the total in one line."""
    console.print(report.message, soft_wrap=True)
    if not report.total_rows:
        return
    rate = report.total_rows / report.wall if report.wall else 0
    if not per_table:
        console.print(f"{report.total_rows:,} rows in {report.wall:.2f} s ({rate:,.0f} rows/s)", soft_wrap=True)
        return
    table = Table(title="rows written", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("COPY s", justify="right")
    table.add_column("rows/s", justify="right")
    for name, rows in report.rows.items():
        if rows:
            seconds = report.seconds[name]
            table.add_row(name, f"{rows:,}", f"{seconds:.2f}", f"{rows / seconds:,.0f}" if seconds else "-")
    if report.rebuild_seconds:
        table.add_row("bulk load: keys, indexes, foreign keys rebuilt", "", f"{report.rebuild_seconds:.2f}", "")
    table.add_row("total (wall time)", f"{report.total_rows:,}", f"{report.wall:.2f}", f"{rate:,.0f}", style="bold")
    console.print(table)


async def seed(url: str, options: SeedOptions, console: Console) -> Report:
    """Seed the database at `url` (already validated) and return what was written."""
    connection = await open_connection(url)  # a bad password, database or server is a one-line ConfigError (exit 2)
    try:
        return await Seeder(connection, url, options, console).run()
    except asyncio.CancelledError:  # SIGINT or SIGTERM: the step in flight rolls back with its transaction
        raise Interrupted(await _where_it_stopped(url)) from None
    finally:
        await connection.close()


async def _where_it_stopped(url: str) -> str:
    """Where an interrupted run stands, read afresh: a step whose COMMIT was in flight may have landed."""
    try:
        reader = await open_connection(url)
        try:
            run = await reader.fetchrow("SELECT steps_done, steps_total FROM seed_runs ORDER BY started_at DESC LIMIT 1")
        finally:
            await reader.close()
    except (LanglearnError, asyncpg.PostgresError, OSError):
        run = None
    where = f"after step {run['steps_done']} of {run['steps_total']} " if run else ""
    return f"the seed stopped {where}(each step is all or nothing); run the same command again to resume"
