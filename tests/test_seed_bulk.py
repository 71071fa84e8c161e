"""The seed's bulk load (langlearn.seed.bulk): the same rows as the per-row path, the same schema after, killed anywhere and resumed.

Each test seeds the 250-learner scale seed of tests/test_seed.py with `--method bulk` (a real run would
pick it by itself from 1000 learners up) and compares it with the per-row seed of the same arguments
(`scale_db`): table digests, the catalog snapshot of a database at head, and a clean verification.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import pytest

from langlearn.verify import verify
from tests.catalog import describe_difference, snapshot
from tests.conftest import LANGLEARN, REPO_ROOT
from tests.test_seed import SCALE, closed_weeks, digests, scale_db, seed_cli  # noqa: F401  (scale_db: the per-row seed, a module fixture)

pytestmark = pytest.mark.slow


async def assert_like_the_per_row_seed(url: str, scale_db: str, connect) -> None:  # noqa: F811
    connection = await connect(url)
    assert await digests(connection) == await digests(await connect(scale_db))
    assert await closed_weeks(connection) == await closed_weeks(await connect(scale_db))
    assert await connection.fetchval("SELECT deferred FROM seed_runs") is None
    difference = describe_difference(await snapshot(await connect(scale_db)), await snapshot(connection))
    assert not difference, difference
    result = await verify(url)
    assert result.ok, [finding.message for finding in result.findings]


def start_seed(url: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([LANGLEARN, "seed", *SCALE, "--method", "bulk", *extra], cwd=REPO_ROOT,
                            env={**os.environ, "DATABASE_URL": url}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_for(connection, query: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not await connection.fetchval(query):
        assert time.monotonic() < deadline, f"timed out waiting for: {query}"
        await asyncio.sleep(0.02)


async def tables_and_parents(connection) -> dict[str, dict[tuple[str, str], str]]:
    """The catalog snapshot without the partitions, which the seed changes on purpose (a partition per month of its
    history, `langlearn partitions ensure`); their keys and indexes are the parents', which the snapshot holds."""
    partitions = {row["relname"] for row in await connection.fetch("SELECT relname FROM pg_class WHERE relispartition")}
    return {kind: {key: value for key, value in objects.items() if key[0] not in partitions}
            for kind, objects in (await snapshot(connection)).items()}


async def test_bulk_load_writes_the_per_row_rows_and_leaves_the_schema_as_it_was(scale_db, head_db, connect):  # noqa: F811
    before = await tables_and_parents(await connect(head_db))
    seeded = seed_cli(*SCALE, "--method", "bulk", "--workers", "1", database=head_db)
    assert seeded.returncode == 0, seeded.stderr
    assert "Rebuilding " in seeded.stdout and " keys, indexes and foreign keys of the bulk load" in seeded.stdout
    difference = describe_difference(before, await tables_and_parents(await connect(head_db)))
    assert not difference, difference
    await assert_like_the_per_row_seed(head_db, scale_db, connect)


async def test_the_number_of_workers_does_not_change_a_row(scale_db, head_db, connect):  # noqa: F811
    seeded = seed_cli(*SCALE, "--workers", "3", database=head_db)  # the per-row path; scale_db had one per core
    assert seeded.returncode == 0, seeded.stderr
    assert await digests(await connect(head_db)) == await digests(await connect(scale_db))


async def test_killed_during_the_load_it_resumes_to_the_same_database(scale_db, head_db, connect):  # noqa: F811
    connection = await connect(head_db)
    process = start_seed(head_db)
    try:  # the tables are bare and one batch is in: kill mid-load
        await wait_for(connection, "SELECT deferred IS NOT NULL AND steps_done >= 2 FROM seed_runs")
        process.kill()
    finally:
        process.wait()
    stopped = await connection.fetchrow("SELECT status::text, steps_done, steps_total, jsonb_array_length(deferred) AS deferred FROM seed_runs")
    assert stopped["status"] == "running" and stopped["steps_done"] < stopped["steps_total"] and stopped["deferred"] > 0
    interrupted = await verify(head_db)
    assert interrupted.errors  # the missing keys are reported, and the run says why
    warning = next(f for f in interrupted.findings if f.kind == "unfinished_seed_run")
    assert f"took {stopped['deferred']} keys, indexes and foreign keys off" in warning.message

    resumed = seed_cli(*SCALE, "--method", "bulk", database=head_db)
    assert resumed.returncode == 0, resumed.stderr
    await assert_like_the_per_row_seed(head_db, scale_db, connect)


async def test_killed_during_the_rebuild_it_resumes_to_the_same_database(scale_db, head_db, connect):  # noqa: F811
    connection = await connect(head_db)
    blocker = await connect(head_db)
    process = start_seed(head_db)
    try:
        # once the tables are bare, hold a lock the load does not mind but the rebuild of user_following's key waits for
        await wait_for(connection, "SELECT deferred IS NOT NULL FROM seed_runs")
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("LOCK TABLE user_following IN ACCESS SHARE MODE")
        await wait_for(connection, """
            SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                           WHERE c.relname = 'user_following' AND NOT l.granted)""")
        rebuilt = await connection.fetchval("SELECT count(*) FROM pg_constraint WHERE contype IN ('p', 'f') AND conrelid = 'question_attempts'::regclass")
        assert rebuilt >= 1  # the biggest table went first: the rebuild is under way
        process.kill()
    finally:
        process.wait()
    await holding.rollback()
    assert await connection.fetchval("SELECT deferred IS NOT NULL AND status = 'running' FROM seed_runs")

    resumed = seed_cli(*SCALE, "--method", "bulk", database=head_db)
    assert resumed.returncode == 0, resumed.stderr
    await assert_like_the_per_row_seed(head_db, scale_db, connect)
