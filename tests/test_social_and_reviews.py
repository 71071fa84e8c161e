"""Following, the activity feed and vocabulary reviews (langlearn.operations.social, .reviews) on a real PostgreSQL, races included."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest

from langlearn import rules
from langlearn.operations import reviews, social
from langlearn.operations.errors import InvalidRequest, NotFound
from langlearn.startup import database
from langlearn.verify import check_invariants

pytestmark = pytest.mark.clock  # reviews happen now, and their day is today's
POOL = 10  # the Tortoise pool: enough connections for every racer to hold its own


def pooled(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}maxsize={POOL}"


async def new_user(connection, name: str) -> UUID:
    return await connection.fetchval(
        "INSERT INTO users (email, username, hashed_password) VALUES ($1, $2, '$argon2id$x') RETURNING id", f"{name}@example.com", name
    )


async def new_activity(connection, user: UUID, at: datetime, kind: str = "joined", public: bool = True) -> UUID:
    return await connection.fetchval(
        """INSERT INTO activity_feeds (user_id, activity_type, activity_data, message, is_public, created_at)
           VALUES ($1, $2, $3::jsonb, $4, $5, $6) RETURNING id""", user, kind, json.dumps({"n": 1}), f"{kind} message", public, at,
    )


async def assert_consistent(connection) -> None:
    findings = await check_invariants(connection)
    assert findings == [], [f.message for f in findings]


def recent() -> datetime:
    """A moment a minute ago from which the test's reviews (30 seconds of them) stay on one UTC day and in the past:
    when midnight falls in those 30 seconds, the last half minute of yesterday instead (today's first moment is not:
    in the first 30 seconds of a day, its reviews would lie in the future)."""
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=60)
    midnight = (start + timedelta(seconds=30)).replace(hour=0, minute=0, second=0)
    return start if start >= midnight else midnight - timedelta(seconds=31)


# --- follow and unfollow -----------------------------------------------------------------------------

async def test_follow_and_unfollow_are_idempotent(head_db, connect):
    connection = await connect(head_db)
    ann, bob = await new_user(connection, "ann"), await new_user(connection, "bob")
    follows = "SELECT follower_id, following_id FROM user_following ORDER BY created_at"
    async with database(head_db, migrate="check", global_fallback=False):
        assert await social.follow(ann, bob) == social.FollowResult(ann, bob, changed=True)
        assert await social.follow(ann, bob) == social.FollowResult(ann, bob, changed=False)
        assert [tuple(r) for r in await connection.fetch(follows)] == [(ann, bob)]
        assert (await social.follow(bob, ann)).changed
        assert await social.unfollow(ann, bob) == social.FollowResult(ann, bob, changed=True)
        assert await social.unfollow(ann, bob) == social.FollowResult(ann, bob, changed=False)
        assert [tuple(r) for r in await connection.fetch(follows)] == [(bob, ann)]
        assert (await social.follow(ann, bob)).changed  # following again after unfollowing


async def test_follow_refusals_write_nothing(head_db, connect):
    connection = await connect(head_db)
    ann = await new_user(connection, "ann")
    async with database(head_db, migrate="check", global_fallback=False):
        with pytest.raises(InvalidRequest) as refused:
            await social.follow(ann, ann)
        assert refused.value.code == "invalid_request"
        with pytest.raises(NotFound):
            await social.follow(ann, uuid4())
        with pytest.raises(NotFound):
            await social.follow(uuid4(), ann)
        assert not (await social.unfollow(ann, uuid4())).changed
    assert await connection.fetchval("SELECT count(*) FROM user_following") == 0


async def test_concurrent_follows_insert_once(head_db, connect):
    connection = await connect(head_db)
    ann, bob = await new_user(connection, "ann"), await new_user(connection, "bob")
    async with database(pooled(head_db), migrate="check", global_fallback=False):
        results = await asyncio.gather(*(social.follow(ann, bob) for _ in range(8)))
    assert sum(r.changed for r in results) == 1
    assert await connection.fetchval("SELECT count(*) FROM user_following") == 1


# --- the feed ------------------------------------------------------------------------------------------

async def test_feed_is_the_followed_public_events_newest_first_paginated(head_db, connect):
    connection = await connect(head_db)
    ann, bob, cat, dan = [await new_user(connection, name) for name in ("ann", "bob", "cat", "dan")]
    t = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    expected = [
        await new_activity(connection, bob, t),
        await new_activity(connection, cat, t + timedelta(minutes=1), "streak_milestone"),
        await new_activity(connection, bob, t + timedelta(minutes=2)),
        await new_activity(connection, cat, t + timedelta(minutes=2)),  # a tie, broken by id
        await new_activity(connection, bob, t + timedelta(minutes=2)),
        await new_activity(connection, cat, t + timedelta(minutes=3)),
    ]
    private = await new_activity(connection, bob, t + timedelta(minutes=4), public=False)
    await new_activity(connection, dan, t + timedelta(minutes=5))  # not followed
    await new_activity(connection, ann, t + timedelta(minutes=6))  # ann's own
    rows = {r["id"]: r for r in await connection.fetch("SELECT id, created_at FROM activity_feeds")}
    expected.sort(key=lambda i: (rows[i]["created_at"], i), reverse=True)
    async with database(head_db, migrate="check", global_fallback=False):
        await social.follow(ann, bob)
        await social.follow(ann, cat)
        await social.follow(bob, dan)  # someone else's follow adds nothing to ann's feed
        seen: list[social.FeedItem] = []
        page = await social.feed(ann, limit=4)
        pages = 1
        seen += page.items
        while page.next is not None:
            page = await social.feed(ann, limit=4, before=page.next)
            seen += page.items
            pages += 1
        whole = await social.feed(ann)
        own = await social.own_feed(bob)
        nobody = await social.feed(dan)
        with pytest.raises(InvalidRequest):
            await social.feed(ann, limit=0)
    assert [item.activity_id for item in seen] == expected and pages == 2
    assert [item.activity_id for item in whole.items] == expected and whole.next is None
    first = next(item for item in seen if item.activity_id == expected[-1])
    assert (first.user_id, first.username, first.activity_type, first.activity_data, first.message, first.is_public, first.created_at) == (
        bob, "bob", "joined", {"n": 1}, "joined message", True, t)
    assert private in [item.activity_id for item in own.items] and {item.user_id for item in own.items} == {bob}
    assert len(own.items) == 4 and own.items[0].activity_id == private
    assert nobody == social.FeedPage((), None)


async def test_feed_page_boundary_on_exact_limit(head_db, connect):
    connection = await connect(head_db)
    ann, bob = await new_user(connection, "ann"), await new_user(connection, "bob")
    t = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    for minute in range(3):
        await new_activity(connection, bob, t + timedelta(minutes=minute))
    async with database(head_db, migrate="check", global_fallback=False):
        await social.follow(ann, bob)
        page = await social.feed(ann, limit=3)
    assert len(page.items) == 3 and page.next is None  # no empty last page


# --- reviews -------------------------------------------------------------------------------------------

async def some_words(connection, n: int) -> list[UUID]:
    return [r["id"] for r in await connection.fetch("SELECT id FROM vocabulary_items ORDER BY id LIMIT $1", n)]


TAUGHT_BEFORE = timedelta(minutes=5)  # how long before `recent()` the words of `taught_words` were taught, due at once


async def taught_words(connection, user: UUID, n: int) -> list[UUID]:
    """`n` words taught to `user` as a lesson's first pass teaches them (lessons.WRITE_EFFECTS): a fresh row, due at once."""
    words = await some_words(connection, n)
    await connection.execute(
        "INSERT INTO user_vocab_knowledge (user_id, vocab_id, next_review_date) SELECT $1, unnest($2::uuid[]), $3",
        user, words, recent() - TAUGHT_BEFORE)
    return words


async def knowledge(connection, user: UUID, word: UUID):
    return await connection.fetchrow("SELECT * FROM user_vocab_knowledge WHERE user_id = $1 AND vocab_id = $2", user, word)


def assert_state(row, state: rules.MemoryState) -> None:
    assert (round(row["ease_factor"], 4), row["interval_days"], row["consecutive_correct"], row["review_count"],
            row["last_review_date"], row["next_review_date"]) == (
        state.easiness, state.interval, state.repetitions, state.reviews, state.last_review, state.due)
    assert row["mastery_level"] == rules.mastery_level(state)
    assert row["strength"] == pytest.approx(rules.memory_strength(state, state.last_review))


async def test_a_first_review_and_an_early_second_follow_the_rule_book(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_user(connection, "reviewer")
    (word,) = await taught_words(connection, user, 1)
    t1 = recent()
    t2 = t1 + timedelta(seconds=20)
    async with database(seeded_db, migrate="check", global_fallback=False):
        first = await reviews.review_word(user, word, 4, when=t1)
        state1 = rules.review(rules.MemoryState(due=t1 - TAUGHT_BEFORE), 4, t1)
        assert first == reviews.ReviewResult(state1.due, state1.interval, state1.easiness, rules.mastery_level(state1))
        row = await knowledge(connection, user, word)
        assert_state(row, state1)
        assert json.loads(row["review_history"]) == [{"at": t1.isoformat(timespec="seconds"), "quality": 4, "interval": state1.interval}]

        second = await reviews.review_word(user, word, 5, when=t2)  # before the word is due: counted, not scheduled
        state2 = rules.review(state1, 5, t2)
        assert (state2.interval, state2.due, state2.reviews, state2.last_review) == (state1.interval, state1.due, 2, t2)
        assert second == reviews.ReviewResult(state2.due, state2.interval, state2.easiness, rules.mastery_level(state2))
        row = await knowledge(connection, user, word)
        assert_state(row, state2)
        assert len(json.loads(row["review_history"])) == 2
    await assert_consistent(connection)


async def test_a_word_reviewed_perfectly_again_and_again_keeps_being_scheduled_at_most_the_maximum_interval(seeded_db, connect):
    """The 14th perfect review in a row overflowed SM-2's calendar: that review and every later one of the word failed."""
    connection = await connect(seeded_db)
    user = await new_user(connection, "perfectionist")
    (word,) = await taught_words(connection, user, 1)
    start = recent()
    async with database(seeded_db, migrate="check", global_fallback=False):
        for number in range(20):
            when = start + timedelta(seconds=number)
            # due again, as if its interval had passed (the reviews of a century, a second apart)
            await connection.execute("UPDATE user_vocab_knowledge SET next_review_date = $3 WHERE user_id = $1 AND vocab_id = $2", user, word, when)
            result = await reviews.review_word(user, word, 5, when=when)
    assert result.interval_days == rules.MAX_INTERVAL_DAYS
    row = await knowledge(connection, user, word)
    assert (row["interval_days"], row["review_count"]) == (rules.MAX_INTERVAL_DAYS, 20)
    assert row["next_review_date"] == row["last_review_date"] + timedelta(days=rules.MAX_INTERVAL_DAYS)
    await assert_consistent(connection)


async def test_a_seeded_word_continues_from_its_stored_state(seeded_db, connect):
    connection = await connect(seeded_db)
    row = await connection.fetchrow("SELECT * FROM user_vocab_knowledge WHERE review_count >= 3 ORDER BY id LIMIT 1")
    before = rules.MemoryState(round(row["ease_factor"], 4), row["interval_days"], row["consecutive_correct"], row["review_count"],
                               row["last_review_date"], row["next_review_date"])
    at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=5)
    async with database(seeded_db, migrate="check", global_fallback=False):
        await reviews.review_word(row["user_id"], row["vocab_id"], 2, when=at)
    after = await knowledge(connection, row["user_id"], row["vocab_id"])
    assert_state(after, rules.review(before, 2, at))
    assert json.loads(after["review_history"])[:-1] == json.loads(row["review_history"])
    await assert_consistent(connection)


async def test_the_days_session_counts_each_word_once(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_user(connection, "sessions")
    w1, w2 = await taught_words(connection, user, 2)
    t = recent()
    async with database(seeded_db, migrate="check", global_fallback=False):
        await reviews.review_word(user, w1, 4, when=t)
        await reviews.review_word(user, w2, 1, when=t + timedelta(seconds=10))
        await reviews.review_word(user, w1, 5, when=t + timedelta(seconds=20))  # again: rescheduled, not counted twice
        await reviews.review_word(user, w2, 5, when=t + timedelta(seconds=30))
    sessions = await connection.fetch("SELECT * FROM daily_review_sessions WHERE user_id = $1", user)
    assert len(sessions) == 1
    session = sessions[0]
    assert (session["review_date"], session["total_words"], session["completed_words"], session["correct_count"], session["is_completed"],
            session["started_at"], session["completed_at"]) == (rules.activity_day(t), 2, 2, 1, True, t, t + timedelta(seconds=30))
    assert json.loads(session["vocab_list"]) == [str(w1), str(w2)]
    assert (await knowledge(connection, user, w1))["review_count"] == 2
    await assert_consistent(connection)


async def test_review_refusals_write_nothing(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_user(connection, "refused")
    word, untaught = await some_words(connection, 2)
    await connection.execute("INSERT INTO user_vocab_knowledge (user_id, vocab_id) VALUES ($1, $2)", user, word)
    async with database(seeded_db, migrate="check", global_fallback=False):
        for quality in (-1, 6):
            with pytest.raises(InvalidRequest):
                await reviews.review_word(user, word, quality)
        with pytest.raises(InvalidRequest):
            await reviews.review_word(user, word, 3, when=datetime.now(timezone.utc) + timedelta(hours=1))
        with pytest.raises(InvalidRequest):
            await reviews.review_word(user, word, 3, when=datetime(2026, 1, 1))  # naive
        with pytest.raises(NotFound) as missing:
            await reviews.review_word(user, uuid4(), 3)
        assert missing.value.code == "not_found" and "vocabulary item" in missing.value.detail
        with pytest.raises(NotFound) as missing:
            await reviews.review_word(uuid4(), word, 3)
        assert "user" in missing.value.detail
        with pytest.raises(NotFound) as missing:  # a word no lesson taught this learner: the first review created its row
            await reviews.review_word(user, untaught, 5)
        assert "not among the learner's words" in missing.value.detail
        now = datetime.now(timezone.utc)
        await reviews.review_word(user, word, 3, when=now)
        with pytest.raises(InvalidRequest):
            await reviews.review_word(user, word, 3, when=now - timedelta(minutes=1))  # before the last review
    assert await connection.fetchval("SELECT count(*) FROM user_vocab_knowledge WHERE user_id = $1", user) == 1
    assert await connection.fetchval("SELECT review_count FROM user_vocab_knowledge WHERE user_id = $1", user) == 1
    assert await connection.fetchval("SELECT completed_words FROM daily_review_sessions WHERE user_id = $1", user) == 1


async def test_concurrent_reviews_of_one_word_serialise(seeded_db, connect):
    connection = await connect(seeded_db)
    user = await new_user(connection, "racer")
    words = await taught_words(connection, user, 4)
    async with database(pooled(seeded_db), migrate="check", global_fallback=False):
        # a first review racing a first review (the row's creation), then reviews of a known word, and other words alongside
        await asyncio.gather(reviews.review_word(user, words[0], 4), reviews.review_word(user, words[0], 1))
        await asyncio.gather(*(reviews.review_word(user, words[0], 5) for _ in range(4)),
                             *(reviews.review_word(user, word, 4) for word in words[1:]))
    row = await knowledge(connection, user, words[0])
    history = json.loads(row["review_history"])
    assert row["review_count"] == len(history) == 6
    # the stored state is the rule book replayed over the stored history: no review lost or computed from a stale state
    state = rules.MemoryState()
    for entry in history:
        state = rules.review(state, entry["quality"], datetime.fromisoformat(entry["at"]))  # early ones recalled: schedule kept
        assert entry["interval"] == state.interval
    assert (round(row["ease_factor"], 4), row["interval_days"], row["consecutive_correct"]) == (state.easiness, state.interval, state.repetitions)
    times = [datetime.fromisoformat(entry["at"]) for entry in history]
    assert times == sorted(times)
    session = await connection.fetchrow("SELECT * FROM daily_review_sessions WHERE user_id = $1", user)
    assert (session["total_words"], session["completed_words"], session["is_completed"]) == (4, 4, True)
    assert sorted(json.loads(session["vocab_list"])) == sorted(map(str, words))
    await assert_consistent(connection)


# --- achievements moved by follows and reviews ---------------------------------------------------------

async def unlocked(connection, user: UUID) -> set[str]:
    rows = await connection.fetch(
        "SELECT a.slug FROM user_achievements ua JOIN achievements a ON a.id = ua.achievement_id WHERE ua.user_id = $1 AND ua.unlocked_at IS NOT NULL", user)
    return {row["slug"] for row in rows}


async def test_a_first_follow_unlocks_its_achievement_once(seeded_db, connect):
    connection = await connect(seeded_db)
    fan, idol, other = [await new_user(connection, name) for name in ("fan", "idol", "other")]
    first_follow = await connection.fetchrow(
        "SELECT slug, xp_reward, gems_reward FROM achievements WHERE condition_type = 'follow_count' ORDER BY condition_value LIMIT 1")
    async with database(seeded_db, migrate="check", global_fallback=False):
        await social.follow(fan, idol)
        await social.follow(fan, idol)  # again: nothing more
        await social.unfollow(fan, idol)
        await social.follow(fan, other)  # one follow again: already unlocked, not paid twice
    assert await unlocked(connection, fan) == {first_follow["slug"]}
    assert await connection.fetchval("SELECT total_xp FROM users WHERE id = $1", fan) == first_follow["xp_reward"]
    assert await connection.fetchval("SELECT coalesce(gems, 0) FROM user_wallets WHERE user_id = $1", fan) == first_follow["gems_reward"]
    feed = await connection.fetch("SELECT activity_type, activity_data->>'achievement' AS slug FROM activity_feeds WHERE user_id = $1", fan)
    assert [tuple(row) for row in feed] == [("achievement_unlocked", first_follow["slug"])]
    await assert_consistent(connection)


async def test_a_review_shows_progress_towards_the_review_and_mastery_achievements(seeded_db, connect):
    connection = await connect(seeded_db)
    learner = await new_user(connection, "nearly_mastered")
    word = await connection.fetchval("SELECT id FROM vocabulary_items ORDER BY id LIMIT 1")
    last = datetime.now(timezone.utc) - timedelta(days=10)
    await connection.execute(
        "INSERT INTO user_vocab_knowledge (user_id, vocab_id, ease_factor, interval_days, consecutive_correct, review_count, "
        "last_review_date, next_review_date) VALUES ($1, $2, 2.5, 10, 2, 2, $3, $4)", learner, word, last, last + timedelta(days=10))
    async with database(seeded_db, migrate="check", global_fallback=False):
        result = await reviews.review_word(learner, word, 5)
    assert result.mastery_level == "mastered"
    progress = await connection.fetch(
        "SELECT a.condition_type, ua.progress, ua.unlocked_at IS NOT NULL AS unlocked FROM user_achievements ua "
        "JOIN achievements a ON a.id = ua.achievement_id WHERE ua.user_id = $1 ORDER BY a.condition_type", learner)
    lowest = {row["condition_type"]: row["condition_value"] for row in await connection.fetch(
        "SELECT DISTINCT ON (condition_type) condition_type, condition_value FROM achievements ORDER BY condition_type, condition_value")}
    expected = [(kind, 1, lowest[kind] <= 1) for kind in ("reviews_completed", "vocab_mastered")]
    assert [tuple(row) for row in progress] == expected
    await assert_consistent(connection)
