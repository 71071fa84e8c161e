"""The Tortoise models, one module per domain; `models` is also the Tortoise app label."""

from models.content import Course, Lesson, VocabularyItem
from models.learning import Streak, UserProgress
from models.users import User

__all__ = ["Course", "Lesson", "Streak", "User", "UserProgress", "VocabularyItem"]
