"""Gamification and social: achievements, the gem wallet and shop, weekly leagues, follows and feeds."""

from __future__ import annotations

from tortoise import fields
from tortoise.fields.db_defaults import SqlDefault
from tortoise.indexes import Index
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint
from tortoise.timezone import now as utcnow

from langlearn.models.base import NOW, CompositeForeignKey, MonthlyPartitions, TimestampedModel, UUIDModel, counter, flag, json_object
from langlearn.models.enums import AchievementRarity, LeagueType, NativeEnumField, TransactionType
from langlearn.models.users import User


class Achievement(UUIDModel):
    """An entry of the achievements catalogue: what to do (`condition_type` reaching
    `condition_value`) and what it pays (`xp_reward`, `gems_reward`).

    Hidden achievements are not listed until unlocked.
    """

    slug = fields.CharField(max_length=100, unique=True)
    name = fields.CharField(max_length=100, unique=True)
    description = fields.TextField()
    condition_type = fields.CharField(
        max_length=50,
        description="lesson_complete, reach_streak, vocab_mastered, xp_earned, perfect_score, course_complete, ...",
    )
    condition_value = fields.IntField(null=True)
    condition_data = json_object()
    badge_icon = fields.CharField(max_length=500, null=True)
    badge_color = fields.CharField(max_length=20, null=True)
    category = fields.CharField(max_length=50, null=True)
    xp_reward = counter()
    gems_reward = counter()
    rarity = NativeEnumField(AchievementRarity, default=AchievementRarity.COMMON, db_default=AchievementRarity.COMMON)
    is_hidden = flag(False)

    class Meta:
        table = "achievements"
        constraints = (
            CheckConstraint(check="xp_reward >= 0", name="achievements_xp_reward_check"),
            CheckConstraint(check="gems_reward >= 0", name="achievements_gems_reward_check"),
        )

    def __str__(self) -> str:
        return self.name


class UserAchievement(UUIDModel):
    """A user's progress towards one achievement; unlocked once `unlocked_at` is set."""

    progress = counter()
    unlocked_at = fields.DatetimeField(null=True, description="NULL while in progress")
    is_showcased = flag(False)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="achievements", on_delete=fields.CASCADE
    )
    achievement: fields.ForeignKeyRelation[Achievement] = fields.ForeignKeyField(
        "models.Achievement", related_name="holders", on_delete=fields.CASCADE
    )

    class Meta:
        table = "user_achievements"
        constraints = (
            CheckConstraint(check="progress >= 0", name="user_achievements_progress_check"),
            UniqueConstraint(fields=("user_id", "achievement_id"), name="idx_user_achievement_unique"),
        )
        indexes = (Index(fields=("achievement_id",), name="idx_user_achievement_achievement"),)  # deleting an achievement


class UserWallet(TimestampedModel):
    """A user's gem balance (one wallet per user).

    `gems` always equals the sum of the wallet's transactions and `total_gems_earned -
    total_gems_spent`; gems are integers, never floats.
    """

    gems = counter()
    total_gems_earned = counter()
    total_gems_spent = counter()
    user: fields.OneToOneRelation[User] = fields.OneToOneField(
        "models.User", related_name="wallet", on_delete=fields.CASCADE
    )

    class Meta:
        table = "user_wallets"
        constraints = (
            CheckConstraint(check="gems >= 0", name="user_wallets_gems_check"),
            CheckConstraint(check="total_gems_earned >= 0", name="user_wallets_total_gems_earned_check"),
            CheckConstraint(check="total_gems_spent >= 0", name="user_wallets_total_gems_spent_check"),
            CheckConstraint(check="gems = total_gems_earned - total_gems_spent", name="user_wallets_balance_check"),
            # what wallet_transactions reference with (wallet_id, user_id): an entry's user is its wallet's user
            UniqueConstraint(fields=("id", "user_id"), name="idx_user_wallet_id_user"),
        )


class WalletTransaction(UUIDModel):
    """One entry of a wallet's ledger: a signed `amount` (+ earns, - spends) and the balance after it.

    In ledger order, `(created_at, ledger_seq)`, each `balance_after` is the running sum of `amount`.
    Entries written in one transaction share `created_at` (`now()` is the transaction's start);
    `ledger_seq`, drawn from a sequence at insert, orders them as they were written. A writer holds
    the wallet row (FOR UPDATE) and writes `created_at = greatest(now(), the wallet's newest)`: two
    transactions may start in one order and take the lock in the other (langlearn.operations.wallet).
    A client retrying a request sends the same `idempotency_key`, which is unique per wallet. Keys live in two
    spaces: a client's never contains ':'; a key with ':' is the server's own, `<source>:<reference>`
    (`league_promotion:2026-12-07`), and only an entry of that source may carry it (a CHECK), so no client
    request can take the key of a reward the server will pay. `request_digest` is what a purchase stores to
    recognise its retry (the item and quantity asked for); NULL for other entries and for older ones.
    """

    transaction_type = NativeEnumField(TransactionType)
    amount = fields.IntField(description="signed: + earns, - spends")
    balance_after = fields.IntField()
    source = fields.CharField(max_length=100, null=True)
    reference_id = fields.CharField(max_length=255, null=True)
    idempotency_key = fields.CharField(max_length=100, null=True)
    description = fields.TextField(null=True)
    request_digest = fields.CharField(max_length=64, null=True, description="a purchase's request (SHA-256 hex), matched by its retry")
    ledger_seq = fields.BigIntField(
        db_default=SqlDefault("nextval('wallet_transactions_ledger_seq'::regclass)"),
        description="insert order: breaks ties of created_at within one transaction",
    )
    wallet: fields.ForeignKeyRelation[UserWallet] = fields.ForeignKeyField(
        "models.UserWallet", related_name="transactions", on_delete=fields.CASCADE
    )
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="wallet_transactions", on_delete=fields.CASCADE
    )

    class Meta:
        table = "wallet_transactions"
        constraints = (
            CheckConstraint(check="amount <> 0", name="wallet_transactions_amount_check"),
            CheckConstraint(check="balance_after >= 0", name="wallet_transactions_balance_after_check"),
            # a key with ':' is the server's own, in its entry's source's namespace: no client key can take it
            CheckConstraint(
                check="strpos(idempotency_key, ':') = 0 OR (source IS NOT NULL AND starts_with(idempotency_key, source || ':'))",
                name="wallet_transactions_idempotency_key_check",
            ),
            # an entry's user is its wallet's user (user_id is kept beside wallet_id for the per-user reads)
            CompositeForeignKey(
                "wallet_transactions_wallet_id_user_id_fkey", ("wallet_id", "user_id"), "user_wallets", ("id", "user_id")
            ),
            UniqueConstraint(
                fields=("wallet_id", "idempotency_key"), name="wallet_transactions_wallet_id_idempotency_key_key"
            ),
        )
        indexes = (
            Index(fields=("wallet_id", "created_at"), name="idx_wallet_transaction_wallet_created"),
            # a user's transactions, and deleting a user (the cascade looks them up by user_id)
            Index(fields=("user_id", "created_at"), name="idx_wallet_transaction_user_created"),
        )


class LeaderboardEntry(TimestampedModel):
    """A user's standing in a weekly league (one row per user and week, Monday to Sunday UTC).

    `xp_earned` is the XP of the user's lesson attempts started that week; `current_rank` is
    1..n by XP within (week_start, league). At the week's end a user is promoted or demoted, not both.
    """

    week_start = fields.DateField(description="a Monday")
    week_end = fields.DateField(description="the Sunday after week_start")
    league = NativeEnumField(LeagueType, default=LeagueType.BRONZE, db_default=LeagueType.BRONZE)
    xp_earned = counter()
    lessons_completed = counter()
    current_rank = fields.IntField(null=True)
    is_promoted = flag(False)
    is_demoted = flag(False)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="leaderboard_entries", on_delete=fields.CASCADE
    )

    class Meta:
        table = "leaderboard_entries"
        constraints = (
            CheckConstraint(check="xp_earned >= 0", name="leaderboard_entries_xp_earned_check"),
            CheckConstraint(check="current_rank >= 1", name="leaderboard_entries_current_rank_check"),
            CheckConstraint(check="week_end = week_start + 6", name="leaderboard_entries_week_check"),
            CheckConstraint(check="NOT (is_promoted AND is_demoted)", name="leaderboard_entries_promotion_check"),
            CheckConstraint(check="EXTRACT(isodow FROM week_start) = 1", name="leaderboard_entries_week_start_check"),  # weeks start on Monday
            UniqueConstraint(fields=("user_id", "week_start"), name="leaderboard_entries_user_id_week_start_key"),
        )
        indexes = (
            Index(fields=("week_start", "league"), name="idx_leaderboard_week_league"),  # SCHEMA.md's; the next one covers it
            # a league page and a week's ranking: one week, one league, read in XP order without a sort
            Index(fields=("week_start", "league", "xp_earned"), name="idx_leaderboard_week_league_xp"),
        )


class LeagueWeek(UUIDModel):
    """A closed league week: the durable week-closed marker, one row per Monday, written by the close.

    `leagues.close_week` inserts the row in the transaction that ranks the week, so "closed" is this row, not a
    state derived from ranks, flags and rewards (which cannot tell a closed week with no promotion from an unclosed
    one), and the lesson path asks whether its week is closed by reading one row by its unique `week_start` rather
    than another learner's entry. SCHEMA.md has no such table; it is added for those two reasons and because it
    shards well: under Citus it is a reference table (a small table read by every learner's transaction, written
    once a week), see docs/scale-out.md. It follows SCHEMA.md's conventions for every table (`id`, `created_at`);
    `created_at` is when the week was closed: the close's transaction (for weeks closed before the table existed,
    the upgrade that recognised them: migration 14).
    """

    week_start = fields.DateField(unique=True, description="the week's Monday")

    class Meta:
        table = "league_weeks"
        constraints = (
            CheckConstraint(check="EXTRACT(isodow FROM week_start) = 1", name="league_weeks_week_start_check"),  # weeks start on Monday
        )


class UserFollowing(UUIDModel):
    """`follower` follows `following`; nobody follows themselves, and nobody twice."""

    follower: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="following", on_delete=fields.CASCADE
    )
    following: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="followers", on_delete=fields.CASCADE
    )

    class Meta:
        table = "user_following"
        constraints = (
            CheckConstraint(check="follower_id <> following_id", name="user_following_not_self_check"),
            UniqueConstraint(fields=("follower_id", "following_id"), name="idx_following_unique"),
        )
        # "who follows me" from the index alone, and deleting a user (the cascade on following_id)
        indexes = (Index(fields=("following_id", "follower_id"), name="idx_following_following"),)


class ActivityFeed(UUIDModel):
    """An event in a user's activity feed ("finished a lesson", "reached a 30-day streak").

    History that grows every day: partitioned by month of `created_at` (`MonthlyPartitions`), so old
    months retire by detaching a partition instead of a DELETE. The database's primary key is
    (id, created_at), because PostgreSQL wants the partition key in every unique key; the model's pk
    stays `id` (a uuid4, unique on its own, by which the ORM reads and updates a row), and nothing
    references this table.
    """

    activity_type = fields.CharField(max_length=50)
    activity_data = json_object()
    message = fields.TextField()
    is_public = flag(True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="activities", on_delete=fields.CASCADE
    )

    class Meta:
        table = "activity_feeds"
        # by month of created_at; the database's primary key is (id, created_at): see the docstring
        constraints = (MonthlyPartitions(),)
        # a profile's public feed, newest first
        indexes = (Index(fields=("user_id", "is_public", "created_at"), name="idx_activity_feed_public"),)


class ShopItem(UUIDModel):
    """Something gems buy (a streak freeze, double XP, a hint pack...); `effects` says what it does.

    `stock_quantity` NULL means unlimited.
    """

    name = fields.CharField(max_length=100, unique=True)
    description = fields.TextField()
    item_type = fields.CharField(max_length=50, description="streak_freeze, double_xp, hint_pack, ...")
    price_gems = fields.IntField()
    effects = json_object()
    icon_url = fields.CharField(max_length=500, null=True)
    is_available = flag(True)
    stock_quantity = fields.IntField(null=True, description="NULL = unlimited")

    class Meta:
        table = "shop_items"
        constraints = (
            CheckConstraint(check="price_gems >= 0", name="shop_items_price_gems_check"),
            CheckConstraint(check="stock_quantity >= 0", name="shop_items_stock_quantity_check"),
        )

    def __str__(self) -> str:
        return self.name


class UserInventory(UUIDModel):
    """How many of one shop item a user holds (one row per user and item), and whether one is active.

    A shop item that someone holds cannot be deleted (RESTRICT): retire it with `is_available`.
    `created_at` follows the table convention beside `purchased_at` (the first purchase).
    """

    quantity = counter(1)
    is_active = flag(False)
    activated_at = fields.DatetimeField(null=True)
    expires_at = fields.DatetimeField(null=True)
    purchased_at = fields.DatetimeField(default=utcnow, db_default=NOW)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="inventory", on_delete=fields.CASCADE
    )
    shop_item: fields.ForeignKeyRelation[ShopItem] = fields.ForeignKeyField(
        "models.ShopItem", related_name="holdings", on_delete=fields.RESTRICT
    )

    class Meta:
        table = "user_inventory"
        constraints = (
            CheckConstraint(check="quantity >= 0", name="user_inventory_quantity_check"),
            UniqueConstraint(fields=("user_id", "shop_item_id"), name="user_inventory_user_id_shop_item_id_key"),
        )
        indexes = (Index(fields=("shop_item_id",), name="idx_user_inventory_item"),)  # deleting a shop item checks RESTRICT here
