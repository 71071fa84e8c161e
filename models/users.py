"""Accounts: who learns, and how they sign in."""

from __future__ import annotations

from tortoise import fields
from tortoise.migrations.constraints import CheckConstraint

from models.base import TimestampedModel, counter, flag
from models.enums import CefrLevel, NativeEnumField


class User(TimestampedModel):
    """A learner's account.

    `email` is stored lower-cased (a CHECK enforces it) so uniqueness is case-insensitive without a
    functional index. `hashed_password` holds a slow hash (argon2), never a password. `total_xp` is
    derived: the XP of the user's lesson attempts plus the XP rewards of unlocked achievements.
    """

    email = fields.CharField(max_length=255, unique=True)
    username = fields.CharField(max_length=50, unique=True)
    hashed_password = fields.CharField(max_length=255, description="a slow password hash, never a password")
    display_name = fields.CharField(max_length=100, null=True)
    avatar_url = fields.CharField(max_length=500, null=True)
    native_language = fields.CharField(max_length=10, default="vi", db_default="vi")
    target_language = fields.CharField(max_length=10, default="en", db_default="en")
    level = NativeEnumField(CefrLevel, default=CefrLevel.A1, db_default=CefrLevel.A1)
    total_xp = counter()
    is_active = flag(True)
    is_verified = flag(False)
    last_login_at = fields.DatetimeField(null=True)

    class Meta:
        table = "users"
        constraints = (
            CheckConstraint(check="email = lower(email)", name="users_email_check"),
            CheckConstraint(check="total_xp >= 0", name="users_total_xp_check"),
        )

    def __str__(self) -> str:
        return self.username
