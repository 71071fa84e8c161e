"""Learning history: progress through lessons and daily streaks."""

from __future__ import annotations

from tortoise import fields
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint

from models.base import TimestampedModel, counter
from models.content import Course, Lesson
from models.enums import NativeEnumField, ProgressStatus
from models.users import User


class UserProgress(TimestampedModel):
    """Where a user stands on one lesson: one row per user and lesson.

    `course` repeats the lesson's course so per-course progress needs no join.
    """

    status = NativeEnumField(ProgressStatus, default=ProgressStatus.NOT_STARTED, db_default=ProgressStatus.NOT_STARTED)
    score = counter(description="best score, 0..100")
    completed_at = fields.DatetimeField(null=True)
    time_spent_seconds = counter()
    attempts = counter()
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="progress", on_delete=fields.CASCADE
    )
    lesson: fields.ForeignKeyRelation[Lesson] = fields.ForeignKeyField(
        "models.Lesson", related_name="progress", on_delete=fields.CASCADE
    )
    course: fields.ForeignKeyRelation[Course] = fields.ForeignKeyField(
        "models.Course", related_name="progress", on_delete=fields.CASCADE
    )

    class Meta:
        table = "user_progress"
        constraints = (
            CheckConstraint(check="score >= 0 AND score <= 100", name="user_progress_score_check"),
            UniqueConstraint(fields=("user_id", "lesson_id"), name="user_progress_user_id_lesson_id_key"),
        )


class Streak(TimestampedModel):
    """A user's run of consecutive active days (one row per user).

    `last_activity_date` is a UTC calendar day; `longest_streak` never falls below `current_streak`.
    """

    current_streak = counter()
    longest_streak = counter()
    last_activity_date = fields.DateField(null=True)
    total_days_active = counter()
    user: fields.OneToOneRelation[User] = fields.OneToOneField(
        "models.User", related_name="streak", on_delete=fields.CASCADE
    )

    class Meta:
        table = "streaks"
        constraints = (
            CheckConstraint(
                check="current_streak >= 0 AND current_streak <= longest_streak",
                name="streaks_current_streak_check",
            ),
        )
