"""Accounts: who learns, and how they sign in."""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint
from tortoise.timezone import now as utcnow

from langlearn.models.base import NOW, ExpressionIndex, FixedCharField, TimestampedModel, UUIDModel, counter, flag
from langlearn.models.enums import AuthProvider, CefrLevel, DeviceType, NativeEnumField


class User(TimestampedModel):
    """A learner's account.

    `email` is stored lower-cased (a CHECK enforces it) so uniqueness is case-insensitive without a
    functional index. `username` is NFKC-normalised (a CHECK enforces it: no fullwidth or compatibility
    look-alike of another name) and unique regardless of case; `langlearn.operations.accounts` stores it
    case folded, so that UNIQUE compares exactly what Python's NFKC + casefold compares.
    `hashed_password` holds a slow hash (argon2), never a password. `total_xp` is
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
    provider = NativeEnumField(AuthProvider, default=AuthProvider.LOCAL, db_default=AuthProvider.LOCAL)
    last_login_ip = fields.CharField(max_length=45, null=True, description="IPv4 or IPv6, as text")

    class Meta:
        table = "users"
        constraints = (
            CheckConstraint(check="email = lower(email)", name="users_email_check"),
            CheckConstraint(check="total_xp >= 0", name="users_total_xp_check"),
            CheckConstraint(check="username IS NFKC NORMALIZED", name="users_username_nfkc_check"),
            # usernames that differ only by case would be two accounts a person cannot tell apart
            ExpressionIndex("idx_users_username_lower", ("lower(username::text)",), unique=True),
        )

    def __str__(self) -> str:
        return self.username


class UserDevice(UUIDModel):
    """A phone or browser a user signed in from; `device_id` is the client's own identifier.

    `fcm_token` is the push-notification address of the device, when it granted one.
    """

    device_id = fields.CharField(max_length=255, description="the client's own identifier")
    fcm_token = fields.CharField(max_length=500, null=True)
    device_type = NativeEnumField(DeviceType)
    device_name = fields.CharField(max_length=100, null=True)
    last_active_at = fields.DatetimeField(default=utcnow, db_default=NOW)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="devices", on_delete=fields.CASCADE
    )

    class Meta:
        table = "user_devices"
        constraints = (UniqueConstraint(fields=("user_id", "device_id"), name="user_devices_user_id_device_id_key"),)


class RefreshToken(UUIDModel):
    """A refresh token issued to a user, stored only as the SHA-256 hex digest of the token.

    A token is single-use (`is_used`) and can be revoked early; it outlives the device it was
    issued to (the device reference is then cleared).
    """

    token_hash = FixedCharField(max_length=64, unique=True, description="SHA-256 hex of the token")
    is_revoked = flag(False)
    is_used = flag(False)
    expires_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="refresh_tokens", on_delete=fields.CASCADE
    )
    device: fields.ForeignKeyNullableRelation[UserDevice] = fields.ForeignKeyField(
        "models.UserDevice", related_name="refresh_tokens", null=True, on_delete=fields.SET_NULL
    )

    class Meta:
        table = "refresh_tokens"
        constraints = (CheckConstraint(check="token_hash ~ '^[0-9a-f]{64}$'", name="refresh_tokens_token_hash_check"),)
        indexes = (
            Index(fields=("user_id",), name="idx_refresh_token_user"),
            Index(fields=("device_id",), name="idx_refresh_token_device"),  # deleting a device sets its tokens' device_id NULL
        )


class SignInThrottle(UUIDModel):
    """Sign-in attempts counted per throttling key, shared by every worker and replica of a service.

    A key is `account:<sha256 of the email>` or `address:<client address>` (`langlearn.operations.throttle`).

    `blocked_until`: attempts before it are refused. A row idle past the throttling's window is worthless and
    pruned by the sign-ins themselves (on `last_attempt_at`'s index)."""

    key = fields.CharField(max_length=100, unique=True, description="account:<sha256 hex> or address:<IP or IPv6 /64>")
    attempts = counter()
    last_attempt_at = fields.DatetimeField(default=utcnow, db_default=NOW)
    blocked_until = fields.DatetimeField(null=True)

    class Meta:
        table = "sign_in_throttles"
        constraints = (CheckConstraint(check="attempts >= 0", name="sign_in_throttles_attempts_check"),)
        indexes = (Index(fields=("last_attempt_at",), name="idx_sign_in_throttle_last_attempt"),)
