"""A batch of learners: their profiles, who follows whom among them, their histories and the rows of all of it.

A learner's rows depend only on the seed and the learner's index (and follows only on their batch),
so any batch can be made alone, in any process, which is what makes a killed run resumable and the
rows independent of the number of workers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from langlearn.seed.simulation.clock import MINUTE_MS
from langlearn.seed.simulation.context import BATCH_USERS, RunContext
from langlearn.seed.simulation.journal import BatchRows
from langlearn.seed.simulation.learner import Device, Follow, Learner
from langlearn.seed.simulation.profiles import Profile, draw_profile, uuid4_value
from langlearn.seed.simulation.rows import USER_COLUMNS, UserFollowing
from langlearn.seed.simulation.summary import summarise


@dataclass
class Batch:
    """The rows of one batch, per user table: named rows (`rows.py`) in the table's column order."""

    rows: BatchRows

    @property
    def counts(self) -> dict[str, int]:
        return {table: len(rows) for table, rows in self.rows.items()}


def generate_batch(ctx: RunContext, batch: int) -> Batch:
    """Every row of users `batch * BATCH_USERS` up to the next batch, for all user tables."""
    rows: BatchRows = {table: [] for table in USER_COLUMNS}
    first = batch * BATCH_USERS
    profiles = [draw_profile(ctx, index) for index in range(first, min(ctx.users, first + BATCH_USERS))]
    follows = _follows(ctx, batch, profiles, rows)
    for profile in profiles:
        learner = Learner(ctx, profile, follows[profile.index], rows)
        devices = _devices(learner)
        learner.live(devices)
        summarise(learner, devices)
    return Batch(rows)


def _follows(ctx: RunContext, batch: int, profiles: list[Profile], rows: BatchRows) -> dict[int, list[Follow]]:
    """A follow graph inside the batch (friends who joined around the same time): no self-follow, no duplicates."""
    rng = random.Random(f"{ctx.seed}:follows:{batch}")
    by_user: dict[int, list[Follow]] = {p.index: [] for p in profiles}
    if len(profiles) < 2:
        return by_user
    horizon = ctx.anchor_ms - 5 * MINUTE_MS
    for follower in profiles:
        count = min(len(profiles) - 1, int(rng.expovariate(1 / 4)))
        for followed in rng.sample([p for p in profiles if p.index != follower.index], count):
            earliest = max(follower.signup, followed.signup) + 10 * MINUTE_MS
            if earliest >= horizon:
                continue
            when = earliest + int((horizon - earliest) * rng.random() ** 3)
            rows["user_following"].append(UserFollowing(uuid4_value(rng.getrandbits(128)), follower.id, followed.id, when))
            by_user[follower.index].append(Follow(followed.id, when))
    return by_user


def _devices(learner: Learner) -> list[Device]:
    """The learner's devices: a phone (or a browser) first, sometimes a second one."""
    rng, people = learner.rng, learner.ctx.content.people
    kinds = [rng.choices(("android", "ios", "web"), weights=(0.6, 0.3, 0.1))[0]]
    if rng.random() < 0.3:
        kinds.append(rng.choice(("web", "android", "ios")))
    return [Device(index, kind, rng.choice(people["devices"][kind])) for index, kind in enumerate(kinds)]
