"""What an operation refuses, by the code an HTTP API returns for it."""

from __future__ import annotations

from langlearn.errors import LanglearnError


class OperationError(LanglearnError):
    """A refused operation: `code` is machine-readable (`insufficient_gems`), the message says why in one line.
    Nothing was written."""

    code = "refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Conflict(OperationError):
    """The request contradicts the data (a taken username, too few gems, no stock)."""


class Unauthorized(OperationError):
    """Bad credentials, or a token that is unknown, expired, revoked or reused."""


# --- accounts ---------------------------------------------------------------------------------------


class Taken(Conflict):
    """An email or username already belongs to an account; the message says which, never whose."""

    code = "taken"


class InvalidCredentials(Unauthorized):
    """Wrong password, unknown email or a disabled account: one message for all three, so none is revealed."""

    code = "invalid_credentials"


class TokenInvalid(Unauthorized):
    """A refresh token that is unknown, expired or revoked."""

    code = "token_invalid"


class TokenReused(Unauthorized):
    """A refresh token presented after it was used: the device's whole token chain has been revoked."""

    code = "token_reused"


# --- wallet and shop (langlearn.operations.wallet) ---


class InvalidRequest(OperationError):
    """A request that no data could satisfy (a non-positive amount, an empty idempotency key)."""

    code = "invalid_request"


class NotFound(OperationError):
    """The user or the shop item named does not exist."""

    code = "not_found"


class InsufficientGems(Conflict):
    code = "insufficient_gems"


class OutOfStock(Conflict):
    code = "out_of_stock"


class NotAvailable(Conflict):
    """A shop item withdrawn from sale (`is_available` false)."""

    code = "not_available"


class NotOwned(Conflict):
    """Activating an item the user holds none of."""

    code = "not_owned"


class NotActivatable(Conflict):
    """An item with no effect to activate (a hint pack is used in a lesson, not activated)."""

    code = "not_activatable"


class FreezeLimit(Conflict):
    """The streak already holds the most freezes allowed."""

    code = "freeze_limit"


class IdempotencyKeyReused(Conflict):
    """An idempotency key sent again with other parameters than its first request's."""

    code = "idempotency_key_reused"


# --- lessons (langlearn.operations.lessons) ---


class WeekClosed(Conflict):
    """A completion whose week the league close has already ranked (it arrived too late to count)."""

    code = "week_closed"


class LessonLocked(Conflict):
    """A lesson whose prerequisite the learner has not passed yet."""

    code = "lesson_locked"
