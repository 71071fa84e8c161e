"""The Tortoise models, one module per domain; `models` is also the Tortoise app label."""

from models.content import Course, Lesson, MediaResource, Unit, VocabularyItem
from models.learning import (
    DailyReviewSession,
    LessonAttempt,
    QuestionAttempt,
    Streak,
    UserProgress,
    UserVocabKnowledge,
)
from models.users import RefreshToken, User, UserDevice

__all__ = [
    "Course",
    "DailyReviewSession",
    "Lesson",
    "LessonAttempt",
    "MediaResource",
    "QuestionAttempt",
    "RefreshToken",
    "Streak",
    "Unit",
    "User",
    "UserDevice",
    "UserProgress",
    "UserVocabKnowledge",
    "VocabularyItem",
]
