"""Learners and their history, simulated day by day so that every derived number agrees with its source.

Each learner lives through the eight weeks before the anchor: signs up, opens sessions on devices,
plays lessons (question by question), reviews vocabulary with SM-2, keeps or loses a streak, earns
and spends gems, buys from the shop, unlocks achievements and climbs leagues. Every stored total is
computed from those events as they happen: XP from attempts, `users.total_xp` from attempts plus
unlocked achievements, leaderboard XP from the attempts started in each Monday-Sunday week, the
wallet from its ledger, the inventory from purchases less what was used, the streak from active
days. Ranks need every learner of a league and week at once, so `seed.run` sets them in SQL at the end.
Nothing lies after the anchor except what is future by nature (token expiry, the next review due date).

The game's rules (XP, passing, streaks and freezes, the daily goal, achievements, leagues, SM-2) come
from `langlearn.rules`, shared with the live operations; only the learners' random choices live here.

- `rows`: the named row types, one per user table (their fields are the COPY columns);
- `clock`: time as integers; `catalogue`: the content with integer ids; `context`: what a run shares;
- `profiles`: personas and who each learner is; `journal`: a learner's random source and rows;
- `wallet`, `achievements`, `vocabulary`, `lessons`: the parts of a learner's state, each with its events;
- `learner`: the day-by-day life; `summary`: the rows that sum it up; `batch`: a batch of learners.
"""

from langlearn.seed.simulation.batch import Batch, generate_batch
from langlearn.seed.simulation.context import BATCH_USERS, RunContext

__all__ = ["BATCH_USERS", "Batch", "RunContext", "generate_batch"]
