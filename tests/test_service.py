"""The example service as a real uvicorn process, over HTTP, against a database filled by `langlearn seed`.

Every answer is compared with what plain SQL reads from the same database, so the assertions hold
for whatever the seed produced.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone

import httpx
import pytest

from langlearn import history
from tests.conftest import REPO_ROOT, run_cli
from tests.test_startup import unused_port

HEAD = history.version_files()


def start_service(database_url: str, port: int, mode: str = "check") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", "examples", "service.app:app", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "MIGRATE_ON_START": mode},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_up(process: subprocess.Popen, base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode}: {process.stderr.read()}")
        try:
            httpx.get(f"{base}/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the service did not start listening in time")


@pytest.fixture(scope="module")
async def seeded(server, head_template):
    """A database at head filled by the real seed (demo preset), shared by this module's read-only tests."""
    url = await server.create(template=head_template)
    seeding = run_cli("langlearn", "seed", "--no-progress", database=url)
    assert seeding.returncode == 0, seeding.stderr
    yield url
    await server.drop(url)


@pytest.fixture(scope="module")
async def service(seeded):
    """The service under uvicorn on a free port; stopped (and its clean shutdown checked) afterwards."""
    port = unused_port()
    process = start_service(seeded, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base)
        with httpx.Client(base_url=base, timeout=10) as client:
            yield client
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "Application shutdown complete." in stderr, stderr  # the lifespan closed the models


async def test_health_reports_the_schema_version_and_nothing_pending(service):
    response = service.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok", "database": "reachable", "version": HEAD[-1], "head": HEAD[-1], "pending": 0, "unknown": [], "error": None,
    }


async def test_courses_lists_the_published_catalogue(service, seeded, connect):
    rows = await (await connect(seeded)).fetch(
        "SELECT id::text, title FROM courses WHERE is_published ORDER BY language, level, title"
    )
    response = service.get("/courses")
    assert response.status_code == 200
    assert [(course["id"], course["title"]) for course in response.json()] == [(row["id"], row["title"]) for row in rows]
    assert rows  # the seed published something


async def test_a_course_comes_with_its_units_and_lessons_in_order(service, seeded, connect):
    db = await connect(seeded)
    course_id = await db.fetchval(
        "SELECT c.id::text FROM courses c JOIN units u ON u.course_id = c.id WHERE c.is_published GROUP BY c.id ORDER BY count(*) DESC, c.id LIMIT 1"
    )
    units = await db.fetch("SELECT id::text, title FROM units WHERE course_id = $1 ORDER BY order_index", course_id)
    lessons = await db.fetch("SELECT unit_id::text, title FROM lessons WHERE course_id = $1 ORDER BY order_index", course_id)

    response = service.get(f"/courses/{course_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == course_id
    assert [(unit["id"], unit["title"]) for unit in body["units"]] == [(row["id"], row["title"]) for row in units]
    for unit in body["units"]:
        assert [lesson["title"] for lesson in unit["lessons"]] == [row["title"] for row in lessons if row["unit_id"] == unit["id"]]
    assert [lesson["title"] for lesson in body["lessons_without_unit"]] == [row["title"] for row in lessons if row["unit_id"] is None]


async def test_an_unknown_course_is_404_and_a_malformed_id_422(service):
    assert service.get("/courses/00000000-0000-0000-0000-000000000000").status_code == 404
    assert service.get("/courses/not-a-uuid").status_code == 422


async def test_due_reviews_are_the_users_items_due_by_now_oldest_first(service, seeded, connect):
    db = await connect(seeded)
    user_id = await db.fetchval(
        "SELECT user_id::text FROM user_vocab_knowledge WHERE next_review_date <= now() GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1"
    )
    due = await db.fetch(
        "SELECT k.vocab_id::text, v.word FROM user_vocab_knowledge k JOIN vocabulary_items v ON v.id = k.vocab_id "
        "WHERE k.user_id = $1 AND k.next_review_date <= now() ORDER BY k.next_review_date",
        user_id,
    )

    response = service.get(f"/users/{user_id}/reviews/due", params={"limit": 500})

    assert response.status_code == 200
    body = response.json()
    assert body["due"] == len(due) > 0
    assert [(review["vocab_id"], review["word"]) for review in body["reviews"]] == [(row["vocab_id"], row["word"]) for row in due[:500]]
    assert all(datetime.fromisoformat(review["next_review_date"]) <= datetime.now(timezone.utc) for review in body["reviews"])


async def test_due_reviews_respect_the_limit_and_an_unknown_user_is_404(service, seeded, connect):
    user_id = await (await connect(seeded)).fetchval("SELECT user_id::text FROM user_vocab_knowledge WHERE next_review_date <= now() LIMIT 1")
    limited = service.get(f"/users/{user_id}/reviews/due", params={"limit": 1}).json()
    assert len(limited["reviews"]) == 1 and limited["due"] >= 1
    assert service.get("/users/00000000-0000-0000-0000-000000000000/reviews/due").status_code == 404


async def test_a_league_table_lists_the_week_by_rank(service, seeded, connect):
    db = await connect(seeded)
    week, league = await db.fetchrow(
        "SELECT week_start, league::text FROM leaderboard_entries GROUP BY week_start, league ORDER BY week_start DESC, count(*) DESC LIMIT 1"
    )
    rows = await db.fetch(
        "SELECT e.current_rank, u.username, e.xp_earned FROM leaderboard_entries e JOIN users u ON u.id = e.user_id "
        "WHERE e.week_start = $1 AND e.league = $2::league_type ORDER BY e.current_rank, e.xp_earned DESC",
        week, league,
    )

    response = service.get(f"/leagues/{league}", params={"week": week.isoformat()})

    assert response.status_code == 200
    body = response.json()
    assert (body["week_start"], body["week_end"]) == (week.isoformat(), (week + timedelta(days=6)).isoformat())
    standings = [(s["rank"], s["username"], s["xp_earned"]) for s in body["standings"]]
    assert standings == [(row["current_rank"], row["username"], row["xp_earned"]) for row in rows]
    assert [rank for rank, _, _ in standings] == list(range(1, len(standings) + 1))
    assert [xp for _, _, xp in standings] == sorted((xp for _, _, xp in standings), reverse=True)


async def test_a_league_week_must_be_a_monday_and_a_league_must_exist(service):
    tuesday = date(2026, 11, 24)
    response = service.get("/leagues/bronze", params={"week": tuesday.isoformat()})
    assert response.status_code == 422
    assert response.json()["detail"] == "week 2026-11-24 is a Tuesday; weeks start on Monday (2026-11-23)"
    assert service.get("/leagues/wood").status_code == 422


async def test_health_answers_503_when_the_database_goes_away(server, head_db):
    port = unused_port()
    process = start_service(head_db, port)
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}")
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        await server.drop(head_db)  # terminates the service's connections too
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"], body["version"]) == ("unavailable", "unreachable", None)
    assert body["error"]


async def test_the_service_refuses_to_start_on_a_database_behind_the_code(empty_db):
    await history.upgrade(empty_db, to=2)
    process = start_service(empty_db, unused_port())
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "StartupError: database is behind the code:" in stderr
    assert "Application startup failed. Exiting." in stderr


async def test_the_service_in_apply_mode_migrates_an_empty_database_then_serves(empty_db):
    port = unused_port()
    process = start_service(empty_db, port, mode="apply")
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}")
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert (health["status"], health["version"], health["pending"]) == ("ok", HEAD[-1], 0)
