"""A learner's metrics (`rules.METRICS`) and the achievements they unlock as the metrics grow."""

from __future__ import annotations

from langlearn import rules
from langlearn.seed.content import AchievementInfo
from langlearn.seed.simulation.catalogue import Catalogue
from langlearn.seed.simulation.journal import Journal
from langlearn.seed.simulation.rows import Millis, Uuid, uuid_text
from langlearn.seed.simulation.wallet import Wallet


class Achievements:
    def __init__(self, journal: Journal, wallet: Wallet, catalogue: Catalogue) -> None:
        self.journal = journal
        self.wallet = wallet
        self.by_type = catalogue.achievements_by_type
        self.metrics = dict.fromkeys(rules.METRICS, 0)
        self.unlocked: dict[Uuid, Millis] = {}
        self.bonus_xp = 0  # the XP rewards of the unlocked achievements

    def count(self, metric: str, when: Millis) -> None:
        """One more of `metric` (a lesson passed, a follow...) at `when`."""
        self.reach(metric, self.metrics[metric] + 1, when)

    def reach(self, metric: str, value: int, when: Millis) -> None:
        """`metric` is `value` at `when`: unlock what it reaches (a metric that goes down unlocks nothing)."""
        if value <= self.metrics[metric]:
            return
        self.metrics[metric] = value
        for achievement in self.by_type.get(metric, ()):
            if rules.achievement_unlocked(achievement.condition_value, value) and achievement.id not in self.unlocked:
                self._unlock(achievement, when)

    def _unlock(self, achievement: AchievementInfo, when: Millis) -> None:
        self.unlocked[achievement.id] = when
        self.bonus_xp += achievement.xp_reward
        if achievement.gems_reward:
            self.wallet.post("reward", achievement.gems_reward, when, "achievement", uuid_text(achievement.id),
                             f"Achievement unlocked: {achievement.name}")
        self.journal.feed("achievement_unlocked", when, f"unlocked the {achievement.name} achievement",
                          {"achievement": achievement.slug, "rarity": achievement.rarity})
