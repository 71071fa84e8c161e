"""Learning history: progress, lesson and question attempts, spaced repetition, streaks."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint
from tortoise.timezone import now as utcnow

from langlearn.models.base import NOW, MonthlyPartitions, RealField, TimestampedModel, UUIDModel, counter, flag, json_list
from langlearn.models.content import Course, Lesson, VocabularyItem
from langlearn.models.enums import DeviceType, MasteryLevel, NativeEnumField, ProgressStatus
from langlearn.models.users import User


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
            CheckConstraint(check="time_spent_seconds >= 0 AND attempts >= 0", name="user_progress_effort_check"),
            UniqueConstraint(fields=("user_id", "lesson_id"), name="user_progress_user_id_lesson_id_key"),
        )
        # deleting a lesson or a course deletes every learner's progress in it
        indexes = (
            Index(fields=("lesson_id",), name="idx_user_progress_lesson"),
            Index(fields=("course_id",), name="idx_user_progress_course"),
        )


class Streak(TimestampedModel):
    """A user's run of consecutive active days (one row per user).

    `last_activity_date` is a UTC calendar day; `longest_streak` never falls below `current_streak`.
    `freeze_count` is the streak freezes the user holds, each saving the streak for a missed day.
    """

    current_streak = counter()
    longest_streak = counter()
    last_activity_date = fields.DateField(null=True)
    total_days_active = counter()
    freeze_count = counter()
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
            CheckConstraint(check="freeze_count >= 0", name="streaks_freeze_count_check"),
            CheckConstraint(check="total_days_active >= 0", name="streaks_total_days_active_check"),
        )


class LessonAttempt(UUIDModel):
    """One play of a lesson by a user, from `started_at` to `finished_at` (NULL while unfinished).

    `xp_earned` is what the attempt added to the user's total XP; weekly league XP is the sum of
    this over the attempts started in that week. `created_at` follows the table convention and
    equals `started_at` for attempts recorded live.

    A completion sent by a client carries its `idempotency_key` (unique per user): a retry finds the
    attempt and gets back `outcome`, what the first completion reported (`langlearn.operations.lessons`).
    """

    started_at = fields.DatetimeField(default=utcnow, db_default=NOW)
    finished_at = fields.DatetimeField(null=True)
    score = counter(description="0..100")
    passed = flag(False)
    xp_earned = counter()
    total_questions = counter()
    correct_answers = counter()
    hints_used = counter()
    lives_remaining = counter(5)
    time_spent_ms = counter()
    avg_response_time_ms = counter()
    device_type = NativeEnumField(DeviceType, null=True)
    idempotency_key = fields.CharField(max_length=100, null=True, description="the client's key for this completion")
    outcome: fields.JSONField[dict[str, Any] | None] = fields.JSONField(
        null=True, description="what the completion reported (totals after it, achievements unlocked), returned to a retry"
    )
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="lesson_attempts", on_delete=fields.CASCADE
    )
    lesson: fields.ForeignKeyRelation[Lesson] = fields.ForeignKeyField(
        "models.Lesson", related_name="attempts", on_delete=fields.CASCADE
    )

    class Meta:
        table = "lesson_attempts"
        constraints = (
            CheckConstraint(check="score >= 0 AND score <= 100", name="lesson_attempts_score_check"),
            CheckConstraint(check="xp_earned >= 0", name="lesson_attempts_xp_earned_check"),
            CheckConstraint(check="finished_at >= started_at", name="lesson_attempts_finished_check"),
            CheckConstraint(
                check="hints_used >= 0 AND lives_remaining >= 0 AND time_spent_ms >= 0 AND avg_response_time_ms >= 0",
                name="lesson_attempts_effort_check",
            ),
            CheckConstraint(
                check="correct_answers >= 0 AND correct_answers <= total_questions",
                name="lesson_attempts_correct_answers_check",
            ),
            # a unique index built CONCURRENTLY (migration 8): a client's retry finds its first completion
            UniqueConstraint(fields=("user_id", "idempotency_key"), name="idx_lesson_attempt_user_idempotency"),
        )
        indexes = (
            Index(fields=("user_id", "lesson_id"), name="idx_lesson_attempt_user_lesson"),
            Index(fields=("lesson_id",), name="idx_lesson_attempt_lesson"),  # deleting a lesson deletes its attempts
            Index(fields=("user_id", "started_at"), name="idx_lesson_attempt_user_started"),  # a user's attempts, newest first
            # the weekly XP rebuild: one week's attempts, read from the index alone
            Index(fields=("started_at", "user_id", "xp_earned"), name="idx_lesson_attempt_started"),
        )


class QuestionAttempt(UUIDModel):
    """One answer to one exercise of a lesson attempt; `question_id` names the exercise in the lesson's content.

    History that grows every day: partitioned by month of `created_at` (`MonthlyPartitions`), so old
    months retire by detaching a partition instead of a DELETE. The database's primary key is
    (id, created_at), because PostgreSQL wants the partition key in every unique key; the model's pk
    stays `id` (a uuid4, unique on its own, by which the ORM reads and updates a row), and nothing
    references this table. The cascade from a deleted lesson attempt reaches every partition
    through `idx_question_attempt_lesson`.
    """

    question_id = fields.CharField(max_length=255)
    question_type = fields.CharField(max_length=50)
    user_answer = fields.TextField(null=True)
    correct_answer = fields.TextField(null=True)
    is_correct = flag(False)
    time_spent_ms = counter()
    hint_used = flag(False)
    attempt_number = counter(1)
    confidence_score = RealField(null=True, description="0..1")
    difficulty_rating = fields.CharField(max_length=20, null=True)
    lesson_attempt: fields.ForeignKeyRelation[LessonAttempt] = fields.ForeignKeyField(
        "models.LessonAttempt", related_name="questions", on_delete=fields.CASCADE
    )

    class Meta:
        table = "question_attempts"
        constraints = (
            CheckConstraint(check="attempt_number >= 1", name="question_attempts_attempt_number_check"),
            CheckConstraint(check="time_spent_ms >= 0", name="question_attempts_time_spent_ms_check"),
            CheckConstraint(
                check="confidence_score >= 0 AND confidence_score <= 1", name="question_attempts_confidence_score_check"
            ),
            # by month of created_at; the database's primary key is (id, created_at): see the docstring
            MonthlyPartitions(),
        )
        indexes = (Index(fields=("lesson_attempt_id", "question_id"), name="idx_question_attempt_lesson"),)


class UserVocabKnowledge(TimestampedModel):
    """A user's spaced-repetition state for one vocabulary item (one row per user and item).

    `strength` (0..1) is the estimated recall probability, `ease_factor` and `interval_days` the
    SM-2 scheduling state, `review_history` the past reviews (date, grade). `next_review_date` is
    when the item is next due.
    """

    strength = RealField(default=0.0, db_default=0.0, description="estimated recall, 0..1")
    ease_factor = RealField(default=2.5, db_default=2.5)
    interval_days = counter()
    last_review_date = fields.DatetimeField(null=True)
    next_review_date = fields.DatetimeField(null=True)
    review_count = counter()
    consecutive_correct = counter()
    review_history = json_list()
    mastery_level = NativeEnumField(MasteryLevel, default=MasteryLevel.LEARNING, db_default=MasteryLevel.LEARNING)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="vocab_knowledge", on_delete=fields.CASCADE
    )
    vocab: fields.ForeignKeyRelation[VocabularyItem] = fields.ForeignKeyField(
        "models.VocabularyItem", related_name="knowledge", on_delete=fields.CASCADE
    )

    class Meta:
        table = "user_vocab_knowledge"
        constraints = (
            CheckConstraint(check="strength >= 0 AND strength <= 1", name="user_vocab_knowledge_strength_check"),
            # compared as REAL: a double 1.3 is above the REAL 1.3 the column can store
            CheckConstraint(check="ease_factor >= 1.3::real", name="user_vocab_knowledge_ease_factor_check"),
            CheckConstraint(check="interval_days >= 0", name="user_vocab_knowledge_interval_days_check"),
            UniqueConstraint(fields=("user_id", "vocab_id"), name="user_vocab_knowledge_user_id_vocab_id_key"),
        )
        # "what is due for this user" is the hot query of the review screen
        indexes = (
            Index(fields=("user_id", "next_review_date"), name="idx_vocab_knowledge_user_next_review"),
            Index(fields=("vocab_id",), name="idx_vocab_knowledge_vocab"),  # deleting a word deletes what learners know of it
        )


class DailyReviewSession(UUIDModel):
    """A user's vocabulary review for one UTC day (at most one per user and day).

    `vocab_list` holds the ids of the vocabulary items in the session.
    """

    review_date = fields.DateField()
    total_words = counter()
    completed_words = counter()
    correct_count = counter()
    started_at = fields.DatetimeField(null=True)
    completed_at = fields.DatetimeField(null=True)
    is_completed = flag(False)
    vocab_list = json_list(description="vocabulary item ids")
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="review_sessions", on_delete=fields.CASCADE
    )

    class Meta:
        table = "daily_review_sessions"
        constraints = (
            CheckConstraint(
                check="correct_count >= 0 AND correct_count <= completed_words AND completed_words <= total_words",
                name="daily_review_sessions_counts_check",
            ),
            # a unique index rather than a constraint, under the name SCHEMA.md gives it
            CheckConstraint(check="completed_at >= started_at", name="daily_review_sessions_completed_check"),
            UniqueConstraint(fields=("user_id", "review_date"), name="idx_daily_review_user_date"),
        )
