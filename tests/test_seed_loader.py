"""The seed's loader connection (langlearn.seed.loader): the simulation's ints become the right uuid, instant and date.

The simulation keeps ids as ints, instants as milliseconds since the Unix epoch and dates as days since it;
an off-by-an-epoch mistake would still load, so each conversion is checked against PostgreSQL's own reading.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from uuid import UUID

from langlearn.seed.loader import open_loader
from langlearn.seed.simulation.clock import from_date, iso_seconds, millis


async def test_ints_arrive_as_the_uuid_instant_and_date_they_stand_for(empty_db):
    loader = await open_loader(empty_db)
    try:
        await loader.execute("SET TIME ZONE 'UTC'")
        some_id = UUID("7d444840-9dc0-4b0d-8c1e-3e5a6f0a1b2c")
        instant = datetime(2026, 11, 23, 7, 5, 9, 123000, tzinfo=timezone.utc)
        row = await loader.fetchrow(
            "SELECT $1::uuid::text AS id, $2::timestamptz::text AS instant, $3::date::text AS day",
            some_id.int, millis(instant), from_date(date(2026, 2, 28)))
        assert dict(row) == {"id": str(some_id), "instant": "2026-11-23 07:05:09.123+00", "day": "2026-02-28"}
        before_2000 = millis(datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone.utc))  # negative on PostgreSQL's clock
        assert await loader.fetchval("SELECT $1::timestamptz::text", before_2000) == "1999-12-31 23:59:59+00"
        back = await loader.fetchrow("SELECT $1::uuid AS id, $2::timestamptz AS instant, $3::date AS day",
                                     some_id.int, millis(instant), from_date(date(2026, 2, 28)))
        assert (back["id"], back["instant"], back["day"]) == (some_id.int, millis(instant), from_date(date(2026, 2, 28)))
    finally:
        await loader.close()


def test_review_times_are_spelled_as_isoformat_spells_them():
    for instant in (datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 11, 23, 23, 59, 59, 999000, tzinfo=timezone.utc)):
        assert iso_seconds(millis(instant)) == instant.isoformat(timespec="seconds")
