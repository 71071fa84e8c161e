"""Startup in `check` mode versus plain Tortoise initialisation, both ending with one query.

All sides run in-process, alternating, against databases at head on the same server, so machine
noise hits them alike; the first round warms imports and caches and is not counted. The `check`
side is `core.startup.database(migrate="check")`: a dedicated connection (with retries), the
migration state, the schema's digest and, unless it matches the stamp the last `apply` left, the
full `seed.verify.check_schema` comparison; then Tortoise. Measured twice: on a database brought to
head by `python -m core upgrade` (stamped: the deploy path) and on one brought to head by plain
`aerich upgrade` (no stamp: the full comparison every time). Target: check adds under 50 ms.

    python bench/bench_startup.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
from tortoise.context import TortoiseContext  # noqa: E402

from core import migrations  # noqa: E402
from core.settings import asyncpg_url, database_url, tortoise_config  # noqa: E402
from core.startup import database, prepare  # noqa: E402
from models import Course  # noqa: E402

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


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="measured runs of each side (default 30)")
    args = parser.parse_args(argv)
    base_url = database_url()
    names = {"stamped": f"bench_{uuid.uuid4().hex[:10]}", "unstamped": f"bench_{uuid.uuid4().hex[:10]}"}
    urls = {kind: base_url.rsplit("/", 1)[0] + f"/{name}" for kind, name in names.items()}
    admin = await asyncpg.connect(asyncpg_url(base_url))
    sides = {
        "plain Tortoise": lambda: plain(urls["stamped"]),
        "check, after core upgrade": lambda: check_mode(urls["stamped"]),
        "check, after aerich upgrade": lambda: check_mode(urls["unstamped"]),
    }
    timings: dict[str, list[float]] = {side: [] for side in sides}
    try:
        for name in names.values():
            await admin.execute(f'CREATE DATABASE "{name}"')
        await prepare(urls["stamped"], "apply")
        await migrations.upgrade(urls["unstamped"])
        for run in sides.values():  # warm-up, not counted
            await run()
        for _ in range(args.repeat):
            for side, run in sides.items():
                timings[side].append(await run())
    finally:
        for name in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    medians = {side: statistics.median(values) * 1000 for side, values in timings.items()}
    for side, median in medians.items():
        print(f"{side:>27}: median {median:6.1f} ms over {args.repeat} runs (init + one query)")
    baseline = medians["plain Tortoise"]
    for side in ("check, after core upgrade", "check, after aerich upgrade"):
        added = medians[side] - baseline
        verdict = "within" if added < TARGET_MS else "over"
        print(f"{side}: adds {added:5.1f} ms ({medians[side] / baseline:.2f}x), {verdict} the {TARGET_MS} ms target")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
