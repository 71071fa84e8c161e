"""Course content: courses, their lessons, and the vocabulary they teach."""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint

from langlearn.models.base import CompositeForeignKey, TimestampedModel, UUIDModel, counter, flag, json_list, json_object
from langlearn.models.enums import CefrLevel, LessonType, MediaType, NativeEnumField, PartOfSpeech


class Course(TimestampedModel):
    """A course teaching one target `language` at one CEFR `level`.

    `total_lessons` is a denormalised count of the course's lessons, kept equal to the real count;
    `total_xp` is the XP its lessons award and `estimated_duration` their length in minutes.
    `content_version` is bumped when published content changes, so clients refetch.

    Deleting a course destroys, by SCHEMA.md's ON DELETE CASCADE, its units and lessons and, through
    them, every learner's progress, attempts (with their answers) in them; its vocabulary keeps its
    words with `course_id` NULL. Every cascade is index-backed (migration 6), so the cost is the rows
    destroyed, not the size of the tables; but the learners' history is gone. Retire a course
    instead: `is_published = false` hides it from the catalogue and keeps every learner's record.
    """

    title = fields.CharField(max_length=255)
    description = fields.TextField(null=True)
    language = fields.CharField(max_length=10)
    level = NativeEnumField(CefrLevel)
    total_lessons = counter()
    thumbnail_url = fields.CharField(max_length=500, null=True)
    is_published = flag(False)
    tags = json_list()
    total_xp = counter()
    estimated_duration = counter(description="minutes")
    content_version = counter(1)

    class Meta:
        table = "courses"
        constraints = (
            CheckConstraint(check="total_lessons >= 0", name="courses_total_lessons_check"),
            CheckConstraint(check="total_xp >= 0 AND estimated_duration >= 0", name="courses_totals_check"),
        )
        # the catalogue lists published courses by level
        indexes = (Index(fields=("level", "is_published"), name="idx_course_level_published"),)

    def __str__(self) -> str:
        return self.title


class Unit(TimestampedModel):
    """A themed group of lessons within a course, played in `order_index` order.

    `total_lessons` is a denormalised count of the unit's lessons, kept equal to the real count.
    """

    title = fields.CharField(max_length=255)
    description = fields.TextField(null=True)
    order_index = fields.IntField()
    background_color = fields.CharField(max_length=20, null=True)
    icon_url = fields.CharField(max_length=500, null=True)
    total_lessons = counter()
    course: fields.ForeignKeyRelation[Course] = fields.ForeignKeyField(
        "models.Course", related_name="units", on_delete=fields.CASCADE
    )

    class Meta:
        table = "units"
        constraints = (
            CheckConstraint(check="order_index >= 0", name="units_order_index_check"),
            CheckConstraint(check="total_lessons >= 0", name="units_total_lessons_check"),
            # what lessons reference with (unit_id, course_id): a lesson's unit belongs to its course
            UniqueConstraint(fields=("id", "course_id"), name="idx_unit_id_course"),
        )
        indexes = (Index(fields=("course_id", "order_index"), name="idx_unit_course_order"),)

    def __str__(self) -> str:
        return self.title


class Lesson(TimestampedModel):
    """One lesson of a course, played in `order_index` order.

    `content` is the lesson itself: an introduction, the exercises (each with its answer) and
    grammar notes. `unit` is NULL only for lessons older than units; when set, the unit belongs to
    the lesson's course. A learner needs `pass_score` to pass, and the prerequisite lesson first.

    Deleting a lesson destroys every learner's progress in it and every attempt at it (with their
    question answers, which the leaderboard's and `total_xp`'s XP were counted from, so those
    totals no longer add up to the attempts left); lessons that required it lose the prerequisite,
    words taught in it lose `lesson_id`. Retire content instead (`courses.is_published = false`, or
    a new `content_version` of the course without the lesson); delete only what no learner has played.
    """

    title = fields.CharField(max_length=255)
    description = fields.TextField(null=True)
    order_index = fields.IntField()
    content = json_object(description="introduction, exercises[], grammar notes")
    xp_reward = counter(10)
    pass_score = counter(80, description="score needed to pass, 0..100")
    content_version = counter(1)
    lesson_type = NativeEnumField(LessonType, default=LessonType.LESSON, db_default=LessonType.LESSON)
    estimated_minutes = counter(10)
    course: fields.ForeignKeyRelation[Course] = fields.ForeignKeyField(
        "models.Course", related_name="lessons", on_delete=fields.CASCADE
    )
    unit: fields.ForeignKeyNullableRelation[Unit] = fields.ForeignKeyField(
        "models.Unit", related_name="lessons", null=True, on_delete=fields.CASCADE
    )
    prerequisite_lesson: fields.ForeignKeyNullableRelation[Lesson] = fields.ForeignKeyField(
        "models.Lesson", related_name="unlocks", null=True, on_delete=fields.SET_NULL
    )

    class Meta:
        table = "lessons"
        constraints = (
            CheckConstraint(check="order_index >= 0", name="lessons_order_index_check"),
            CheckConstraint(check="xp_reward >= 0", name="lessons_xp_reward_check"),
            CheckConstraint(check="pass_score >= 0 AND pass_score <= 100", name="lessons_pass_score_check"),
            CheckConstraint(check="estimated_minutes >= 0", name="lessons_estimated_minutes_check"),
            # a lesson's unit belongs to the lesson's course (MATCH SIMPLE: a lesson without a unit passes)
            CompositeForeignKey("lessons_unit_id_course_id_fkey", ("unit_id", "course_id"), "units", ("id", "course_id")),
        )
        indexes = (
            Index(fields=("unit_id", "order_index"), name="idx_lesson_unit_order"),
            # a course's lessons in order (those from before units too), and deleting a course
            Index(fields=("course_id", "order_index"), name="idx_lesson_course_order"),
            Index(fields=("prerequisite_lesson_id",), name="idx_lesson_prerequisite"),  # deleting a lesson sets its dependents' NULL
        )

    def __str__(self) -> str:
        return self.title


class VocabularyItem(TimestampedModel):
    """A word or phrase of a language, with its definition and translations.

    A word is unique per language and part of speech ("light" the noun and the adjective are two
    items). The course and lesson that introduce it are optional and survive its deletion.
    """

    language = fields.CharField(max_length=10)
    word = fields.CharField(max_length=255)
    definition = fields.TextField()
    translation = json_object(description="translations keyed by language code")
    pronunciation = fields.CharField(max_length=100, null=True)
    audio_url = fields.CharField(max_length=500, null=True)
    part_of_speech = NativeEnumField(PartOfSpeech)
    difficulty_level = NativeEnumField(CefrLevel)
    usage_frequency = counter()
    tags = json_list()
    course: fields.ForeignKeyNullableRelation[Course] = fields.ForeignKeyField(
        "models.Course", related_name="vocabulary", null=True, on_delete=fields.SET_NULL
    )
    lesson: fields.ForeignKeyNullableRelation[Lesson] = fields.ForeignKeyField(
        "models.Lesson", related_name="vocabulary", null=True, on_delete=fields.SET_NULL
    )

    class Meta:
        table = "vocabulary_items"
        constraints = (
            UniqueConstraint(
                fields=("language", "word", "part_of_speech"),
                name="vocabulary_items_language_word_part_of_speech_key",
            ),
        )
        # deleting a course or a lesson sets its vocabulary's course_id / lesson_id NULL
        indexes = (
            Index(fields=("course_id",), name="idx_vocabulary_course"),
            Index(fields=("lesson_id",), name="idx_vocabulary_lesson"),
        )

    def __str__(self) -> str:
        return f"{self.word} ({self.language})"


class MediaResource(UUIDModel):
    """An image, audio or video file that content points at, deduplicated by `url`.

    `reference_count` counts the content rows using it, so unused files can be collected.
    """

    resource_type = NativeEnumField(MediaType)
    url = fields.CharField(max_length=500, unique=True)
    filename = fields.CharField(max_length=255)
    duration_seconds = fields.IntField(null=True)
    size_bytes = fields.BigIntField(null=True)
    mime_type = fields.CharField(max_length=100, null=True)
    reference_count = counter()

    class Meta:
        table = "media_resources"
        constraints = (
            CheckConstraint(check="reference_count >= 0", name="media_resources_reference_count_check"),
            CheckConstraint(check="size_bytes >= 0 AND duration_seconds >= 0", name="media_resources_size_check"),
        )

    def __str__(self) -> str:
        return self.url
