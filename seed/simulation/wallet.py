"""A learner's gems and what they hold: the ledger (`wallet_transactions`), the holdings (`user_inventory`) and the shopping."""

from __future__ import annotations

from dataclasses import dataclass

from langlearn import rules
from langlearn.seed.content import ShopItemInfo
from langlearn.seed.simulation.catalogue import Catalogue
from langlearn.seed.simulation.clock import MINUTE_MS, SECOND_MS
from langlearn.seed.simulation.journal import Journal
from langlearn.seed.simulation.rows import Millis, Uuid, WalletTransaction, uuid_text


@dataclass
class Holding:
    """How many of one shop item a learner holds, and whether one is active."""

    item: ShopItemInfo
    quantity: int = 0
    active: bool = False
    activated: Millis | None = None
    expires: Millis | None = None
    first: Millis | None = None  # the first purchase


# Ledger entries take their `ledger_seq` from a sequence when written live; the seed sets it itself, from the
# batch and the entry's place in it, so it is the same whatever order the workers commit batches in (then
# seed.run moves the sequence past the largest). Per wallet it follows time, as a live ledger's does.
LEDGER_SEQ_PER_BATCH = 1_000_000  # far more than a batch's entries


class Wallet:
    def __init__(self, journal: Journal, catalogue: Catalogue, appetite: float, batch: int) -> None:
        self.journal = journal
        self.ledger_base = batch * LEDGER_SEQ_PER_BATCH
        self.catalogue = catalogue
        self.appetite = appetite  # the persona's taste for shopping
        self.id = journal.new_id()
        self.gems = self.earned = self.spent = 0
        self.entries = 0
        self.last_entry: Millis | None = None
        self.holdings: dict[Uuid, Holding] = {}
        self.boost_until: Millis | None = None  # while a Double XP Boost bought this session lasts
        self._ledger = journal.rows["wallet_transactions"]

    def post(self, kind: str, amount: int, when: Millis, source: str, reference: str | None, description: str) -> Millis:
        """Add an entry to the ledger; returns when it was made (after the previous one: balances follow time order)."""
        if self.last_entry is not None and when <= self.last_entry:
            when = self.last_entry + 1
        self.last_entry = when
        self.gems += amount
        if amount > 0:
            self.earned += amount
        else:
            self.spent -= amount
        self.entries += 1
        journal = self.journal
        self._ledger.append(WalletTransaction(
            journal.new_id(), self.id, journal.user_id, kind, amount, self.gems, source, reference,
            f"{source}:{self.entries}", description, when, self.ledger_base + len(self._ledger) + 1,
        ))
        journal.touch(when)
        return when

    def holding(self, item: ShopItemInfo) -> Holding:
        held = self.holdings.get(item.id)
        if held is None:
            held = self.holdings[item.id] = Holding(item)
        return held

    def freezes(self) -> Holding:
        return self.holding(self.catalogue.shop["Streak Freeze"])

    def _buy(self, item: ShopItemInfo, when: Millis) -> Millis | None:
        if self.gems < item.price_gems:
            return None
        when = self.post("purchase", -item.price_gems, when, "shop", uuid_text(item.id), f"Bought {item.name}")
        if item.item_type == "double_xp" and self.journal.rng.random() < 0.05:
            # bought by mistake and refunded before use
            self.post("refund", item.price_gems, when + 2 * MINUTE_MS, "shop_refund", uuid_text(item.id), f"Refund: {item.name}")
            return None
        held = self.holding(item)
        held.quantity += 1
        if held.first is None:
            held.first = when
        return when

    def shop(self, when: Millis) -> Millis:
        """What the learner buys at the start of a session; returns when they are done."""
        shop, random, appetite = self.catalogue.shop, self.journal.rng.random, self.appetite
        freezes = self.freezes()
        if freezes.quantity < rules.MAX_FREEZES and random() < appetite * 0.4:
            if bought := self._buy(freezes.item, when):
                freezes.active, freezes.activated = True, bought
                when = bought + 20 * SECOND_MS
        if random() < appetite * 0.12:
            boost = shop["Double XP Boost"]
            if bought := self._buy(boost, when):
                held = self.holding(boost)
                held.quantity -= 1  # used at once
                held.activated = activated = bought + 5 * SECOND_MS
                held.expires = self.boost_until = activated + self.catalogue.boost_minutes * MINUTE_MS
                when = bought + 20 * SECOND_MS
        if random() < appetite * 0.05:
            if bought := self._buy(shop["Hint Pack"], when):
                when = bought + 20 * SECOND_MS
        if random() < appetite * 0.02:
            frame = shop[self.journal.rng.choice(("Golden Avatar Frame", "Lotus Avatar Frame"))]
            if frame.id not in self.holdings and (bought := self._buy(frame, when)):
                for other in self.holdings.values():
                    if other.item.item_type == "avatar_frame":
                        other.active = False
                held = self.holding(frame)
                held.active, held.activated = True, bought
                when = bought + 20 * SECOND_MS
        return when
