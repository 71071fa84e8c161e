"""Course content: courses, their lessons, and the vocabulary they teach."""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint

from langlearn.models.base import TimestampedModel, UUIDModel, counter, flag, json_list, json_object
from langlearn.models.enums import CefrLevel, LessonType, MediaType, NativeEnumField, PartOfSpeech


class Course(TimestampedModel):
    """A course teaching one target `language` at one CEFR `level`.

    `total_lessons` is a denormalised count of the course's lessons, kept equal to the real count;
    `total_xp` is the XP its lessons award and `estimated_duration` their length in minutes.
    `content_version` is bumped when published content changes, so clients refetch.
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
        constraints = (CheckConstraint(check="total_lessons >= 0", name="courses_total_lessons_check"),)
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
        constraints = (CheckConstraint(check="order_index >= 0", name="units_order_index_check"),)
        indexes = (Index(fields=("course_id", "order_index"), name="idx_unit_course_order"),)

    def __str__(self) -> str:
        return self.title


class Lesson(TimestampedModel):
    """One lesson of a course, played in `order_index` order.

    `content` is the lesson itself: an introduction, the exercises (each with its answer) and
    grammar notes. `unit` is NULL only for lessons older than units; when set, the unit belongs to
    the lesson's course. A learner needs `pass_score` to pass, and the prerequisite lesson first.
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
        )
        indexes = (Index(fields=("unit_id", "order_index"), name="idx_lesson_unit_order"),)

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
        constraints = (CheckConstraint(check="reference_count >= 0", name="media_resources_reference_count_check"),)

    def __str__(self) -> str:
        return self.url
