"""Seconds without writes across a Patroni failover, with the keyed-write retry and without it, in one run.

    python bench/bench_failover.py                    # 3 failovers, 8 writers, kill 4 s into each
    python bench/bench_failover.py --runs 5 --writers 16
    python bench/bench_failover.py --kill node        # the whole node lost: Patroni too, the leader key expires

Each run starts the test rig (tests/patroni.py: etcd, two PostgreSQL 16 nodes under Patroni 4, synchronous mode,
ttl 20, loop_wait 1, primary_start_timeout 0), migrates it to head through its multi-host URL
(target_session_attrs=read-write), and `--writers` tasks call `wallet.earn` back to back, each with a new
idempotency key, through one `langlearn.database(...)` pool. `--kill-after` seconds in, the leader's postmaster
gets SIGKILL (`--kill postgres`: Patroni sees the crash and hands the leader key over at once), or its Patroni and
then its postmaster do (`--kill node`: the key is left to expire, up to `ttl`). Runs alternate between the retry on (`LANGLEARN_WRITE_RETRY_SECONDS` default) and off (0: a
failover error is `Unavailable` at once and the writer sends the same key again after 0.2 s, as a client would).

Printed per run: when Patroni named the new leader, the longest time without an acknowledged write, the
calls that ended in `Unavailable`, the library's retries, and the ledger's count per acknowledged key (must be 1).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the rig lives with the tests

import asyncpg

from langlearn import database
from langlearn.operations import retry, wallet
from langlearn.operations.errors import Unavailable
from langlearn.urls import asyncpg_url
from tests.conftest import run_cli
from tests.patroni import PatroniCluster

CLIENT_PAUSE_SECONDS = 0.2  # a writer's wait after Unavailable before it sends the same key again


@dataclass
class Run:
    retrying: bool
    acknowledged: list[tuple[float, uuid.UUID, str]] = field(default_factory=list)  # (when, user, key)
    unavailable: int = 0
    library_retries: int = 0
    killed_at: float = 0.0
    promoted_after: float = 0.0


class RetryCounter(logging.Handler):
    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        self.run.library_retries += 1


async def writer(user: uuid.UUID, deadline: float, run: Run) -> None:
    while time.monotonic() < deadline:
        key = uuid.uuid4().hex
        while time.monotonic() < deadline + 30:  # a key is sent until acknowledged (bounded: the run stops)
            try:
                await wallet.earn(user, 1, "bench", key)
            except Unavailable:
                run.unavailable += 1
                await asyncio.sleep(CLIENT_PAUSE_SECONDS)
                continue
            run.acknowledged.append((time.monotonic(), user, key))
            break


async def kill_leader(cluster: PatroniCluster, after: float, whole_node: bool, run: Run) -> None:
    await asyncio.sleep(after)
    leader = cluster.leader()
    if whole_node:
        cluster.kill_patroni(leader)
    cluster.kill_postgres(leader)
    run.killed_at = time.monotonic()
    await asyncio.to_thread(cluster.wait_for_new_leader, leader, 60)
    run.promoted_after = time.monotonic() - run.killed_at


async def one_run(retrying: bool, writers: int, seconds: float, kill_after: float, whole_node: bool) -> tuple[Run, float, list[int]]:
    run = Run(retrying)
    cluster = PatroniCluster()
    try:
        cluster.start()
        url = cluster.url()
        upgraded = run_cli("langlearn", "upgrade", database=url)
        if upgraded.returncode:
            raise SystemExit(upgraded.stderr)
        admin = await asyncpg.connect(asyncpg_url(url))
        users = [await admin.fetchval("INSERT INTO users (email, username, hashed_password) VALUES ($1, $1, '$argon2id$x') RETURNING id",
                                      f"bench{number}") for number in range(writers)]
        await admin.close()
        os.environ[retry.RETRY_SECONDS_VARIABLE] = str(retry.DEFAULT_RETRY_SECONDS if retrying else 0)
        counter = RetryCounter(run)
        logging.getLogger(retry.log.name).addHandler(counter)
        try:
            async with database(url, migrate="check"):
                started = time.monotonic()
                deadline = started + seconds
                await asyncio.gather(kill_leader(cluster, kill_after, whole_node, run), *(writer(user, deadline, run) for user in users))
                ended = time.monotonic()
        finally:
            logging.getLogger(retry.log.name).removeHandler(counter)
        moments = sorted([started, *(when for when, _, _ in run.acknowledged), ended])
        gap = max(later - earlier for earlier, later in zip(moments, moments[1:]))
        admin = await asyncpg.connect(asyncpg_url(url))
        counts = [row["n"] for row in await admin.fetch(
            "SELECT count(*) AS n FROM wallet_transactions WHERE idempotency_key = ANY($1::text[]) GROUP BY idempotency_key",
            [key for _, _, key in run.acknowledged])]
        await admin.close()
        return run, gap, counts
    finally:
        cluster.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="failovers with the retry on, and as many with it off (default 3)")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=14.0, help="how long the writers run (default 14)")
    parser.add_argument("--kill-after", type=float, default=4.0)
    parser.add_argument("--kill", choices=("postgres", "node"), default="postgres",
                        help="postgres: the leader's postmaster (default); node: its Patroni, then its postmaster")
    arguments = parser.parse_args()
    gaps: dict[bool, list[float]] = {True: [], False: []}
    for number in range(arguments.runs * 2):
        retrying = number % 2 == 0
        run, gap, counts = await one_run(retrying, arguments.writers, arguments.seconds, arguments.kill_after, arguments.kill == "node")
        gaps[retrying].append(gap)
        doubled_or_lost = len(run.acknowledged) - sum(1 for n in counts if n == 1)
        print(f"retry {'on ' if retrying else 'off'}: new leader {run.promoted_after:.1f} s after the kill; no write for {gap:.2f} s; "
              f"{len(run.acknowledged)} writes acknowledged, {run.unavailable} Unavailable, {run.library_retries} library retries; "
              f"acknowledged keys not in the ledger exactly once: {doubled_or_lost}", flush=True)
    for retrying in (True, False):
        print(f"retry {'on ' if retrying else 'off'}: seconds without writes, median {statistics.median(gaps[retrying]):.2f}, "
              f"max {max(gaps[retrying]):.2f} over {len(gaps[retrying])} failovers")


if __name__ == "__main__":
    asyncio.run(main())
