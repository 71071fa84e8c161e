"""The workers that make the batches and load them, each batch on the worker's own connection.

A worker process (or, for one worker, a thread) generates a batch (a pure function of the seed), copies it
on its own loader connection (`loader.py`) and commits it with its step: `seed_runs.steps_done` one more
and the batch's rows added to `counts`, in the batch's transaction. Steps commute, so workers never wait
for each other, rows never cross between processes, and the server ingests on as many connections as
there are workers. Which batches are in is read from the data itself: a batch committed its learners,
so a resumed run finds the done ones by their first learner's id (`done_batches`).

A worker whose seed process is gone (a SIGKILL leaves nobody to stop it) exits, and its batch in flight rolls
back. Each batch's transaction holds `WORKERS_LOCK_KEY` shared, and a new run takes it exclusively before
reading what is done (`seed.run`'s guard), so it cannot race a batch of the run it resumes: a batch that
commits just after its seed died is whole, and is counted as done.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from langlearn.seed.content import dumps
from langlearn.seed.loader import copy_rows, open_loader
from langlearn.seed.simulation import BATCH_USERS, Batch, RunContext, generate_batch
from langlearn.seed.simulation.profiles import user_uuid
from langlearn.seed.simulation.rows import Uuid

PARENT_POLL_SECONDS = 0.2
WORKERS_LOCK_KEY = int.from_bytes(hashlib.blake2b(b"langlearn:seed-workers", digest_size=8).digest(), "big", signed=True)
# a batch's step: one more step done, its rows added to the run's counts (steps commute: batches commit in any order)
BATCH_DONE_SQL = """
    UPDATE seed_runs SET steps_done = steps_done + 1, updated_at = now(),
        counts = counts || COALESCE((SELECT jsonb_object_agg(key, COALESCE((counts ->> key)::bigint, 0) + value::bigint)
                                     FROM jsonb_each_text($2::jsonb)), '{}'::jsonb)
    WHERE id = $1
"""


@dataclass(frozen=True)
class LoadSetup:
    """What every worker of a run is given once."""

    context: RunContext
    url: str
    run_id: Uuid
    seed_pid: int  # the seed's own process


@dataclass(frozen=True)
class BatchLoaded:
    """A committed batch: its learners, and per table its rows and COPY seconds."""

    learners: int
    rows: dict[str, int]
    seconds: dict[str, float]


class WorkerError(Exception):
    """A batch that failed in a worker, as one line (a database error does not always survive between processes)."""


@dataclass
class _Worker:
    setup: LoadSetup
    loop: asyncio.AbstractEventLoop
    loader: asyncpg.Connection | None = None


_WORKER: _Worker | None = None  # this process's (or thread's) worker, made by `start`


def start(setup: LoadSetup) -> None:
    """The executor's initializer: a worker's setup, and an event loop of its own for its connection. A worker
    process also watches its parent: one the seed left behind (SIGKILL) exits instead of waiting for work forever."""
    global _WORKER
    _WORKER = _Worker(setup, asyncio.new_event_loop())
    if os.getpid() != setup.seed_pid:
        threading.Thread(target=_exit_with_parent, args=(setup.seed_pid,), name="seed-parent-watch", daemon=True).start()


def _exit_with_parent(seed_pid: int) -> None:
    while os.getppid() == seed_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # a batch in flight rolls back with the connection


def load_batch(index: int) -> BatchLoaded:
    """Generate batch `index`, copy it and commit it with its step."""
    assert _WORKER is not None, "a worker runs after start()"
    batch = generate_batch(_WORKER.setup.context, index)
    try:
        return _WORKER.loop.run_until_complete(_load(_WORKER, batch))
    except (asyncpg.PostgresError, OSError) as error:
        raise WorkerError(f"{type(error).__name__}: {error}") from None


def finish() -> None:
    """Close a worker thread's connection and loop (a worker process's close with the process)."""
    global _WORKER
    if _WORKER is not None:
        if _WORKER.loader is not None:
            _WORKER.loop.run_until_complete(_WORKER.loader.close())
        _WORKER.loop.close()
        _WORKER = None


async def _load(worker: _Worker, batch: Batch) -> BatchLoaded:
    if worker.loader is None:
        worker.loader = await open_loader(worker.setup.url)
    loader, seconds = worker.loader, {}
    async with loader.transaction():
        await loader.execute("SELECT pg_advisory_xact_lock_shared($1)", WORKERS_LOCK_KEY)  # held until the batch ends
        for table, rows in batch.rows.items():
            began = time.perf_counter()
            await copy_rows(loader, table, rows)
            seconds[table] = time.perf_counter() - began
        counts = batch.counts
        await loader.execute(BATCH_DONE_SQL, worker.setup.run_id, dumps(counts))
    return BatchLoaded(counts["users"], counts, seconds)


async def done_batches(connection: asyncpg.Connection, context: RunContext) -> set[int]:
    """The batches already committed: those whose first learner is in `users` (a batch commits all its rows or none)."""
    first_learners = {user_uuid(context.seed, index * BATCH_USERS): index for index in range(context.batches)}
    found = await connection.fetch("SELECT id FROM users WHERE id = ANY($1::uuid[])", [UUID(int=value) for value in first_learners])
    return {first_learners[row["id"].int] for row in found}
