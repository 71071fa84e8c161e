"""The Tortoise models, one module per domain; `models` is also the Tortoise app label."""

from models.content import Course, Lesson, VocabularyItem
from models.learning import Streak, UserProgress
from models.users import RefreshToken, User, UserDevice

__all__ = [
    "Course",
    "Lesson",
    "RefreshToken",
    "Streak",
    "User",
    "UserDevice",
    "UserProgress",
    "VocabularyItem",
]
