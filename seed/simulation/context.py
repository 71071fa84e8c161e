"""What every batch of one run shares: the catalogue, the anchor and how secrets are made."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from langlearn.seed.content import Content
from langlearn.seed.simulation.catalogue import Catalogue, build_catalogue
from langlearn.seed.simulation.clock import day_of, millis
from langlearn.seed.simulation.profiles import HISTORY_DAYS, check_demo_accounts
from langlearn.seed.simulation.rows import Day, Millis

BATCH_USERS = 100


@dataclass
class RunContext:
    seed: int
    users: int
    anchor: datetime
    content: Content
    password_for: Callable[[int], str]
    demo_accounts: int  # leading users that are the documented demo accounts
    unpredictable: bool  # secrets from the OS instead of the seed (forced runs)
    catalogue: Catalogue = field(init=False)

    def __post_init__(self) -> None:
        """Refuse data files the simulation cannot use before anything is written."""
        check_demo_accounts(self.content)
        self.catalogue = build_catalogue(self.content)

    @property
    def batches(self) -> int:
        return math.ceil(self.users / BATCH_USERS)

    @property
    def anchor_ms(self) -> Millis:
        return millis(self.anchor)

    @property
    def first_day(self) -> Day:
        return day_of(self.anchor_ms) - HISTORY_DAYS
