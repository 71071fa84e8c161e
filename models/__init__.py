"""The Tortoise models, one module per domain; `models` is also the Tortoise app label."""

from langlearn.models.content import Course, Lesson, MediaResource, Unit, VocabularyItem
from langlearn.models.gamification import (
    Achievement,
    ActivityFeed,
    LeaderboardEntry,
    LeagueWeek,
    ShopItem,
    UserAchievement,
    UserFollowing,
    UserInventory,
    UserWallet,
    WalletTransaction,
)
from langlearn.models.learning import (
    DailyReviewSession,
    LessonAttempt,
    QuestionAttempt,
    Streak,
    UserProgress,
    UserVocabKnowledge,
)
from langlearn.models.operations import SeedRun
from langlearn.models.users import RefreshToken, SignInThrottle, User, UserDevice

__all__ = [
    "Achievement",
    "ActivityFeed",
    "Course",
    "DailyReviewSession",
    "LeaderboardEntry",
    "LeagueWeek",
    "Lesson",
    "LessonAttempt",
    "MediaResource",
    "QuestionAttempt",
    "RefreshToken",
    "SeedRun",
    "SignInThrottle",
    "ShopItem",
    "Streak",
    "Unit",
    "User",
    "UserAchievement",
    "UserDevice",
    "UserFollowing",
    "UserInventory",
    "UserProgress",
    "UserVocabKnowledge",
    "UserWallet",
    "VocabularyItem",
    "WalletTransaction",
]
