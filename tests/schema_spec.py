"""SCHEMA.md, transcribed for the catalog test: what the database must look like at head.

This is deliberately independent of the models: the catalog test compares the live database with
the specification, and the verification compares it with the models, so a mistake has to be made
twice to pass unnoticed. One line per column:

    name type [NN] [U] [=default] [->table ON_DELETE]

then `check <expression>` (PostgreSQL syntax), `unique (cols)`, `index <name> (cols)` and
`unique index <name> (cols)` lines; `index * (cols)` is an index whose name SCHEMA.md leaves open.
The `created_at` of lesson_attempts and user_inventory comes from the "every table" convention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ENUMS = {
    "cefr_level": ["A1", "A2", "B1", "B2", "C1", "C2"],
    "part_of_speech": ["noun", "verb", "adjective", "adverb", "pronoun", "preposition", "conjunction", "interjection", "phrase"],
    "progress_status": ["not_started", "in_progress", "completed"],
    "auth_provider": ["local", "google", "facebook", "apple"],
    "device_type": ["ios", "android", "web"],
    "lesson_type": ["lesson", "vocabulary", "grammar", "practice", "review", "test"],
    "media_type": ["image", "audio", "video"],
    "mastery_level": ["learning", "reviewing", "mastered"],
    "league_type": ["bronze", "silver", "gold", "platinum", "diamond"],
    "achievement_rarity": ["common", "rare", "epic", "legendary"],
    "transaction_type": ["earn", "spend", "purchase", "reward", "refund"],
}

ID = "id uuid NN =gen_random_uuid()"
CREATED = "created_at timestamptz NN =now()"
UPDATED = "updated_at timestamptz NN =now()"

TABLES = {
    "users": f"""
        {ID}
        email varchar(255) NN U
        username varchar(50) NN U
        hashed_password varchar(255) NN
        display_name varchar(100)
        avatar_url varchar(500)
        native_language varchar(10) NN ='vi'
        target_language varchar(10) NN ='en'
        level cefr_level NN ='A1'
        total_xp integer NN =0
        is_active boolean NN =true
        is_verified boolean NN =false
        last_login_at timestamptz
        provider auth_provider NN ='local'
        last_login_ip varchar(45)
        {CREATED}
        {UPDATED}
        check email = lower(email)
        check total_xp >= 0
    """,
    "courses": f"""
        {ID}
        title varchar(255) NN
        description text
        language varchar(10) NN
        level cefr_level NN
        total_lessons integer NN =0
        thumbnail_url varchar(500)
        is_published boolean NN =false
        tags jsonb NN ='[]'
        total_xp integer NN =0
        estimated_duration integer NN =0
        content_version integer NN =1
        {CREATED}
        {UPDATED}
        check total_lessons >= 0
        index idx_course_level_published (level, is_published)
    """,
    "lessons": f"""
        {ID}
        course_id uuid NN ->courses CASCADE
        title varchar(255) NN
        description text
        order_index integer NN
        content jsonb NN ='{{}}'
        xp_reward integer NN =10
        unit_id uuid ->units CASCADE
        prerequisite_lesson_id uuid ->lessons SET_NULL
        pass_score integer NN =80
        content_version integer NN =1
        lesson_type lesson_type NN ='lesson'
        estimated_minutes integer NN =10
        {CREATED}
        {UPDATED}
        check order_index >= 0
        check xp_reward >= 0
        check pass_score >= 0 and pass_score <= 100
        index idx_lesson_unit_order (unit_id, order_index)
    """,
    "vocabulary_items": f"""
        {ID}
        language varchar(10) NN
        word varchar(255) NN
        definition text NN
        translation jsonb NN ='{{}}'
        pronunciation varchar(100)
        audio_url varchar(500)
        part_of_speech part_of_speech NN
        difficulty_level cefr_level NN
        course_id uuid ->courses SET_NULL
        lesson_id uuid ->lessons SET_NULL
        usage_frequency integer NN =0
        tags jsonb NN ='[]'
        {CREATED}
        {UPDATED}
        unique (language, word, part_of_speech)
    """,
    "user_progress": f"""
        {ID}
        user_id uuid NN ->users CASCADE
        lesson_id uuid NN ->lessons CASCADE
        course_id uuid NN ->courses CASCADE
        status progress_status NN ='not_started'
        score integer NN =0
        completed_at timestamptz
        time_spent_seconds integer NN =0
        attempts integer NN =0
        {CREATED}
        {UPDATED}
        check score >= 0 and score <= 100
        unique (user_id, lesson_id)
    """,
    "streaks": f"""
        {ID}
        user_id uuid NN U ->users CASCADE
        current_streak integer NN =0
        longest_streak integer NN =0
        last_activity_date date
        total_days_active integer NN =0
        freeze_count integer NN =0
        {CREATED}
        {UPDATED}
        check current_streak >= 0 and current_streak <= longest_streak
        check freeze_count >= 0
    """,
    "user_devices": f"""
        {ID}
        user_id uuid NN ->users CASCADE
        device_id varchar(255) NN
        fcm_token varchar(500)
        device_type device_type NN
        device_name varchar(100)
        last_active_at timestamptz NN =now()
        {CREATED}
        unique (user_id, device_id)
    """,
    "refresh_tokens": f"""
        {ID}
        user_id uuid NN ->users CASCADE
        device_id uuid ->user_devices SET_NULL
        token_hash char(64) NN U
        is_revoked boolean NN =false
        is_used boolean NN =false
        expires_at timestamptz NN
        revoked_at timestamptz
        {CREATED}
        index * (user_id)
    """,
    "units": f"""
        {ID}
        course_id uuid NN ->courses CASCADE
        title varchar(255) NN
        description text
        order_index integer NN
        background_color varchar(20)
        icon_url varchar(500)
        total_lessons integer NN =0
        {CREATED}
        {UPDATED}
        check order_index >= 0
        index idx_unit_course_order (course_id, order_index)
    """,
    "media_resources": f"""
        {ID}
        resource_type media_type NN
        url varchar(500) NN U
        filename varchar(255) NN
        duration_seconds integer
        size_bytes bigint
        mime_type varchar(100)
        reference_count integer NN =0
        {CREATED}
        check reference_count >= 0
    """,
    "lesson_attempts": f"""
        {ID}
        user_id uuid NN ->users CASCADE
        lesson_id uuid NN ->lessons CASCADE
        started_at timestamptz NN =now()
        finished_at timestamptz
        score integer NN =0
        passed boolean NN =false
        xp_earned integer NN =0
        total_questions integer NN =0
        correct_answers integer NN =0
        hints_used integer NN =0
        lives_remaining integer NN =5
        time_spent_ms integer NN =0
        avg_response_time_ms integer NN =0
        device_type device_type
        {CREATED}
        check score >= 0 and score <= 100
        check xp_earned >= 0
        check correct_answers >= 0 and correct_answers <= total_questions
        index idx_lesson_attempt_user_lesson (user_id, lesson_id)
    """,
    "question_attempts": f"""
        {ID}
        lesson_attempt_id uuid NN ->lesson_attempts CASCADE
        question_id varchar(255) NN
        question_type varchar(50) NN
        user_answer text
        correct_answer text
        is_correct boolean NN =false
        time_spent_ms integer NN =0
        hint_used boolean NN =false
        attempt_number integer NN =1
        confidence_score real
        difficulty_rating varchar(20)
        {CREATED}
        check attempt_number >= 1
        check confidence_score >= 0 and confidence_score <= 1
        index idx_question_attempt_lesson (lesson_attempt_id, question_id)
    """,
    "user_vocab_knowledge": f"""
        {ID}
        user_id uuid NN ->users CASCADE
        vocab_id uuid NN ->vocabulary_items CASCADE
        strength real NN =0
        ease_factor real NN =2.5
        interval_days integer NN =0
        last_review_date timestamptz
        next_review_date timestamptz
        review_count integer NN =0
        consecutive_correct integer NN =0
        review_history jsonb NN ='[]'
        mastery_level mastery_level NN ='learning'
        {CREATED}
        {UPDATED}
        check strength >= 0 and strength <= 1
        check ease_factor >= 1.3
        check interval_days >= 0
        unique (user_id, vocab_id)
        index idx_vocab_knowledge_user_next_review (user_id, next_review_date)
    """,
    "daily_review_sessions": f"""
        {ID}
        user_id uuid NN ->users CASCADE
        review_date date NN
        total_words integer NN =0
        completed_words integer NN =0
        correct_count integer NN =0
        started_at timestamptz
        completed_at timestamptz
        is_completed boolean NN =false
        vocab_list jsonb NN ='[]'
        {CREATED}
        check correct_count >= 0 and correct_count <= completed_words and completed_words <= total_words
        unique index idx_daily_review_user_date (user_id, review_date)
    """,
    "achievements": f"""
        {ID}
        slug varchar(100) NN U
        name varchar(100) NN U
        description text NN
        condition_type varchar(50) NN
        condition_value integer
        condition_data jsonb NN ='{{}}'
        badge_icon varchar(500)
        badge_color varchar(20)
        category varchar(50)
        xp_reward integer NN =0
        gems_reward integer NN =0
        rarity achievement_rarity NN ='common'
        is_hidden boolean NN =false
        {CREATED}
        check xp_reward >= 0
        check gems_reward >= 0
    """,
    "user_achievements": f"""
        {ID}
        user_id uuid NN ->users CASCADE
        achievement_id uuid NN ->achievements CASCADE
        progress integer NN =0
        unlocked_at timestamptz
        is_showcased boolean NN =false
        {CREATED}
        check progress >= 0
        unique index idx_user_achievement_unique (user_id, achievement_id)
    """,
    "user_wallets": f"""
        {ID}
        user_id uuid NN U ->users CASCADE
        gems integer NN =0
        total_gems_earned integer NN =0
        total_gems_spent integer NN =0
        {CREATED}
        {UPDATED}
        check gems >= 0
        check total_gems_earned >= 0
        check total_gems_spent >= 0
        check gems = total_gems_earned - total_gems_spent
    """,
    "wallet_transactions": f"""
        {ID}
        wallet_id uuid NN ->user_wallets CASCADE
        user_id uuid NN ->users CASCADE
        transaction_type transaction_type NN
        amount integer NN
        balance_after integer NN
        source varchar(100)
        reference_id varchar(255)
        idempotency_key varchar(100)
        description text
        {CREATED}
        check amount <> 0
        check balance_after >= 0
        unique (wallet_id, idempotency_key)
        index * (wallet_id, created_at)
    """,
    "leaderboard_entries": f"""
        {ID}
        user_id uuid NN ->users CASCADE
        week_start date NN
        week_end date NN
        league league_type NN ='bronze'
        xp_earned integer NN =0
        lessons_completed integer NN =0
        current_rank integer
        is_promoted boolean NN =false
        is_demoted boolean NN =false
        {CREATED}
        {UPDATED}
        check xp_earned >= 0
        check current_rank >= 1
        check week_end = week_start + 6
        check not is_promoted and is_demoted
        unique (user_id, week_start)
        index idx_leaderboard_week_league (week_start, league)
    """,
    "user_following": f"""
        {ID}
        follower_id uuid NN ->users CASCADE
        following_id uuid NN ->users CASCADE
        {CREATED}
        check follower_id <> following_id
        unique index idx_following_unique (follower_id, following_id)
    """,
    "activity_feeds": f"""
        {ID}
        user_id uuid NN ->users CASCADE
        activity_type varchar(50) NN
        activity_data jsonb NN ='{{}}'
        message text NN
        is_public boolean NN =true
        {CREATED}
        index idx_activity_feed_public (user_id, is_public, created_at)
    """,
    "shop_items": f"""
        {ID}
        name varchar(100) NN U
        description text NN
        item_type varchar(50) NN
        price_gems integer NN
        effects jsonb NN ='{{}}'
        icon_url varchar(500)
        is_available boolean NN =true
        stock_quantity integer
        {CREATED}
        check price_gems >= 0
        check stock_quantity >= 0
    """,
    "user_inventory": f"""
        {ID}
        user_id uuid NN ->users CASCADE
        shop_item_id uuid NN ->shop_items RESTRICT
        quantity integer NN =1
        is_active boolean NN =false
        activated_at timestamptz
        expires_at timestamptz
        purchased_at timestamptz NN =now()
        {CREATED}
        check quantity >= 0
        unique (user_id, shop_item_id)
    """,
}

TYPE_NAMES = {"varchar": "character varying", "char": "character", "timestamptz": "timestamp with time zone"}


@dataclass
class Column:
    type: str
    not_null: bool
    default: str | None
    references: tuple[str, str] | None  # (table, ON DELETE action)


@dataclass
class Table:
    columns: dict[str, Column] = field(default_factory=dict)
    checks: set[str] = field(default_factory=set)
    uniques: set[tuple[str, ...]] = field(default_factory=set)
    indexes: dict[str, tuple[bool, tuple[str, ...]]] = field(default_factory=dict)
    unnamed_indexes: set[tuple[str, ...]] = field(default_factory=set)


def _columns(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.strip("() ").split(","))


def _type(token: str) -> str:
    match = re.fullmatch(r"([a-z_]+)(\(\d+\))?", token)
    base, size = match.group(1), match.group(2) or ""
    return TYPE_NAMES.get(base, base) + size


def parse(text: str) -> Table:
    table = Table()
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        if line.startswith("check "):
            table.checks.add(normalise_check(line[len("check "):]))
        elif line.startswith("unique index "):
            name, columns = line[len("unique index "):].split(" ", 1)
            table.indexes[name] = (True, _columns(columns))
            table.uniques.add(_columns(columns))
        elif line.startswith("unique "):
            table.uniques.add(_columns(line[len("unique "):]))
        elif line.startswith("index "):
            name, columns = line[len("index "):].split(" ", 1)
            if name == "*":
                table.unnamed_indexes.add(_columns(columns))
            else:
                table.indexes[name] = (False, _columns(columns))
        else:
            name, type_token, *rest = line.split()
            references = None
            if rest and rest[-1] in {"CASCADE", "SET_NULL", "RESTRICT"}:
                references = (rest[-2].removeprefix("->"), rest[-1].replace("_", " "))
                rest = rest[:-2]
            default = next((token[1:] for token in rest if token.startswith("=")), None)
            table.columns[name] = Column(_type(type_token), "NN" in rest, default, references)
            if "U" in rest:
                table.uniques.add((name,))
    return table


def normalise_check(expression: str) -> str:
    """Compare CHECK expressions modulo PostgreSQL's deparsing: parentheses, casts, case and spacing."""
    text = expression.lower().removeprefix("check")
    text = re.sub(r"::(double precision|character varying|[a-z_]+)", "", text)
    text = text.replace("(", " ").replace(")", " ")
    return " ".join(text.split())


def normalise_default(expression: str | None) -> str | None:
    """`'vi'::character varying` -> `'vi'`, `'{}'::jsonb` -> `'{}'`; functions and numbers stay."""
    if expression is None:
        return None
    return re.sub(r"::(double precision|character varying|[a-z_]+)$", "", expression.strip())


SPEC = {name: parse(text) for name, text in TABLES.items()}
