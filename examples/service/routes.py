"""Public read endpoints over the seed's data: the published catalogue, a published course's tree, league tables.

Nothing here is one learner's private data: that is read through `/me/...` (`service.write_routes`), as its owner.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from langlearn.models import Course, LeaderboardEntry, Lesson, Unit
from langlearn.models.enums import LeagueType
from service.bodies import StrictJSONRoute
from service.errors import Message

router = APIRouter(route_class=StrictJSONRoute)


def not_found(what: str) -> dict[int | str, dict[str, Any]]:
    return {404: {"model": Message, "description": f"No such {what}"}}


class CourseSummary(BaseModel):
    id: UUID
    title: str
    language: str
    level: str
    total_lessons: int


class LessonOut(BaseModel):
    id: UUID
    title: str
    order_index: int
    lesson_type: str
    xp_reward: int
    estimated_minutes: int


class UnitOut(BaseModel):
    id: UUID
    title: str
    order_index: int
    lessons: list[LessonOut]


class CourseOut(CourseSummary):
    description: str | None
    units: list[UnitOut]
    lessons_without_unit: list[LessonOut]


class Standing(BaseModel):
    rank: int  # final once the week is closed; while it is open, the position by XP right now
    user_id: UUID
    username: str
    display_name: str | None
    xp_earned: int
    lessons_completed: int
    is_promoted: bool
    is_demoted: bool


class LeagueTable(BaseModel):
    league: str
    week_start: date
    week_end: date
    closed: bool  # ranked by the weekly close (`langlearn leagues close-week`): ranks and promotions are final
    standings: list[Standing]


@router.get("/courses", response_model=list[CourseSummary])
async def list_courses():
    """The published catalogue, by language and level."""
    courses = await Course.filter(is_published=True).order_by("language", "level", "title")
    return [_summary(course) for course in courses]


@router.get("/courses/{course_id}", response_model=CourseOut, responses=not_found("course"))
async def get_course(course_id: UUID):
    """A published course with its units in order, each with its lessons in order (three queries); an unpublished one is 404."""
    course = await Course.get_or_none(id=course_id, is_published=True)
    if course is None:
        raise HTTPException(404, f"no course {course_id}")
    units = await Unit.filter(course_id=course_id).order_by("order_index")
    lessons_by_unit: dict[UUID | None, list[LessonOut]] = defaultdict(list)
    for lesson in await Lesson.filter(course_id=course_id).order_by("order_index"):
        lessons_by_unit[lesson.unit_id].append(
            LessonOut(
                id=lesson.id,
                title=lesson.title,
                order_index=lesson.order_index,
                lesson_type=lesson.lesson_type.value,
                xp_reward=lesson.xp_reward,
                estimated_minutes=lesson.estimated_minutes,
            )
        )
    return CourseOut(
        **_summary(course).model_dump(),
        description=course.description,
        units=[UnitOut(id=u.id, title=u.title, order_index=u.order_index, lessons=lessons_by_unit[u.id]) for u in units],
        lessons_without_unit=lessons_by_unit[None],
    )


@router.get("/leagues/{league}", response_model=LeagueTable, responses=not_found("league table for that week"))
async def league_table(
    league: LeagueType,
    week: Annotated[date | None, Query(description="any day of the week (its Monday starts it); default: the latest week with entries")] = None,
):
    """One league's table for one week, by rank. Any day names its week, so every date is a valid `week`."""
    if week is None:
        latest = await LeaderboardEntry.filter(league=league).order_by("-week_start").first().values_list("week_start", flat=True)
        if latest is None:
            raise HTTPException(404, f"no {league.value} league table yet")
        week = latest
    else:
        week -= timedelta(days=week.weekday())
    # the rule book's order (rules.ranks): what an open week's ranks will be if it closed now
    entries = await LeaderboardEntry.filter(league=league, week_start=week).order_by("-xp_earned", "user_id").select_related("user")
    if not entries:
        raise HTTPException(404, f"no {league.value} league table for the week of {week}")
    return LeagueTable(
        league=league.value,
        week_start=week,
        week_end=week + timedelta(days=6),
        closed=entries[0].current_rank is not None,
        standings=[
            Standing(
                rank=entry.current_rank or position,
                user_id=entry.user.id,
                username=entry.user.username,
                display_name=entry.user.display_name,
                xp_earned=entry.xp_earned,
                lessons_completed=entry.lessons_completed,
                is_promoted=entry.is_promoted,
                is_demoted=entry.is_demoted,
            )
            for position, entry in enumerate(entries, start=1)
        ],
    )


def _summary(course: Course) -> CourseSummary:
    return CourseSummary(
        id=course.id, title=course.title, language=course.language, level=course.level.value, total_lessons=course.total_lessons
    )
