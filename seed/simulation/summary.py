"""The rows that summarise a lived history: the user, devices and tokens, progress, words, streak, achievements,
wallet, league weeks and holdings, each computed from the events as they happened."""

from __future__ import annotations

import hashlib
import ipaddress
import random
import secrets
from uuid import UUID

from langlearn import rules
from langlearn.seed.simulation.clock import DAY_MS, HOUR_MS, MINUTE_MS, from_date
from langlearn.seed.simulation.learner import Device, Learner
from langlearn.seed.simulation.rows import (
    InventoryItem,
    LeaderboardEntry,
    RefreshToken,
    Streak,
    User,
    UserAchievement,
    UserDevice,
    UserProgress,
    UserWallet,
    VocabKnowledge,
)

TOKEN_LIFETIME = 30 * DAY_MS
TOKEN_ROTATION = 14 * DAY_MS
RARITY_RANK = {"common": 0, "rare": 1, "epic": 2, "legendary": 3}
SHOWCASED = 3  # achievements a learner shows on their profile: the rarest first


def summarise(learner: Learner, devices: list[Device]) -> None:
    _user(learner)
    _devices_and_tokens(learner, devices)
    _progress_and_words(learner)
    _streak_and_wallet(learner)
    _achievements(learner)
    _weeks_and_holdings(learner)


def _user(learner: Learner) -> None:
    ctx, p, rng, journal = learner.ctx, learner.profile, learner.rng, learner.journal
    last_login = learner.sessions[-1].start if learner.sessions else p.signup
    demo = p.index < ctx.demo_accounts
    journal.rows["users"].append(User(
        p.id, p.email, p.username, ctx.password_for(p.index), p.display_name,
        f"https://cdn.langlearn.example/avatars/{p.username}.png" if rng.random() < 0.7 else None,
        p.native, learner.lessons.course.language, learner.lessons.level,
        rules.total_xp((learner.lessons.xp,), (learner.achievements.bonus_xp,)),
        rng.random() > 0.02 or demo, demo or rng.random() < 0.85, last_login,  # a demo account is never deactivated (drawn anyway: the stream stays)
        "local" if demo else rng.choices(("local", "google", "facebook", "apple"), (60, 30, 5, 5))[0],
        _ip(rng), p.signup, max(journal.last_event, last_login),
    ))


def _devices_and_tokens(learner: Learner, devices: list[Device]) -> None:
    rng, journal, uid = learner.rng, learner.journal, learner.profile.id
    anchor = learner.ctx.anchor_ms
    for device in devices:
        device_id = journal.new_id()
        used = [session.start for session in learner.sessions if session.device == device.index] or [learner.profile.signup]
        token = None if device.type == "web" else _secret(learner).hex()
        vendor_id = str(UUID(int=journal.new_id())).upper() if device.type == "ios" else rng.randbytes(8).hex()
        journal.rows["user_devices"].append(UserDevice(device_id, uid, vendor_id, token, device.type, device.name, used[-1], used[0]))
        issued = [used[0]]
        for start in used[1:]:
            if start - issued[-1] >= TOKEN_ROTATION:
                issued.append(start)
        for position, when in enumerate(issued):
            latest = position == len(issued) - 1
            revoked = latest and rng.random() < 0.1
            revoked_at = min(used[-1] + int(rng.uniform(1, 12) * HOUR_MS), anchor - MINUTE_MS) if revoked else None
            journal.rows["refresh_tokens"].append(RefreshToken(
                journal.new_id(), uid, device_id, hashlib.sha256(_secret(learner)).hexdigest(), revoked, not latest,
                when + TOKEN_LIFETIME, revoked_at, when,
            ))


def _progress_and_words(learner: Learner) -> None:
    journal, uid, anchor = learner.journal, learner.profile.id, learner.ctx.anchor_ms
    for progress in learner.lessons.progress.values():
        lesson = progress.lesson
        journal.rows["user_progress"].append(UserProgress(
            journal.new_id(), uid, lesson.id, lesson.course_id, progress.status, progress.score, progress.completed,
            progress.seconds, progress.attempts, progress.first, progress.last,
        ))
    words = journal.rows["user_vocab_knowledge"]
    for word in learner.vocabulary.words.values():
        assert word.due is not None  # every known word has been reviewed once
        words.append(VocabKnowledge(
            word.id, uid, word.vocab_id, rules.strength((anchor - word.last_review) / DAY_MS, word.interval), word.easiness,
            word.interval, word.last_review, word.due, word.reviews, word.repetitions, "[" + ",".join(word.history) + "]",
            rules.mastery(word.interval, word.repetitions, word.reviews), word.created, word.last_review,
        ))


def _streak_and_wallet(learner: Learner) -> None:
    journal, p, streak, wallet = learner.journal, learner.profile, learner.streak, learner.wallet
    last_active = None if streak.last_active is None else from_date(streak.last_active)
    journal.rows["streaks"].append(Streak(
        journal.new_id(), p.id, streak.current, streak.longest, last_active, streak.days_active, wallet.freezes().quantity,
        p.signup, max(learner.streak_touched, p.signup),
    ))
    journal.rows["user_wallets"].append(UserWallet(
        wallet.id, p.id, wallet.gems, wallet.earned, wallet.spent, p.signup, wallet.last_entry or p.signup,
    ))


def _achievements(learner: Learner) -> None:
    journal, p = learner.journal, learner.profile
    catalogue, achievements = learner.ctx.catalogue.achievements, learner.achievements
    unlocked = achievements.unlocked
    rarest_first = sorted((a for a in catalogue if a.id in unlocked), key=lambda a: (-RARITY_RANK[a.rarity], unlocked[a.id]))
    showcased = {a.id for a in rarest_first[:SHOWCASED]}
    for achievement in catalogue:
        value = achievements.metrics[achievement.condition_type]
        when = unlocked.get(achievement.id)
        if when is None and value == 0:
            continue
        if when is None and any(
            other.condition_type == achievement.condition_type and other.id not in unlocked
            and other.condition_value < achievement.condition_value for other in catalogue
        ):
            continue  # only the next tier of each kind shows progress
        journal.rows["user_achievements"].append(UserAchievement(
            journal.new_id(), p.id, achievement.id, rules.achievement_progress(achievement.condition_value, value), when,
            achievement.id in showcased, when or p.signup,
        ))


def _weeks_and_holdings(learner: Learner) -> None:
    journal, uid = learner.journal, learner.profile.id
    for week_start, week in sorted(learner.lessons.weeks.items()):
        outcome = week.outcome or rules.WeekOutcome(learner.league, False, False, learner.league)
        journal.rows["leaderboard_entries"].append(LeaderboardEntry(
            journal.new_id(), uid, week_start, week_start + 6, outcome.league, week.xp, week.lessons, None,
            outcome.promoted, outcome.demoted, week.first, week.last,
        ))
    for held in learner.wallet.holdings.values():
        if held.first is None:
            continue
        journal.rows["user_inventory"].append(InventoryItem(
            journal.new_id(), uid, held.item.id, held.quantity, held.active, held.activated, held.expires, held.first, held.first,
        ))


def _secret(learner: Learner) -> bytes:
    return secrets.token_bytes(32) if learner.ctx.unpredictable else learner.rng.randbytes(32)


def _ip(rng: random.Random) -> str:
    """An address from the documentation ranges (RFC 5737 / RFC 3849): realistic shape, nobody's address."""
    if rng.random() < 0.15:
        return str(ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(64)))
    network = rng.choice(("192.0.2.", "198.51.100.", "203.0.113."))
    return network + str(rng.randrange(1, 255))


