"""Startup in `check` mode versus plain Tortoise initialisation, both ending with one query.

All sides run in-process, alternating, against databases at head on the same server, so machine
noise hits them alike; the first round warms imports and caches and is not counted. The `check`
side is `langlearn.database(migrate="check")`: a dedicated connection (with retries), the
migration state and the full `langlearn.verify.check_schema` comparison; then Tortoise. Measured warm
(the models' spelling cached by an earlier start, as on every start but a machine's first) and
cold (an empty cache each time). Target: check adds under 50 ms.

    python bench/bench_startup.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

from tortoise.context import TortoiseContext

from langlearn import history
from langlearn.databases import ScratchDatabases
from langlearn.models import Course
from langlearn.settings import database_url, tortoise_config
from langlearn.startup import database

TARGET_MS = 50


async def plain(url: str) -> float:
    started = time.perf_counter()
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(url))
        await Course.all().count()
        return time.perf_counter() - started


async def check_mode(url: str) -> float:
    started = time.perf_counter()
    async with database(url, migrate="check", global_fallback=False):
        await Course.all().count()
        return time.perf_counter() - started


async def cold(url: str) -> float:
    with tempfile.TemporaryDirectory() as empty:
        os.environ["LANGLEARN_CACHE_DIR"] = empty
        try:
            return await check_mode(url)
        finally:
            del os.environ["LANGLEARN_CACHE_DIR"]


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="measured runs of each side (default 30)")
    args = parser.parse_args(argv)
    scratch = ScratchDatabases(database_url(), "bench_startup_")
    url = await scratch.create()
    sides = {"plain Tortoise": lambda: plain(url), "check mode": lambda: check_mode(url), "check, cold cache": lambda: cold(url)}
    timings: dict[str, list[float]] = {side: [] for side in sides}
    try:
        await history.upgrade(url)
        for run in sides.values():  # warm-up, not counted
            await run()
        for _ in range(args.repeat):
            for side, run in sides.items():
                timings[side].append(await run())
    finally:
        await scratch.drop(url)
    medians = {side: statistics.median(values) * 1000 for side, values in timings.items()}
    for side, median in medians.items():
        print(f"{side:>17}: median {median:6.1f} ms over {args.repeat} runs (init + one query)")
    baseline = medians["plain Tortoise"]
    for side in ("check mode", "check, cold cache"):
        added = medians[side] - baseline
        verdict = "within" if added < TARGET_MS else "over"
        print(f"{side} adds {added:5.1f} ms ({medians[side] / baseline:.2f}x), {verdict} the {TARGET_MS} ms target")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
