"""Reads from a hot standby with routing, against the primary alone, in one run; stale reads without and with tokens.

    python bench/bench_replicas.py                      # 2,000 seeded users, 300 rounds
    python bench/bench_replicas.py --users 500 --rounds 100

Starts a throwaway primary and streaming hot standby from the pgserver wheel's binaries (tests/replicas.py's
`replica_pair`, the rig the tests use), brings the primary to head and seeds it (`langlearn seed --users N`),
waits for the standby, then, with the same random users in the same order:

1. baseline: the read mix (a wallet statement and a feed page, raw SQL; a user's due words, ORM) through
   `database(primary)` alone, as a service without standbys reads;
2. routed: the same mix through `database(primary, replica_url=standby)`: the reads go to the standby;
   the two alternate in `--blocks` blocks (both servers share this machine and its load), and the routing
   decision itself (`read_connection()`, pure Python) is timed apart, in microseconds;
3. read-your-writes: per round, a write (`wallet.earn`), then the wallet read naively (the standby, no token)
   and with the write's token (`read_after`): stale reads counted (a balance older than the write's), and the
   token's wait (the standby polled until it has replayed the LSN, else the primary after LANGLEARN_REPLICA_WAIT).

Printed: p50/p99 of a read in each mode, the added p50/p99 of routing (routed - baseline) and their ratio to
the baseline; p50/p99 of the token wait and of the LSN read a write adds; stale reads without and with tokens
(with tokens it must be 0). Client-side times, one client, sequential, on this machine (both servers share it).
The servers are stopped and removed at the end, however the run ends. The failover's seconds without writes
are the failover benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's tests/ (the rig)

from langlearn.compat import pgserver_bin_dir
from langlearn.models import UserVocabKnowledge
from langlearn.operations import ledger, social, wallet
from langlearn.routing import commit_lsn, read_after, read_connection
from langlearn.startup import database
from tests.replicas import ReplicaPair, replica_pair

DATABASE = "bench"


@dataclass(frozen=True)
class Timings:
    """Milliseconds of one kind of step."""

    samples: list[float]

    def percentile(self, share: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


def seed(pair: ReplicaPair, users: int) -> None:
    url = pair.primary_url(DATABASE)
    pair.run("createdb", "-h", "127.0.0.1", "-p", str(pair.primary_port), "-U", "postgres", DATABASE)
    environment = {**os.environ, "DATABASE_URL": url}
    for command in (["upgrade"], ["seed", "--users", str(users), "--no-progress"]):
        subprocess.run([sys.executable, "-m", "langlearn", *command], env=environment, check=True, capture_output=True, text=True)


async def read_mix(user: UUID) -> None:
    await ledger.wallet_statement(user, limit=20)
    await social.feed(user, limit=20)
    await UserVocabKnowledge.filter(user_id=user).order_by("next_review_date").limit(20)


async def timed(step: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await step()
    return (time.perf_counter() - started) * 1000


async def reads(url: str, replica: str | None, users: list[UUID]) -> list[float]:
    async with database(url, replica_url=replica, migrate="off", global_fallback=False):
        for user in users[:20]:  # warm the pools and the caches
            await read_mix(user)
        return [await timed(lambda user=user: read_mix(user)) for user in users]


async def routing_decisions(url: str, replica: str, count: int = 20000) -> Timings:
    """Microseconds of one routing decision (which connection a read outside a transaction takes)."""
    async with database(url, replica_url=replica, migrate="off", global_fallback=False):
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            read_connection()
            samples.append((time.perf_counter() - started) * 1e6)
        return Timings(samples)


@dataclass
class Freshness:
    stale_naive: int = 0
    stale_with_token: int = 0
    fell_back: int = 0


async def read_your_writes(url: str, replica: str, users: list[UUID]) -> tuple[Freshness, Timings, Timings]:
    freshness, waits, lsn_reads = Freshness(), [], []
    async with database(url, replica_url=replica, migrate="off", global_fallback=False):
        for round_number, user in enumerate(users):
            written = await wallet.earn(user, 1, "bench", f"bench-{round_number}-{user}")
            lsn_reads.append(await timed(commit_lsn))  # what @write_operation adds to each write
            if (await ledger.wallet_statement(user, limit=1)).gems < written.gems:
                freshness.stale_naive += 1
            async with read_after(written.lsn) as choice:
                if (await ledger.wallet_statement(user, limit=1)).gems < written.gems:
                    freshness.stale_with_token += 1
            waits.append(choice.waited * 1000)
            freshness.fell_back += choice.fell_back
    return freshness, Timings(waits), Timings(lsn_reads)


async def sample_users(pair: ReplicaPair, rounds: int) -> list[UUID]:
    connection = await asyncpg.connect(pair.primary_url(DATABASE))
    try:
        ids = [row["id"] for row in await connection.fetch("SELECT id FROM users ORDER BY id")]
    finally:
        await connection.close()
    return random.Random(7).choices(ids, k=rounds)


def row(name: str, timings: Timings) -> str:
    return f"{name:34} p50 {timings.p50:7.3f} ms   p99 {timings.p99:7.3f} ms"


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000, help="users seeded (default 2000)")
    parser.add_argument("--rounds", type=int, default=300, help="read mixes per mode, and writes for the freshness check (default 300)")
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks of the baseline and the routed reads (default 3)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with replica_pair(pgserver_bin_dir()) as pair:
        print(f"primary + standby up in {time.monotonic() - started:.1f} s (PostgreSQL from the pgserver wheel)")
        seeding = time.monotonic()
        seed(pair, args.users)
        await pair.caught_up(timeout=120)
        print(f"seeded {args.users} users and replayed in {time.monotonic() - seeding:.1f} s")
        users = await sample_users(pair, args.rounds)
        primary, standby = pair.primary_url(DATABASE), pair.standby_url(DATABASE)
        baseline_samples: list[float] = []
        routed_samples: list[float] = []
        for block in range(args.blocks):
            chunk = users[block::args.blocks]
            baseline_samples += await reads(primary, None, chunk)
            routed_samples += await reads(primary, standby, chunk)
        baseline, routed = Timings(baseline_samples), Timings(routed_samples)
        decisions = await routing_decisions(primary, standby)
        freshness, waits, lsn_reads = await read_your_writes(primary, standby, users)
    print(f"read mix ({args.rounds} rounds in {args.blocks} alternating blocks: wallet statement + feed page raw, due words ORM; one client):")
    print(row("  primary alone (baseline)", baseline))
    print(row("  standby with routing", routed))
    for name, share in (("p50", 0.5), ("p99", 0.99)):
        base, with_routing = baseline.percentile(share), routed.percentile(share)
        print(f"  added by routing, {name}:           {with_routing - base:+7.3f} ms   ratio to the baseline {with_routing / base:.2f}")
    print(f"  the routing decision itself        p50 {decisions.p50:7.2f} µs   p99 {decisions.p99:7.2f} µs")
    print("read-your-writes (a write, then the wallet read without and with its token):")
    print(row("  token wait", waits))
    print(row("  LSN read after a write's COMMIT", lsn_reads))
    print(f"  stale reads without a token: {freshness.stale_naive} of {args.rounds}")
    print(f"  stale reads with the token:  {freshness.stale_with_token} of {args.rounds} (must be 0)")
    print(f"  token reads that fell back to the primary: {freshness.fell_back} of {args.rounds}")
    return 0 if freshness.stale_with_token == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
