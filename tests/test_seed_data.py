"""Damaged seed data files: one line naming the file and the field, never a traceback.

Every test damages a copy of `seed/data` (in tmp_path, laid out as `seed/data` so messages name the
files as they do for the real ones) and points `langlearn.seed.content.DATA_DIR` at it.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from langlearn.cli import main
from langlearn.errors import ContentDataError
from langlearn.seed import content
from langlearn.seed.simulation import RunContext

REAL_DATA = content.DATA_DIR
ANCHOR = datetime(2024, 6, 1, tzinfo=timezone.utc)


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the seed's data folder that the seed reads instead of the real one."""
    copy = tmp_path / "seed" / "data"
    shutil.copytree(REAL_DATA, copy)
    monkeypatch.setattr(content, "DATA_DIR", copy)
    return copy


def edit_json(path: Path, change: Callable[[Any], None]) -> None:
    value = json.loads(path.read_text(encoding="utf-8"))
    change(value)
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2), encoding="utf-8")


def edit_csv(path: Path, change: Callable[[list[dict[str, str]]], list[dict[str, str]]]) -> None:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = change(list(csv.DictReader(handle)))
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def first_lesson(course: Any) -> Any:
    return course["units"][0]["lessons"][0]


def refusal() -> str:
    """The message load_content refuses the data with; it is one line."""
    with pytest.raises(ContentDataError) as raised:
        content.load_content(42, ANCHOR)
    message = str(raised.value)
    assert "\n" not in message and message.strip() == message
    return message


def test_the_copied_data_loads(data: Path) -> None:
    loaded = content.load_content(42, ANCHOR)
    assert set(loaded.courses) == {"en-a1", "en-a2", "es-a1"}
    assert loaded.rows == content.load_content(42, ANCHOR).rows


def test_missing_field_in_a_course_names_file_lesson_and_field(data: Path) -> None:
    course = json.loads((data / "courses" / "en-a1.json").read_text(encoding="utf-8"))
    key = first_lesson(course)["key"]
    edit_json(data / "courses" / "en-a1.json", lambda course: first_lesson(course).pop("exercises"))
    assert refusal() == f"seed/data/courses/en-a1.json: lesson {key!r}: missing field 'exercises'"


def test_missing_course_key(data: Path) -> None:
    edit_json(data / "courses" / "es-a1.json", lambda course: course.pop("key"))
    assert refusal() == "seed/data/courses/es-a1.json: missing field 'key'"


def test_bad_json_syntax_names_the_file_and_the_place(data: Path) -> None:
    path = data / "courses" / "en-a2.json"
    path.write_text(path.read_text(encoding="utf-8")[:200], encoding="utf-8")
    message = refusal()
    assert message.startswith("seed/data/courses/en-a2.json: ") and "line" in message


def test_exercises_of_the_wrong_type(data: Path) -> None:
    course = json.loads((data / "courses" / "en-a1.json").read_text(encoding="utf-8"))
    key = first_lesson(course)["key"]

    def damage(course: Any) -> None:
        first_lesson(course)["exercises"] = "listen and repeat"

    edit_json(data / "courses" / "en-a1.json", damage)
    assert refusal() == f"seed/data/courses/en-a1.json: lesson {key!r}: field 'exercises' must be an array of objects, not a string"


def test_xp_that_is_not_a_number(data: Path) -> None:
    def damage(course: Any) -> None:
        first_lesson(course)["xp"] = "ten"

    edit_json(data / "courses" / "en-a1.json", damage)
    message = refusal()
    assert message.startswith("seed/data/courses/en-a1.json: lesson ") and "field 'xp' must be a whole number, not a string" in message


def test_non_integer_condition_value_names_file_line_and_field(data: Path) -> None:
    def damage(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        rows[2]["condition_value"] = "fifty"
        return rows

    edit_csv(data / "achievements.csv", damage)
    assert refusal() == "seed/data/achievements.csv:4: field 'condition_value' must be a whole number, not 'fifty'"


def test_missing_column_in_a_vocabulary_file(data: Path) -> None:
    def damage(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{column: value for column, value in row.items() if column != "frequency"} for row in rows]

    edit_csv(data / "vocabulary" / "es.csv", damage)
    assert refusal() == "seed/data/vocabulary/es.csv: missing column 'frequency'"


def test_short_line_in_a_vocabulary_file(data: Path) -> None:
    path = data / "vocabulary" / "en.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = ",".join(lines[3].split(",")[:6]) + "\n"  # up to the `en` column
    path.write_text("".join(lines), encoding="utf-8")
    assert refusal() == "seed/data/vocabulary/en.csv:4: missing field 'definition'"


def test_shop_item_without_effects(data: Path) -> None:
    edit_json(data / "shop.json", lambda items: items[1].pop("effects"))
    assert refusal() == "seed/data/shop.json: item 'Double XP Boost': missing field 'effects'"


def test_people_without_email_domains(data: Path) -> None:
    edit_json(data / "people.json", lambda people: people.pop("email_domains"))
    assert refusal() == "seed/data/people.json: missing field 'email_domains'"


def test_demo_account_with_an_unknown_persona_is_refused_before_the_simulation(data: Path) -> None:
    def damage(demo: Any) -> None:
        demo["accounts"][1]["persona"] = "lazy"

    edit_json(data / "demo_accounts.json", damage)
    loaded = content.load_content(42, ANCHOR)
    with pytest.raises(ContentDataError) as raised:
        RunContext(42, 36, ANCHOR, loaded, lambda index: "hash", 3, False)
    assert str(raised.value) == (
        "seed/data/demo_accounts.json: account 2: field 'persona' is 'lazy'; expected one of dedicated, regular, casual, churned")


def test_achievement_the_simulation_cannot_count_is_refused(data: Path) -> None:
    def damage(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        rows[0]["condition_type"] = "lessons_done"
        return rows

    edit_csv(data / "achievements.csv", damage)
    loaded = content.load_content(42, ANCHOR)
    with pytest.raises(ContentDataError, match=r"^seed/data/achievements\.csv: achievement '[\w-]+': field 'condition_type' is 'lessons_done'"):
        RunContext(42, 36, ANCHOR, loaded, lambda index: "hash", 3, False)


async def test_cli_prints_one_line_exits_non_zero_and_writes_nothing(data: Path, head_db: str, connect: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def damage(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        rows[0]["condition_value"] = "1.5"
        return rows

    edit_csv(data / "achievements.csv", damage)
    monkeypatch.setenv("DATABASE_URL", head_db)
    out, err = io.StringIO(), io.StringIO()
    code = await main(["seed", "--no-progress"], out=out, err=err)
    assert code != 0
    assert err.getvalue().startswith("error: seed/data/achievements.csv:2: field 'condition_value'")
    assert err.getvalue().count("\n") == 1
    connection = await connect(head_db)
    assert await connection.fetchval("SELECT count(*) FROM users") == 0
    assert await connection.fetchval("SELECT count(*) FROM seed_runs") == 0
