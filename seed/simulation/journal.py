"""One learner's random source and the rows their history leaves: what every part of the simulation writes through."""

from __future__ import annotations

import random

from langlearn.seed.content import dumps
from langlearn.seed.simulation.profiles import uuid4_value
from langlearn.seed.simulation.rows import ActivityFeed, Millis, Uuid

BatchRows = dict[str, list[tuple[object, ...]]]  # per user table (`rows.USER_COLUMNS`), the rows in the order made


class Journal:
    def __init__(self, user_id: Uuid, rng: random.Random, rows: BatchRows, start: Millis) -> None:
        self.user_id = user_id
        self.rng = rng
        self.rows = rows
        self.last_event = start  # the latest event so far: `users.updated_at`, a streak's last touch
        self._bits = rng.getrandbits

    def new_id(self) -> Uuid:
        return uuid4_value(self._bits(128))

    def touch(self, when: Millis) -> None:
        if when > self.last_event:
            self.last_event = when

    def feed(self, kind: str, when: Millis, message: str, data: dict[str, object]) -> None:
        public = self.rng.random() < 0.9
        self.rows["activity_feeds"].append(ActivityFeed(self.new_id(), self.user_id, kind, dumps(data), message, public, when))
