"""The columns the seed writes, per table, in the order its rows are tuples.

One place for the shape of every generated row: the seed's COPY and the benchmark's raw COPY
both read it. Tables are listed in the order they are loaded (parents before children).
"""

from __future__ import annotations

CONTENT_TABLES: dict[str, tuple[str, ...]] = {
    "courses": (
        "id", "title", "description", "language", "level", "total_lessons", "thumbnail_url", "is_published",
        "tags", "total_xp", "estimated_duration", "content_version", "created_at", "updated_at",
    ),
    "units": (
        "id", "course_id", "title", "description", "order_index", "background_color", "icon_url", "total_lessons",
        "created_at", "updated_at",
    ),
    "lessons": (
        "id", "course_id", "unit_id", "prerequisite_lesson_id", "title", "description", "order_index", "content",
        "xp_reward", "pass_score", "content_version", "lesson_type", "estimated_minutes", "created_at", "updated_at",
    ),
    "vocabulary_items": (
        "id", "language", "word", "definition", "translation", "pronunciation", "audio_url", "part_of_speech",
        "difficulty_level", "course_id", "lesson_id", "usage_frequency", "tags", "created_at", "updated_at",
    ),
    "media_resources": (
        "id", "resource_type", "url", "filename", "duration_seconds", "size_bytes", "mime_type", "reference_count",
        "created_at",
    ),
    "achievements": (
        "id", "slug", "name", "description", "condition_type", "condition_value", "condition_data", "badge_icon",
        "badge_color", "category", "xp_reward", "gems_reward", "rarity", "is_hidden", "created_at",
    ),
    "shop_items": (
        "id", "name", "description", "item_type", "price_gems", "effects", "icon_url", "is_available",
        "stock_quantity", "created_at",
    ),
}

USER_TABLES: dict[str, tuple[str, ...]] = {
    "users": (
        "id", "email", "username", "hashed_password", "display_name", "avatar_url", "native_language",
        "target_language", "level", "total_xp", "is_active", "is_verified", "last_login_at", "provider",
        "last_login_ip", "created_at", "updated_at",
    ),
    "user_devices": (
        "id", "user_id", "device_id", "fcm_token", "device_type", "device_name", "last_active_at", "created_at",
    ),
    "refresh_tokens": (
        "id", "user_id", "device_id", "token_hash", "is_revoked", "is_used", "expires_at", "revoked_at", "created_at",
    ),
    "lesson_attempts": (
        "id", "user_id", "lesson_id", "started_at", "finished_at", "score", "passed", "xp_earned", "total_questions",
        "correct_answers", "hints_used", "lives_remaining", "time_spent_ms", "avg_response_time_ms", "device_type",
        "created_at",
    ),
    "question_attempts": (
        "id", "lesson_attempt_id", "question_id", "question_type", "user_answer", "correct_answer", "is_correct",
        "time_spent_ms", "hint_used", "attempt_number", "confidence_score", "difficulty_rating", "created_at",
    ),
    "user_progress": (
        "id", "user_id", "lesson_id", "course_id", "status", "score", "completed_at", "time_spent_seconds",
        "attempts", "created_at", "updated_at",
    ),
    "user_vocab_knowledge": (
        "id", "user_id", "vocab_id", "strength", "ease_factor", "interval_days", "last_review_date",
        "next_review_date", "review_count", "consecutive_correct", "review_history", "mastery_level", "created_at",
        "updated_at",
    ),
    "daily_review_sessions": (
        "id", "user_id", "review_date", "total_words", "completed_words", "correct_count", "started_at",
        "completed_at", "is_completed", "vocab_list", "created_at",
    ),
    "streaks": (
        "id", "user_id", "current_streak", "longest_streak", "last_activity_date", "total_days_active",
        "freeze_count", "created_at", "updated_at",
    ),
    "user_achievements": ("id", "user_id", "achievement_id", "progress", "unlocked_at", "is_showcased", "created_at"),
    "user_wallets": ("id", "user_id", "gems", "total_gems_earned", "total_gems_spent", "created_at", "updated_at"),
    "wallet_transactions": (
        "id", "wallet_id", "user_id", "transaction_type", "amount", "balance_after", "source", "reference_id",
        "idempotency_key", "description", "created_at",
    ),
    "leaderboard_entries": (
        "id", "user_id", "week_start", "week_end", "league", "xp_earned", "lessons_completed", "current_rank",
        "is_promoted", "is_demoted", "created_at", "updated_at",
    ),
    "user_following": ("id", "follower_id", "following_id", "created_at"),
    "activity_feeds": ("id", "user_id", "activity_type", "activity_data", "message", "is_public", "created_at"),
    "user_inventory": (
        "id", "user_id", "shop_item_id", "quantity", "is_active", "activated_at", "expires_at", "purchased_at",
        "created_at",
    ),
}

TABLES: dict[str, tuple[str, ...]] = {**CONTENT_TABLES, **USER_TABLES}
