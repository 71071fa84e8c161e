"""The write path over HTTP: accounts and tokens (`/auth/...`), and the caller's own data (`/me/...`).

Each route is one call of a `langlearn.operations` function; its refusals become `{"error", "detail"}`
answers in `service.errors`. Every `/me/...` route acts as the bearer token's subject (`service.auth`),
so no route names the user it changes.

Cursors (`next`, `before`) are opaque to clients: the keyset position, URL-safe base64.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any, TypeVar
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from langlearn.models import UserVocabKnowledge
from langlearn.models.enums import DeviceType
from langlearn.operations import accounts, ledger, lessons, reviews, social, wallet
from langlearn.operations.errors import InvalidRequest
from service.auth import CurrentUser, issue_access_token, sign_in_throttling
from service.bodies import StrictJSONRoute
from service.errors import problems

router = APIRouter(route_class=StrictJSONRoute)

SIGNED_IN = problems(400, 401, 403)  # every /me route: a missing, invalid or expired token; a deactivated account

# no NUL: PostgreSQL text cannot hold it; `service.bodies` refuses it anywhere in a body, and this pattern says so in the schema
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
_LOCAL = r"[^@\s\x00-\x1f\x7f-\x9f]+"
EMAIL_PATTERN = rf"^{_LOCAL}@{_LOCAL}\.{_LOCAL}$"  # accounts.EMAIL_SHAPE, in terms every regex engine reads alike
# required, 1-100 characters (the ledger's and the attempts' key columns): a request without one is a 422
IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=100, pattern=r"\S",
                                       description="the client's key for this request: a retry sends it again")]


# --- bodies ------------------------------------------------------------------------------------------


class Body(BaseModel):
    """A request body: a field the API does not know is refused (422 naming it), so the schema can say
    `additionalProperties: false` and nothing a client adds is silently carried along."""

    model_config = ConfigDict(extra="forbid")


class Registration(Body):
    # no whitespace, no control character (C1 too: Python counts U+0085 as whitespace, JSON Schema's \s does not)
    email: Annotated[str, StringConstraints(pattern=EMAIL_PATTERN, max_length=accounts.EMAIL_MAX)]
    username: Annotated[str, StringConstraints(pattern=r"^[\w.-]{3,50}$")]
    password: Annotated[Text, StringConstraints(min_length=accounts.PASSWORD_MIN, max_length=accounts.PASSWORD_MAX)]


class Registered(BaseModel):
    user_id: UUID


class Credentials(Body):
    email: Annotated[Text, StringConstraints(max_length=accounts.EMAIL_MAX)]
    password: Annotated[Text, StringConstraints(max_length=accounts.PASSWORD_MAX)]
    device_id: Annotated[Text, StringConstraints(min_length=1, max_length=accounts.DEVICE_ID_MAX)]
    device_type: DeviceType


class RefreshToken(Body):
    refresh_token: Annotated[Text, StringConstraints(max_length=1000)]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class AnswerIn(Body):
    question_id: Text
    answer: Text
    time_spent_ms: Annotated[int, Field(ge=0)]
    hint_used: bool


class AttemptIn(Body):
    answers: list[AnswerIn]
    started_at: datetime
    finished_at: datetime


class AttemptOut(BaseModel):
    attempt_id: UUID
    score: int
    passed: bool
    xp_earned: int
    total_xp: int
    streak: int
    gems: int
    achievements_unlocked: list[str]


class ReviewIn(Body):
    vocab_id: UUID
    quality: Annotated[int, Field(ge=0, le=5, description="0 forgotten … 5 perfect recall")]


class ReviewOut(BaseModel):
    next_review_date: datetime
    interval_days: int
    ease_factor: float
    mastery_level: str


class PurchaseIn(Body):
    shop_item_id: UUID
    quantity: Annotated[int, Field(ge=1, le=1000)]


class PurchaseOut(BaseModel):
    gems: int
    quantity_owned: int


class ActivationOut(BaseModel):
    shop_item_id: UUID
    item_type: str
    quantity_left: int
    freeze_count: int | None
    activated_at: datetime | None
    expires_at: datetime | None


class TransactionOut(BaseModel):
    id: UUID
    transaction_type: str
    amount: int
    balance_after: int
    source: str | None
    reference_id: str | None
    description: str | None
    created_at: datetime


class WalletOut(BaseModel):
    gems: int
    total_gems_earned: int
    total_gems_spent: int
    transactions: list[TransactionOut]
    next: str | None = Field(description="`before` for the next (older) page; null on the last page")


class FeedItemOut(BaseModel):
    activity_id: UUID
    user_id: UUID
    username: str
    activity_type: str
    activity_data: dict[str, Any]
    message: str
    created_at: datetime


class DueReview(BaseModel):
    vocab_id: UUID
    word: str
    language: str
    translation: dict
    mastery_level: str
    strength: float
    next_review_date: datetime


class DueReviews(BaseModel):
    user_id: UUID
    due: int
    reviews: list[DueReview]


class MeOut(BaseModel):
    user_id: UUID


class FeedOut(BaseModel):
    items: list[FeedItemOut]
    next: str | None = Field(description="`before` for the next (older) page; null on the last page")


C = TypeVar("C")
Before = Annotated[str | None, Query(max_length=200, description="the `next` of the previous page")]


# --- accounts and tokens -----------------------------------------------------------------------------


@router.post("/auth/register", status_code=201, response_model=Registered, responses=problems(400, 409, 503))
async def register(body: Registration):
    """A new account with its welcome gems, in one transaction. A common or guessable password is 400; a username is
    compared (and stored) in its canonical form (NFKC, case folded): a look-alike of a taken one is 409."""
    user = await accounts.register(body.email, body.username, body.password)
    return Registered(user_id=user.user_id)


@router.post("/auth/token", response_model=TokenPair, responses=problems(400, 401, 429, 503))
async def sign_in(body: Credentials, request: Request):
    """Sign in on a device: a 15-minute access token and the device's new refresh token. Too many attempts for the
    account or from the address: 429 with `Retry-After`; too many passwords being hashed: 503 with `Retry-After`."""
    address = request.client.host if request.client else None
    session = await accounts.sign_in(body.email, body.password, body.device_id, body.device_type, ip=address, throttling=sign_in_throttling())
    return _pair(request, session)


@router.post("/auth/refresh", response_model=TokenPair, responses=problems(400, 401))
async def refresh(body: RefreshToken, request: Request):
    """The refresh token's successor and a new access token; a reused one revokes its device's chain (401 `token_reused`)."""
    return _pair(request, await accounts.refresh(body.refresh_token))


@router.post("/auth/logout", status_code=204, response_class=Response, responses=problems(400))
async def logout(body: RefreshToken):
    """Revoke the refresh token's device chain; always 204 (an unknown token has nothing to revoke)."""
    await accounts.logout(body.refresh_token)


def _pair(request: Request, session: accounts.Session) -> TokenPair:
    access = issue_access_token(request.app.state.signing_key, session.user_id, session.token_id, session.device_type)
    return TokenPair(access_token=access.token, refresh_token=session.refresh_token, expires_in=access.expires_in)


# --- the caller's own data ---------------------------------------------------------------------------


@router.post("/me/lessons/{lesson_id}/attempts", status_code=201, response_model=AttemptOut, responses={**SIGNED_IN, **problems(404, 409)})
async def complete_lesson(request: Request, lesson_id: UUID, body: AttemptIn, user_id: CurrentUser, idempotency_key: IdempotencyKey):
    """Record a finished lesson: score, XP, streak, gems, achievements. The same `Idempotency-Key` again
    answers the first result and writes nothing. The attempt records the signed-in device's type."""
    answers = [lessons.Answer(a.question_id, a.answer, a.time_spent_ms, a.hint_used) for a in body.answers]
    done = await lessons.complete_lesson(user_id, lesson_id, answers, body.started_at, body.finished_at, idempotency_key,
                                         device_type=request.state.device_type)
    return AttemptOut(
        attempt_id=done.attempt_id, score=done.score, passed=done.passed, xp_earned=done.xp_earned, total_xp=done.total_xp,
        streak=done.streak, gems=done.gems, achievements_unlocked=list(done.achievements_unlocked),
    )


@router.post("/me/reviews", response_model=ReviewOut, responses={**SIGNED_IN, **problems(404)})
async def review(body: ReviewIn, user_id: CurrentUser):
    """Review a word: its SM-2 schedule moves on, and the review counts in today's session."""
    reviewed = await reviews.review_word(user_id, body.vocab_id, body.quality)
    return ReviewOut(
        next_review_date=reviewed.next_review_date, interval_days=reviewed.interval_days, ease_factor=reviewed.ease_factor,
        mastery_level=reviewed.mastery_level,
    )


@router.post("/me/purchases", status_code=201, response_model=PurchaseOut, responses={**SIGNED_IN, **problems(404, 409)})
async def purchase(body: PurchaseIn, user_id: CurrentUser, idempotency_key: IdempotencyKey):
    """Buy from the shop: gems spent, stock taken, the item added to the inventory. The same
    `Idempotency-Key` again answers the same body and buys nothing more."""
    bought = await wallet.purchase(user_id, body.shop_item_id, body.quantity, idempotency_key)
    return PurchaseOut(gems=bought.gems, quantity_owned=bought.quantity_owned)


@router.post("/me/inventory/{shop_item_id}/activate", response_model=ActivationOut, responses={**SIGNED_IN, **problems(404, 409)})
async def activate(shop_item_id: UUID, user_id: CurrentUser):
    """Use one held item: a streak freeze joins the streak, a double XP boost starts (or is extended)."""
    used = await wallet.activate(user_id, shop_item_id)
    return ActivationOut(
        shop_item_id=used.shop_item_id, item_type=used.item_type, quantity_left=used.quantity_left, freeze_count=used.freeze_count,
        activated_at=used.activated_at, expires_at=used.expires_at,
    )


@router.get("/me", response_model=MeOut, responses=SIGNED_IN)
async def me(user_id: CurrentUser):
    """Who the access token is for: the cheapest authenticated request (a benchmark's floor)."""
    return MeOut(user_id=user_id)


@router.get("/me/reviews/due", response_model=DueReviews, responses=SIGNED_IN)
async def due_reviews(user_id: CurrentUser, limit: Annotated[int, Query(ge=1, le=500, description="at most this many, oldest due first")] = 50):
    """The caller's vocabulary whose next review is due (`next_review_date <= now`), oldest first."""
    due = UserVocabKnowledge.filter(user_id=user_id, next_review_date__lte=datetime.now(timezone.utc))
    rows = await due.order_by("next_review_date").limit(limit).select_related("vocab")
    return DueReviews(
        user_id=user_id,
        due=await due.count(),
        reviews=[
            DueReview(
                vocab_id=row.vocab.id,
                word=row.vocab.word,
                language=row.vocab.language,
                translation=row.vocab.translation,
                mastery_level=row.mastery_level.value,
                strength=round(row.strength, 4),  # REAL: no float32 noise in the answer
                next_review_date=row.next_review_date,
            )
            for row in rows
        ],
    )


@router.get("/me/wallet", response_model=WalletOut, responses={**SIGNED_IN, **problems(404)})
async def wallet_statement(
    user_id: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=ledger.STATEMENT_LIMIT_MAX, description="entries per page")] = ledger.STATEMENT_LIMIT_DEFAULT,
    before: Before = None,
):
    """The balance, the totals and the ledger, newest first, one page at a time."""
    cursor = _decode(before, lambda at, seq: ledger.LedgerCursor(at, _ledger_seq(seq))) if before is not None else None
    statement = await ledger.wallet_statement(user_id, limit=limit, before=cursor)
    return WalletOut(
        gems=statement.gems, total_gems_earned=statement.total_gems_earned, total_gems_spent=statement.total_gems_spent,
        transactions=[
            TransactionOut(
                id=entry.transaction_id, transaction_type=entry.transaction_type, amount=entry.amount, balance_after=entry.balance_after,
                source=entry.source, reference_id=entry.reference_id, description=entry.description, created_at=entry.created_at,
            )
            for entry in statement.transactions
        ],
        next=_encode(statement.next.created_at.isoformat(), str(statement.next.ledger_seq)) if statement.next else None,
    )


@router.put("/me/following/{user_id}", status_code=204, response_class=Response, responses={**SIGNED_IN, **problems(404)})
async def follow(user_id: UUID, me: CurrentUser):
    """Follow someone (following again changes nothing); following oneself is 400."""
    await social.follow(me, user_id)


@router.delete("/me/following/{user_id}", status_code=204, response_class=Response, responses=SIGNED_IN)
async def unfollow(user_id: UUID, me: CurrentUser):
    """Stop following someone; a follow that does not exist is no error."""
    await social.unfollow(me, user_id)


@router.get("/me/feed", response_model=FeedOut, responses=SIGNED_IN)
async def feed(
    me: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=social.FEED_LIMIT_MAX, description="events per page")] = social.FEED_LIMIT_DEFAULT,
    before: Before = None,
):
    """The public activity of the people followed, newest first, one page at a time."""
    cursor = _decode(before, lambda at, activity: social.FeedCursor(at, UUID(activity))) if before is not None else None
    page = await social.feed(me, limit=limit, before=cursor)
    return FeedOut(
        items=[
            FeedItemOut(
                activity_id=item.activity_id, user_id=item.user_id, username=item.username, activity_type=item.activity_type,
                activity_data=item.activity_data, message=item.message, created_at=item.created_at,
            )
            for item in page.items
        ],
        next=_encode(page.next.created_at.isoformat(), str(page.next.activity_id)) if page.next else None,
    )


# --- helpers -----------------------------------------------------------------------------------------


def _encode(*parts: str) -> str:
    return base64.urlsafe_b64encode("|".join(parts).encode()).decode().rstrip("=")


def _ledger_seq(text: str) -> int:
    seq = int(text)
    if not 0 < seq < 2**63:  # a bigint sequence's values
        raise ValueError(text)
    return seq


def _decode(cursor: str, make: Callable[[datetime, str], C]) -> C:
    """The keyset position of a cursor made by `_encode`: `make(its time, its tie-break)`; anything else is 400."""
    try:
        at, tie = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError(at)
        # in UTC here, so that a time the driver could not convert (9999-12-31T23:59-01:00 is past year 9999 in UTC) is refused now
        return make(when.astimezone(timezone.utc), tie)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("`before` is not a cursor this API returned (use a page's `next`)") from None
