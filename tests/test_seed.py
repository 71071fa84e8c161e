"""The seed (`langlearn seed`): consistent, reproducible, idempotent, resumable and guarded.

Every run here goes through the real CLI into a fresh database of the real PostgreSQL server. Its
history ends on a day pinned here (`--anchor`), so every run on any day writes the same rows; the
demo seed of tests/conftest.py follows the clock instead (scripts/clock_check.sh moves it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError

from langlearn import history, rules
from langlearn.cli import main
from langlearn.databases import database_name
from langlearn.seed.content import DATA_DIR
from langlearn.seed.run import BYTES_PER_LEARNER, MAX_USERS, code_version
from langlearn.seed.tables import TABLES, USER_TABLES
from langlearn.verify import check_invariants
from tests.conftest import LANGLEARN, REPO_ROOT, run_cli

ANCHOR = date(2026, 11, 18)  # a Wednesday before any day the tests run (an anchor in the future is refused)
SCALE = ("--users", "250", "--seed", "7", "--anchor", ANCHOR.isoformat(), "--no-progress")
DEMO = ("--anchor", ANCHOR.isoformat(), "--no-progress")


def seed_cli(*args: str, database: str):
    return run_cli("langlearn", "seed", *args, database=database)


async def digests(connection) -> dict[str, str]:
    """One md5 per table over every row in id order: equal digests mean byte-identical tables."""
    return {
        table: await connection.fetchval(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} t")
        for table in TABLES
    }


async def row_counts(connection) -> dict[str, int]:
    return {table: await connection.fetchval(f"SELECT count(*) FROM {table}") for table in (*TABLES, "seed_runs", "league_weeks")}


async def closed_weeks(connection) -> list[tuple[date, datetime]]:
    return [tuple(row) for row in await connection.fetch("SELECT week_start, created_at FROM league_weeks ORDER BY week_start")]


@pytest.fixture(scope="module")
async def scale_db(server, head_template):
    """A database holding a small scale seed (250 users, three batches), shared by the read-only tests."""
    url = await server.create(template=head_template)
    seeded = seed_cli(*SCALE, database=url)
    assert seeded.returncode == 0, seeded.stderr
    # --no-progress: what happened, then the total in one line (no per-table table)
    done, total = seeded.stdout.splitlines()
    assert done.startswith("Seeded ") and re.fullmatch(r"[\d,]+ rows in [\d.]+ s \([\d,]+ rows/s\)", total), seeded.stdout
    yield url
    await server.drop(url)


@pytest.mark.clock
async def test_demo_seed_holds_every_invariant(seeded_db, connect):
    assert await check_invariants(await connect(seeded_db)) == []


async def test_demo_seed_has_the_promised_content(seeded_db, connect):
    connection = await connect(seeded_db)
    languages = await connection.fetch("SELECT language FROM courses WHERE is_published")
    assert len(languages) >= 3 and len({row["language"] for row in languages}) >= 2
    assert await connection.fetchval("SELECT count(*) FROM units") >= 6
    assert await connection.fetchval(
        "SELECT count(*) FROM vocabulary_items WHERE translation ? 'vi' AND pronunciation LIKE '/%/' AND definition <> ''"
    ) >= 200
    exercises = await connection.fetch(
        "SELECT e->>'type' AS kind, e ? 'answer' AS answered FROM lessons, jsonb_array_elements(content->'exercises') e")
    assert {row["kind"] for row in exercises} == {"multiple_choice", "fill_blank", "matching", "translation", "listening"}
    assert all(row["answered"] for row in exercises)
    achievements = await connection.fetch("SELECT condition_type, rarity::text FROM achievements")
    assert len(achievements) >= 25
    assert {row["condition_type"] for row in achievements} >= {
        "lesson_complete", "reach_streak", "vocab_mastered", "xp_earned", "perfect_score", "course_complete"}
    assert {row["rarity"] for row in achievements} == {"common", "rare", "epic", "legendary"}
    kinds = {row["item_type"] for row in await connection.fetch("SELECT item_type FROM shop_items")}
    assert kinds >= {"streak_freeze", "double_xp", "hint_pack"} and len(kinds) > 3
    counts = await row_counts(connection)
    assert counts["users"] == 36
    assert all(counts[table] > 0 for table in USER_TABLES), counts


@pytest.mark.clock
async def test_demo_seed_writes_nothing_after_its_anchor(seeded_db, connect):
    connection = await connect(seeded_db)
    anchor = await connection.fetchval("SELECT anchor_at FROM seed_runs")
    future_by_nature = {"expires_at", "next_review_date"}
    columns = await connection.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND data_type = 'timestamp with time zone' AND table_name = ANY($1::text[])", list(TABLES))
    for column in columns:
        if column["column_name"] in future_by_nature:
            continue
        latest = await connection.fetchval(f'SELECT max("{column["column_name"]}") FROM "{column["table_name"]}"')
        assert latest is None or latest <= anchor, (column["table_name"], column["column_name"], latest)


async def test_demo_accounts_alone_sign_in_with_the_documented_password(seeded_db, connect):
    demo = json.loads((DATA_DIR / "demo_accounts.json").read_text())
    connection = await connect(seeded_db)
    hashes = {row["email"]: row["hashed_password"] for row in await connection.fetch("SELECT email, hashed_password FROM users")}
    assert all(value.startswith("$argon2id$") for value in hashes.values())
    assert all(email == email.lower() for email in hashes)
    hasher = PasswordHasher()
    for account in demo["accounts"]:
        assert hasher.verify(hashes.pop(account["email"]), demo["password"])
    with pytest.raises(VerifyMismatchError):
        hasher.verify(next(iter(hashes.values())), demo["password"])


async def test_small_scale_seed_holds_every_invariant_and_records_its_run(scale_db, connect):
    connection = await connect(scale_db)
    assert await check_invariants(connection) == []
    run = await connection.fetchrow("SELECT * FROM seed_runs")
    assert (run["preset"], run["seed"], run["status"]) == ("scale", 7, "completed")
    assert json.loads(run["parameters"])["users"] == 250
    assert run["steps_done"] == run["steps_total"] == 5  # catalogue, three batches of users, ranks
    assert run["code_version"] == code_version()
    assert run["anchor_at"] == datetime.combine(ANCHOR, datetime.min.time(), tzinfo=timezone.utc)
    assert run["started_at"] <= run["finished_at"]
    counts = await row_counts(connection)
    assert json.loads(run["counts"]) == {table: counts[table] for table in TABLES}
    assert counts["users"] == 250


async def test_the_seed_marks_the_weeks_its_simulation_closed(scale_db, connect):
    """Every week of the history but the last (still open when the history ends) is closed: ranked, and marked closed in
    `league_weeks` at the time the simulation closed it (00:05 UTC on the Monday after it)."""
    connection = await connect(scale_db)
    ranked = [row["week_start"] for row in await connection.fetch(
        "SELECT DISTINCT week_start FROM leaderboard_entries WHERE current_rank IS NOT NULL ORDER BY week_start")]
    closed = await closed_weeks(connection)
    assert [week for week, _ in closed] == ranked and len(ranked) >= 7
    assert ranked[-1] == rules.week_start(ANCHOR - timedelta(days=1)) - timedelta(days=7)
    assert all(closed_at == datetime.combine(week + timedelta(days=7), datetime.min.time(), tzinfo=timezone.utc) + timedelta(minutes=5) for week, closed_at in closed)


async def test_second_run_adds_no_row(scale_db, connect):
    connection = await connect(scale_db)
    before = (await row_counts(connection), await digests(connection))
    again = seed_cli(*SCALE, database=scale_db)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Nothing to do:")
    assert (await row_counts(connection), await digests(connection)) == before


async def test_same_seed_writes_identical_rows_in_another_database(scale_db, head_db, connect):
    seeded = seed_cli(*SCALE, database=head_db)
    assert seeded.returncode == 0, seeded.stderr
    assert await digests(await connect(head_db)) == await digests(await connect(scale_db))


async def test_run_killed_part_way_then_restarted_ends_identical_to_an_uninterrupted_run(scale_db, head_db, connect):
    connection = await connect(head_db)
    process = subprocess.Popen(
        [LANGLEARN, "seed", *SCALE], cwd=REPO_ROOT, env={**os.environ, "DATABASE_URL": head_db},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once the catalogue and one batch of users are committed
            if process.poll() is not None or (await connection.fetchval("SELECT max(steps_done) FROM seed_runs") or 0) >= 2:
                break
            time.sleep(0.02)
        process.kill()  # SIGKILL: no cleanup, no rollback handler, mid-COPY or between steps
    finally:
        process.wait()
    # its worker processes notice and exit, their batches in flight rolled back: no connection of the seed stays
    others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + 10
    while await connection.fetchval(others):
        assert time.monotonic() < deadline, "a worker of the killed seed kept its connection"
        await asyncio.sleep(0.05)
    interrupted = await connection.fetchrow("SELECT status, steps_done, steps_total FROM seed_runs")
    assert interrupted["status"] == "running" and interrupted["steps_done"] < interrupted["steps_total"]
    assert 0 < await connection.fetchval("SELECT count(*) FROM users") < 250

    resumed = seed_cli(*SCALE, database=head_db)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("Resuming the interrupted run")
    assert await digests(connection) == await digests(await connect(scale_db))
    assert await connection.fetchval("SELECT resumes FROM seed_runs") == 1


@pytest.mark.parametrize("marker", ["production", "Production", " PRODUCTION ", "prod", "staging", ""])
async def test_production_database_is_refused_without_writing(head_db, connect, marker):
    name = database_name(head_db)
    await (await connect(head_db)).execute(f"ALTER DATABASE \"{name}\" SET langlearn.environment = '{marker}'")
    refused = seed_cli(*DEMO, database=head_db)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "marked production" in refused.stderr and "--force" in refused.stderr
    assert set((await row_counts(await connect(head_db))).values()) == {0}


@pytest.mark.parametrize("marker", ["development", " Test "])
async def test_a_database_marked_development_or_test_is_seeded(head_db, connect, marker):
    name = database_name(head_db)
    await (await connect(head_db)).execute(f"ALTER DATABASE \"{name}\" SET langlearn.environment = '{marker}'")
    assert seed_cli(*DEMO, database=head_db).returncode == 0


async def test_an_unreachable_server_is_a_configuration_error():
    refused = seed_cli(*DEMO, database="postgres://app:pw@127.0.0.1:1/langlearn")
    assert refused.returncode == 2 and refused.stderr.startswith("error: cannot reach PostgreSQL at 127.0.0.1:1")
    assert refused.stderr.count("\n") == 1


async def test_forced_run_on_production_gives_demo_accounts_no_known_password(head_db, connect):
    name = database_name(head_db)
    await (await connect(head_db)).execute(f"ALTER DATABASE \"{name}\" SET langlearn.environment = 'production'")
    forced = seed_cli(*DEMO, "--force", database=head_db)
    assert forced.returncode == 0, forced.stderr
    demo = json.loads((DATA_DIR / "demo_accounts.json").read_text())
    connection = await connect(head_db)
    for account in demo["accounts"]:
        stored = await connection.fetchval("SELECT hashed_password FROM users WHERE email = $1", account["email"])
        with pytest.raises(VerifyMismatchError):
            PasswordHasher().verify(stored, demo["password"])


@pytest.mark.parametrize("argv, complaint", [
    (["--users", "0"], "--users: must be a whole number from 1"),
    (["--users", "ten"], "--users: must be a whole number"),
    (["--preset", "demo", "--users", "5"], "--users applies to the scale preset"),
    (["--seed", "-1"], "--seed: must be a whole number from 0"),
    (["--anchor", "yesterday"], "--anchor: must be a date"),
    (["--anchor", "2999-01-01"], "is in the future"),
    (["--anchor", "0001-01-01"], "0001-01-01 is too early; the history must end on 1970-01-01 or later"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
async def test_bad_arguments_exit_2_with_one_line_before_writing(argv, complaint, head_db, connect, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", head_db)
    assert await main(["seed", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and complaint in error
    assert set((await row_counts(await connect(head_db))).values()) == {0}


async def test_a_seed_the_servers_disk_cannot_hold_is_refused_before_writing(head_db, connect):
    connection = await connect(head_db)
    directory = await connection.fetchval("SELECT current_setting('data_directory')")
    if not Path(directory).is_dir():
        pytest.skip(f"the test server's data directory {directory} is on another machine: its disk is not measured")
    learners = MAX_USERS
    free = shutil.disk_usage(directory).free
    assert learners * BYTES_PER_LEARNER > free, "this disk could hold the largest seed: the refusal cannot be shown here"
    refused = seed_cli("--users", str(learners), "--no-progress", database=head_db)
    assert refused.returncode == 1
    line = refused.stderr.strip()
    assert line.startswith(f"error: {learners:,} learners need about ") and line.endswith("seed fewer (--users) or free some space"), line
    assert "\n" not in line
    assert await connection.fetchval("SELECT (SELECT count(*) FROM seed_runs) + (SELECT count(*) FROM users)") == 0


async def test_database_not_at_head_is_refused(empty_db):
    refused = seed_cli(*DEMO, database=empty_db)
    assert refused.returncode == 1
    assert "not at the head of the migration history" in refused.stderr and "langlearn upgrade" in refused.stderr


async def test_another_seed_into_a_seeded_database_is_refused_without_writing(scale_db, connect):
    connection = await connect(scale_db)
    before = await row_counts(connection)
    refused = seed_cli(*SCALE[:2], "--seed", "8", "--anchor", ANCHOR.isoformat(), database=scale_db)
    assert refused.returncode == 1
    assert "already seeded with preset scale, seed 7" in refused.stderr
    assert await row_counts(connection) == before


async def test_seed_runs_migration_downgrades_and_upgrades_cleanly(head_db, connect):
    query = ("SELECT to_regclass('seed_runs') IS NOT NULL, "
             "(SELECT count(*) FROM pg_type WHERE typname IN ('seed_preset', 'seed_run_status'))")
    assert tuple(await (await connect(head_db)).fetchrow(query)) == (True, 2)
    reverted = await history.downgrade(head_db, to=4)
    # seed_runs (5) is reverted last, after whatever later migrations the history has grown since
    assert reverted[-1].endswith("_seed_runs.py") and all(history.version_number(version) > 5 for version in reverted[:-1])
    assert tuple(await (await connect(head_db)).fetchrow(query)) == (False, 0)
    await history.upgrade(head_db)
    connection = await connect(head_db)
    assert tuple(await connection.fetchrow(query)) == (True, 2)
    assert (await history.read_state(connection)).at_head


@pytest.mark.parametrize(("signal_number", "exit_code", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
async def test_an_interrupted_seed_says_where_it_stopped_in_one_line_and_resumes_identical(
    scale_db, head_db, connect, signal_number, exit_code, name
):
    connection = await connect(head_db)
    process = subprocess.Popen(
        [LANGLEARN, "seed", *SCALE], cwd=REPO_ROOT, env={**os.environ, "DATABASE_URL": head_db},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # interrupt once the catalogue and one batch of users are committed
        if process.poll() is not None or (await connection.fetchval("SELECT max(steps_done) FROM seed_runs") or 0) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=60)
    steps = await connection.fetchrow("SELECT steps_done, steps_total FROM seed_runs")
    assert process.returncode == exit_code, stderr
    assert stderr == (
        f"error: interrupted by {name} during `langlearn seed`: the seed stopped after step {steps['steps_done']} of "
        f"{steps['steps_total']} (each step is all or nothing); run the same command again to resume\n"
    )
    assert steps["steps_done"] < steps["steps_total"]
    half_seeded = run_cli(LANGLEARN, "verify", "--skip-schema", database=head_db)
    assert half_seeded.returncode == 1 and "unfinished_seed_run" in half_seeded.stdout
    assert f"is running after step {steps['steps_done']} of {steps['steps_total']}" in half_seeded.stdout

    resumed = seed_cli(*SCALE, database=head_db)
    assert resumed.returncode == 0, resumed.stderr
    assert await digests(connection) == await digests(await connect(scale_db))


async def test_a_role_that_may_not_write_is_told_so_in_one_line_not_to_resume(head_db, connect):
    role = f"{database_name(head_db)}_reader"
    admin = await connect(head_db)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    await admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
    try:
        refused = seed_cli(*DEMO, database=head_db.replace("postgres@", f"{role}@"))
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and "resume" not in refused.stderr
        assert f"the user {role!r} may not write to this database" in refused.stderr
        assert set((await row_counts(admin)).values()) == {0}
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
