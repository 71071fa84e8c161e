"""The columns the seed writes, per table, in the order its rows are tuples.

The catalogue's columns are listed here; the user tables' come from the simulation's named row types
(`seed.simulation.rows`). The seed's COPY and the benchmark's raw COPY both read them here.
Tables are listed in the order they are loaded (parents before children).
"""

from __future__ import annotations

from langlearn.seed.simulation.rows import USER_COLUMNS

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

# the user tables' columns are the fields of the simulation's row types, stated once there
USER_TABLES = USER_COLUMNS

TABLES: dict[str, tuple[str, ...]] = {**CONTENT_TABLES, **USER_TABLES}
