"""The rows the simulation writes: one named type per user table, whose fields are that table's COPY columns in order.

This is the one statement of those columns (`seed.tables` reads them from here). Values are what the
loader's codecs take (`seed.loader`), chosen to be cheap to make at millions of rows:

- `Uuid`: a 128-bit int (a version-4 UUID's value), not a `uuid.UUID` object;
- `Millis`: an instant as milliseconds since the Unix epoch, UTC (`timestamptz` columns);
- `Day`: a date as days since the Unix epoch (`date` columns);
- `JsonText`: JSON already spelled out, for `jsonb` columns.
"""

from __future__ import annotations

from typing import NamedTuple
from uuid import UUID

Uuid = int
Millis = int
Day = int
JsonText = str


def uuid_text(value: Uuid) -> str:
    """A `Uuid` as text and JSON columns spell it (`7d444840-9dc0-...`)."""
    return str(UUID(int=value))


class User(NamedTuple):
    id: Uuid
    email: str
    username: str
    hashed_password: str
    display_name: str
    avatar_url: str | None
    native_language: str
    target_language: str
    level: str
    total_xp: int
    is_active: bool
    is_verified: bool
    last_login_at: Millis
    provider: str
    last_login_ip: str
    created_at: Millis
    updated_at: Millis


class UserDevice(NamedTuple):
    id: Uuid
    user_id: Uuid
    device_id: str
    fcm_token: str | None
    device_type: str
    device_name: str
    last_active_at: Millis
    created_at: Millis


class RefreshToken(NamedTuple):
    id: Uuid
    user_id: Uuid
    device_id: Uuid
    token_hash: str
    is_revoked: bool
    is_used: bool
    expires_at: Millis
    revoked_at: Millis | None
    created_at: Millis


class LessonAttempt(NamedTuple):
    id: Uuid
    user_id: Uuid
    lesson_id: Uuid
    started_at: Millis
    finished_at: Millis | None
    score: int
    passed: bool
    xp_earned: int
    total_questions: int
    correct_answers: int
    hints_used: int
    lives_remaining: int
    time_spent_ms: int
    avg_response_time_ms: int
    device_type: str
    created_at: Millis


class QuestionAttempt(NamedTuple):
    id: Uuid
    lesson_attempt_id: Uuid
    question_id: str
    question_type: str
    user_answer: str
    correct_answer: str
    is_correct: bool
    time_spent_ms: int
    hint_used: bool
    attempt_number: int
    confidence_score: float
    difficulty_rating: str
    created_at: Millis


class UserProgress(NamedTuple):
    id: Uuid
    user_id: Uuid
    lesson_id: Uuid
    course_id: Uuid
    status: str
    score: int
    completed_at: Millis | None
    time_spent_seconds: int
    attempts: int
    created_at: Millis
    updated_at: Millis


class VocabKnowledge(NamedTuple):
    id: Uuid
    user_id: Uuid
    vocab_id: Uuid
    strength: float
    ease_factor: float
    interval_days: int
    last_review_date: Millis
    next_review_date: Millis
    review_count: int
    consecutive_correct: int
    review_history: JsonText
    mastery_level: str
    created_at: Millis
    updated_at: Millis


class DailyReviewSession(NamedTuple):
    id: Uuid
    user_id: Uuid
    review_date: Day
    total_words: int
    completed_words: int
    correct_count: int
    started_at: Millis
    completed_at: Millis | None
    is_completed: bool
    vocab_list: JsonText
    created_at: Millis


class Streak(NamedTuple):
    id: Uuid
    user_id: Uuid
    current_streak: int
    longest_streak: int
    last_activity_date: Day | None
    total_days_active: int
    freeze_count: int
    created_at: Millis
    updated_at: Millis


class UserAchievement(NamedTuple):
    id: Uuid
    user_id: Uuid
    achievement_id: Uuid
    progress: int
    unlocked_at: Millis | None
    is_showcased: bool
    created_at: Millis


class UserWallet(NamedTuple):
    id: Uuid
    user_id: Uuid
    gems: int
    total_gems_earned: int
    total_gems_spent: int
    created_at: Millis
    updated_at: Millis


class WalletTransaction(NamedTuple):
    id: Uuid
    wallet_id: Uuid
    user_id: Uuid
    transaction_type: str
    amount: int
    balance_after: int
    source: str
    reference_id: str | None
    idempotency_key: str
    description: str
    created_at: Millis
    ledger_seq: int  # the ledger's tie-break after created_at: see wallet.LEDGER_SEQ_PER_BATCH


class LeaderboardEntry(NamedTuple):
    id: Uuid
    user_id: Uuid
    week_start: Day
    week_end: Day
    league: str
    xp_earned: int
    lessons_completed: int
    current_rank: int | None  # set in SQL once every learner of the week is in (seed.run's RANK_SQL)
    is_promoted: bool
    is_demoted: bool
    created_at: Millis
    updated_at: Millis


class UserFollowing(NamedTuple):
    id: Uuid
    follower_id: Uuid
    following_id: Uuid
    created_at: Millis


class ActivityFeed(NamedTuple):
    id: Uuid
    user_id: Uuid
    activity_type: str
    activity_data: JsonText
    message: str
    is_public: bool
    created_at: Millis


class InventoryItem(NamedTuple):
    id: Uuid
    user_id: Uuid
    shop_item_id: Uuid
    quantity: int
    is_active: bool
    activated_at: Millis | None
    expires_at: Millis | None
    purchased_at: Millis
    created_at: Millis


# the user tables in load order (parents before children), and their columns: the fields of their row types
USER_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": User._fields,
    "user_devices": UserDevice._fields,
    "refresh_tokens": RefreshToken._fields,
    "lesson_attempts": LessonAttempt._fields,
    "question_attempts": QuestionAttempt._fields,
    "user_progress": UserProgress._fields,
    "user_vocab_knowledge": VocabKnowledge._fields,
    "daily_review_sessions": DailyReviewSession._fields,
    "streaks": Streak._fields,
    "user_achievements": UserAchievement._fields,
    "user_wallets": UserWallet._fields,
    "wallet_transactions": WalletTransaction._fields,
    "leaderboard_entries": LeaderboardEntry._fields,
    "user_following": UserFollowing._fields,
    "activity_feeds": ActivityFeed._fields,
    "user_inventory": InventoryItem._fields,
}
