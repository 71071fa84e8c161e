"""Achievements: what a user's metrics unlock, the progress shown, and the rewards, for every writer that moves a metric.

A writer (a lesson completed, a word reviewed, a user followed) holds the user's wallet lock, reads
the metrics it moved and the catalogue (`catalogue_sql`, one subquery of its own state read), and
`plan_awards` decides with the rule book (`rules.achievements_reached`): achievements newly reached
are unlocked (their XP added to `users.total_xp`, their gems paid as ledger entries, a feed event
each), and the next tier of each moved kind shows its progress, as the seed writes it. `AWARD_CTES`
writes that in the writer's last statement, or `WRITE_AWARDS` on its own.

The SQL here takes named parameters (`:user`), numbered by `numbered` for asyncpg, so that a
writer's statement and these shared parts compose without renumbering by hand.

Every reward entry is keyed in the server's namespace (`<source>:<reference>`, see `wallet.server_key`), which no
client key can enter, and is written only if its key is new: a key already in the ledger means "already paid",
never an error, and the wallet moves by what was written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langlearn import rules
from langlearn.operations.wallet import ledger_time, server_key

ACHIEVEMENT_SOURCE = "achievement"  # the ledger's source for a reward, as the seed writes it
# A named parameter is `:name` outside what is not SQL code: string literals (E'…' with its backslash escapes),
# quoted identifiers, dollar-quoted bodies, comments and `::` casts are matched first and left as they are.
_SQL_TOKEN = re.compile(
    r"""
    (?P<verbatim>
        [Ee]'(?:[^'\\]|\\.|'')*'           # an escape string literal
      | '(?:[^']|'')*'                       # a string literal ('' is a quote inside it)
      | "(?:[^"]|"")*"                       # a quoted identifier
      | \$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$   # a dollar-quoted body ($$…$$, $tag$…$tag$)
      | --[^\n]*                             # a line comment
      | /\*.*?\*/                            # a block comment
      | ::                                   # a cast: `::int` names no parameter
    )
    | :(?P<name>[A-Za-z_]\w*)
    | \$(?P<positional>\d+)                  # asyncpg's own numbering: not to be mixed with names
    """,
    re.VERBOSE | re.DOTALL,
)


def numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql` with each named parameter (`:name`, letters, digits and `_`) replaced by `$n`, and the names in their order.
    Text inside literals, quoted identifiers and comments, and `::` casts, are left as they are."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group("positional"):
            raise ValueError(f"${match.group('positional')} in SQL with named parameters: name it (:name) instead")
        name = match.group("name")
        if name is None:
            return match.group(0)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _SQL_TOKEN.sub(number, sql), tuple(names)


@dataclass(frozen=True)
class Statement:
    """SQL with named parameters, numbered once; `arguments` lays out a call's values in their order."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, sql: str) -> Statement:
        return cls(*numbered(sql))

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        return [values[name] for name in self.names]


def catalogue_sql(user: str) -> str:
    """A subquery: the catalogue as JSON, each achievement with whether `user` (an SQL expression) unlocked it and its progress."""
    return f"""(SELECT json_agg(json_build_object('id', ach.id, 'slug', ach.slug, 'name', ach.name, 'type', ach.condition_type,
                                              'value', ach.condition_value, 'xp', ach.xp_reward, 'gems', ach.gems_reward,
                                              'rarity', ach.rarity, 'unlocked', ua.unlocked_at IS NOT NULL,
                                              'progress', coalesce(ua.progress, 0)))
            FROM achievements ach LEFT JOIN user_achievements ua ON ua.achievement_id = ach.id AND ua.user_id = {user}
            WHERE ach.condition_value IS NOT NULL)"""


@dataclass(frozen=True)
class CatalogueEntry:
    rule: rules.AchievementRule
    slug: str
    name: str
    rarity: str
    xp: int
    gems: int
    unlocked: bool
    progress: int


def read_catalogue(rows: Any) -> list[CatalogueEntry]:
    if isinstance(rows, str):  # asyncpg returns JSON as text unless a codec is set
        rows = json.loads(rows)
    return [
        CatalogueEntry(rules.AchievementRule(UUID(r["id"]), r["type"], r["value"]), r["slug"], r["name"], r["rarity"],
                       r["xp"], r["gems"], r["unlocked"], r["progress"])
        for r in rows or ()
    ]


@dataclass(frozen=True)
class Payment:
    """A ledger entry to write (its balance_after is the running balance in the order written, computed in SQL)."""

    kind: str
    amount: int
    source: str
    reference_id: str
    key: str
    description: str


@dataclass(frozen=True)
class FeedEvent:
    kind: str
    data: dict[str, object]
    message: str


@dataclass(frozen=True)
class Progress:
    achievement_id: UUID
    value: int
    unlock: bool


@dataclass
class Awards:
    """What a write adds to the user's totals, achievements, ledger and feed, from the wallet's `gems` on."""

    gems: int
    xp: int = 0
    progress: list[Progress] = field(default_factory=list)
    payments: list[Payment] = field(default_factory=list)
    feed: list[FeedEvent] = field(default_factory=list)
    unlocked: list[CatalogueEntry] = field(default_factory=list)

    @property
    def gems_added(self) -> int:
        return sum(p.amount for p in self.payments)

    @property
    def balance(self) -> int:
        return self.gems + self.gems_added

    @property
    def changes_anything(self) -> bool:
        return bool(self.xp or self.progress or self.payments or self.feed)

    def pay(self, kind: str, amount: int, source: str, reference_id: str, key: str, description: str) -> None:
        self.payments.append(Payment(kind, amount, source, reference_id, key, description))

    def values(self, user_id: UUID, wallet_id: UUID) -> dict[str, Any]:
        """The named parameters of `AWARD_CTES`."""
        return {
            "user": user_id, "wallet": wallet_id, "xp_added": self.xp,
            "award_ids": [p.achievement_id for p in self.progress], "award_values": [p.value for p in self.progress],
            "award_unlocks": [p.unlock for p in self.progress],
            "entry_kinds": [p.kind for p in self.payments], "entry_amounts": [p.amount for p in self.payments],
            "entry_sources": [p.source for p in self.payments],
            "entry_references": [p.reference_id for p in self.payments], "entry_keys": [p.key for p in self.payments],
            "entry_descriptions": [p.description for p in self.payments],
            "feed_kinds": [f.kind for f in self.feed], "feed_data": [json.dumps(f.data) for f in self.feed],
            "feed_messages": [f.message for f in self.feed],
        }


def plan_awards(awards: Awards, catalogue: Sequence[CatalogueEntry], metrics: Mapping[str, int]) -> Awards:
    """Add to `awards` what `metrics` (the kinds a write moved, as they are after it) unlock and show."""
    reached = {a.id for a in rules.achievements_reached((c.rule for c in catalogue), metrics)}
    for achievement in catalogue:
        if achievement.rule.id not in reached or achievement.unlocked:
            continue
        awards.unlocked.append(achievement)
        awards.xp += achievement.xp
        awards.progress.append(Progress(achievement.rule.id, achievement.rule.condition_value, unlock=True))
        awards.feed.append(FeedEvent("achievement_unlocked", {"achievement": achievement.slug, "rarity": achievement.rarity},
                                     f"unlocked the {achievement.name} achievement"))
        if achievement.gems:
            awards.pay("reward", achievement.gems, ACHIEVEMENT_SOURCE, str(achievement.rule.id),
                       server_key(ACHIEVEMENT_SOURCE, achievement.slug), f"Achievement unlocked: {achievement.name}")
    for kind, value in metrics.items():  # the next tier of each kind shows progress, as the seed writes it
        pending = [c for c in catalogue if c.rule.condition_type == kind and c.rule.id not in reached and not c.unlocked]
        if pending:
            tier = min(pending, key=lambda c: (c.rule.condition_value, c.rule.id))
            shown = rules.achievement_progress(tier.rule.condition_value, value)
            if shown > tier.progress:
                awards.progress.append(Progress(tier.rule.id, shown, unlock=False))
    return awards


# The writes, as CTEs of one statement: the user's XP, achievements, ledger entries (ledger_seq drawn in the
# order of the running balance), wallet and feed. Each writes nothing when its arrays are empty.
AWARD_CTES = f"""
    award_xp AS (
        UPDATE users SET total_xp = total_xp + :xp_added, updated_at = now() WHERE id = :user AND :xp_added > 0 RETURNING 1
    ), award_progress AS (
        INSERT INTO user_achievements (user_id, achievement_id, progress, unlocked_at)
        SELECT :user, a.id, a.progress, CASE WHEN a.unlock THEN now() END
        FROM unnest(:award_ids::uuid[], :award_values::int[], :award_unlocks::bool[]) AS a(id, progress, unlock)
        ON CONFLICT (user_id, achievement_id) DO UPDATE
        SET progress = greatest(user_achievements.progress, EXCLUDED.progress),
            unlocked_at = coalesce(user_achievements.unlocked_at, EXCLUDED.unlocked_at)
        RETURNING 1
    ), award_new AS (  -- the entries whose key is not in the ledger: a key found there was already paid
        SELECT e.* FROM unnest(:entry_kinds::text[], :entry_amounts::int[], :entry_sources::text[], :entry_references::text[],
                               :entry_keys::text[], :entry_descriptions::text[])
             WITH ORDINALITY AS e(kind, amount, source, reference_id, key, description, position)
        WHERE NOT EXISTS (SELECT 1 FROM wallet_transactions t WHERE t.wallet_id = :wallet AND t.idempotency_key = e.key)
    ), award_entries AS (
        INSERT INTO wallet_transactions (wallet_id, user_id, transaction_type, amount, balance_after, source, reference_id,
                                         idempotency_key, description, created_at)
        SELECT :wallet, :user, n.kind::transaction_type, n.amount,
               (SELECT w.gems FROM user_wallets w WHERE w.id = :wallet) + sum(n.amount) OVER (ORDER BY n.position),
               n.source, n.reference_id, n.key, n.description, {ledger_time(":wallet")}
        FROM award_new n
        ORDER BY n.position
        ON CONFLICT (wallet_id, idempotency_key) DO NOTHING  -- the backstop: the wallet lock makes the check above exact
        RETURNING amount
    ), award_gems AS (  -- the wallet moves by what was written
        UPDATE user_wallets SET gems = gems + paid.amount, total_gems_earned = total_gems_earned + paid.amount, updated_at = now()
        FROM (SELECT sum(amount) AS amount FROM award_entries) paid
        WHERE id = :wallet AND paid.amount > 0
        RETURNING 1
    ), award_feed AS (
        INSERT INTO activity_feeds (user_id, activity_type, activity_data, message, is_public)
        SELECT :user, f.kind, f.data::jsonb, f.message, true
        FROM unnest(:feed_kinds::text[], :feed_data::text[], :feed_messages::text[]) AS f(kind, data, message)
        RETURNING 1
    )"""
WRITE_AWARDS = Statement.of(f"WITH {AWARD_CTES} SELECT 1")
