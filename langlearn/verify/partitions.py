"""Findings about the monthly partitions that the schema comparison cannot see (`langlearn.partitions` keeps them).

- the current month has no partition: an error, the month's writes fail now (startup's check mode refuses);
- the next month has none: a warning, its writes will fail when it starts;
- rows sit in a DEFAULT partition, or a detach was left pending: warnings, with what to run.
Two catalog reads, plus a count of the DEFAULT partition when there is one.
"""

from __future__ import annotations

from datetime import datetime, timezone

import asyncpg

from langlearn.partitions import add_months, month_start, read_status
from langlearn.verify.findings import Finding, error, warning

CHECK = "schema"
ENSURE = "run `langlearn partitions ensure` (or let `langlearn upgrade`, startup's apply mode or the daily cron run it)"


async def check_partitions(connection: asyncpg.Connection, now: datetime | None = None) -> list[Finding]:
    status = await read_status(connection)
    this_month = month_start(now or datetime.now(timezone.utc))
    findings = []
    for table in status.tables:
        for month, found in ((this_month, error), (add_months(this_month, 1), warning)):
            for gap in table.gaps(month, add_months(month, 1)):
                when = "this month's writes fail now" if month == this_month else "writes will fail when it starts"
                findings.append(found(
                    CHECK, "missing_partition" if month == this_month else "missing_upcoming_partition", f"{table.name}.{gap.start:%Y-%m}",
                    f"{table.name} has no partition for [{gap.start:%Y-%m-%d %H:%M}, {gap.end:%Y-%m-%d %H:%M}) UTC: {when}; {ENSURE}",
                    start=gap.start.isoformat(), end=gap.end.isoformat(),
                ))
        if status.default_rows.get(table.name):
            default = table.default.name if table.default else ""
            findings.append(warning(
                CHECK, "rows_in_default_partition", f"{table.name}.{default}",
                f"{status.default_rows[table.name]} row(s) of {table.name} are in its DEFAULT partition {default}, outside any month; "
                f"`langlearn partitions ensure` moves them into their months' partitions",
                rows=status.default_rows[table.name],
            ))
        for each in table.partitions:
            if each.detach_pending:
                findings.append(warning(
                    CHECK, "detach_pending", f"{table.name}.{each.name}",
                    f"partition {each.name} of {table.name} is DETACH PENDING (a DETACH … CONCURRENTLY was interrupted); "
                    "`langlearn partitions retire` or `ensure` finishes it",
                ))
    return findings
