"""The connection that copies the simulation's rows into PostgreSQL, speaking their value types (`simulation.rows`).

The simulation keeps ids as 128-bit ints and times as integer milliseconds (and dates as day numbers),
several times cheaper to make than `uuid.UUID`s and `datetime`s. This connection's asyncpg codecs turn
them into PostgreSQL's binary `uuid`, `timestamptz` and `date` as COPY sends them
(`copy_records_to_table`), so no value is ever formatted as text. Only the user tables' rows go
through it (each seed worker has one); everything else uses a plain connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import methodcaller

import asyncpg

from langlearn.seed.simulation.rows import Day, Millis, Uuid
from langlearn.seed.tables import USER_TABLES
from langlearn.settings import open_connection

PG_EPOCH_MS = 946_684_800_000  # 2000-01-01, where PostgreSQL counts its timestamps from
PG_EPOCH_DAY = 10_957  # the same day, in days since the Unix epoch


def _uuid_value(data: bytes) -> Uuid:
    return int.from_bytes(data, "big")


def _pg_timestamp(when: Millis) -> tuple[int]:
    return ((when - PG_EPOCH_MS) * 1000,)


def _millis(pg: tuple[int]) -> Millis:
    return pg[0] // 1000 + PG_EPOCH_MS


def _pg_date(day: Day) -> tuple[int]:
    return (day - PG_EPOCH_DAY,)


def _day(pg: tuple[int]) -> Day:
    return pg[0] + PG_EPOCH_DAY


async def open_loader(url: str) -> asyncpg.Connection:
    """A connection to `url` whose uuid, timestamptz and date parameters and results are `Uuid`, `Millis` and `Day`."""
    connection = await open_connection(url)
    try:
        await connection.set_type_codec("uuid", schema="pg_catalog", format="binary",
                                        encoder=methodcaller("to_bytes", 16, "big"), decoder=_uuid_value)
        await connection.set_type_codec("timestamptz", schema="pg_catalog", format="tuple", encoder=_pg_timestamp, decoder=_millis)
        await connection.set_type_codec("date", schema="pg_catalog", format="tuple", encoder=_pg_date, decoder=_day)
    except BaseException:
        await connection.close()
        raise
    return connection


async def copy_rows(loader: asyncpg.Connection, table: str, rows: Sequence[tuple[object, ...]]) -> None:
    """COPY one user table's rows (in its `USER_TABLES` column order) through a loader connection."""
    await loader.copy_records_to_table(table, records=rows, columns=USER_TABLES[table])
