"""The Tortoise models, one module per domain; `models` is also the Tortoise app label."""

from models.content import Course, Lesson, MediaResource, Unit, VocabularyItem
from models.learning import Streak, UserProgress
from models.users import RefreshToken, User, UserDevice

__all__ = [
    "Course",
    "Lesson",
    "MediaResource",
    "RefreshToken",
    "Streak",
    "Unit",
    "User",
    "UserDevice",
    "UserProgress",
    "VocabularyItem",
]
