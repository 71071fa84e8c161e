"""Course content: courses, their lessons, and the vocabulary they teach."""

from __future__ import annotations

from tortoise import fields
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint

from models.base import TimestampedModel, counter, flag, json_list, json_object
from models.enums import CefrLevel, NativeEnumField, PartOfSpeech


class Course(TimestampedModel):
    """A course teaching one target `language` at one CEFR `level`.

    `total_lessons` is a denormalised count of the course's lessons, kept equal to the real count.
    """

    title = fields.CharField(max_length=255)
    description = fields.TextField(null=True)
    language = fields.CharField(max_length=10)
    level = NativeEnumField(CefrLevel)
    total_lessons = counter()
    thumbnail_url = fields.CharField(max_length=500, null=True)
    is_published = flag(False)

    class Meta:
        table = "courses"
        constraints = (CheckConstraint(check="total_lessons >= 0", name="courses_total_lessons_check"),)

    def __str__(self) -> str:
        return self.title


class Lesson(TimestampedModel):
    """One lesson of a course, played in `order_index` order.

    `content` is the lesson itself: an introduction, the exercises (each with its answer) and
    grammar notes.
    """

    title = fields.CharField(max_length=255)
    description = fields.TextField(null=True)
    order_index = fields.IntField()
    content = json_object(description="introduction, exercises[], grammar notes")
    xp_reward = counter(10)
    course: fields.ForeignKeyRelation[Course] = fields.ForeignKeyField(
        "models.Course", related_name="lessons", on_delete=fields.CASCADE
    )

    class Meta:
        table = "lessons"
        constraints = (
            CheckConstraint(check="order_index >= 0", name="lessons_order_index_check"),
            CheckConstraint(check="xp_reward >= 0", name="lessons_xp_reward_check"),
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

    def __str__(self) -> str:
        return f"{self.word} ({self.language})"
