"""Empty database -> head: the project's Aerich history versus Tortoise.generate_schemas().

Both run in-process against fresh databases on the same server in the same run, alternating, so
machine noise hits both alike. generate_schemas cannot create native enum types, so its side
creates them first (and it still builds less: no CHECK or named UNIQUE constraints).

    python bench/bench_migrations.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from tortoise import Tortoise
from tortoise.context import TortoiseContext

from langlearn import history
from langlearn.databases import ScratchDatabases
from langlearn.models.enums import ENUM_TYPES, create_type_sql
from langlearn.settings import database_url, tortoise_config


async def timed_on_fresh_database(scratch: ScratchDatabases, work) -> float:
    url = await scratch.create()
    try:
        started = time.perf_counter()
        await work(url)
        return time.perf_counter() - started
    finally:
        await scratch.drop(url)


async def apply_history(url: str) -> None:
    await history.upgrade(url)


async def generate_schemas(url: str) -> None:
    async with TortoiseContext():
        await Tortoise.init(config=tortoise_config(url))
        connection = Tortoise.get_connection("default")
        await connection.execute_script("\n".join(create_type_sql(enum) for enum in ENUM_TYPES.values()))
        await Tortoise.generate_schemas(safe=False)
        await Tortoise.close_connections()


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="repetitions of each side (default 7)")
    args = parser.parse_args(argv)
    scratch = ScratchDatabases(database_url(), "bench_migrations_")
    timings: dict[str, list[float]] = {"aerich history": [], "generate_schemas": []}
    await timed_on_fresh_database(scratch, apply_history)  # warm imports and caches
    for _ in range(args.repeat):
        timings["aerich history"].append(await timed_on_fresh_database(scratch, apply_history))
        timings["generate_schemas"].append(await timed_on_fresh_database(scratch, generate_schemas))
    medians = {side: statistics.median(values) for side, values in timings.items()}
    for side, median in medians.items():
        print(f"{side:>17}: median {median * 1000:7.1f} ms over {args.repeat} runs")
    ratio = medians["aerich history"] / medians["generate_schemas"]
    print(f"ratio history / generate_schemas: {ratio:.2f}x (target <= 1.5x) over {len(history.version_files())} migrations")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
