"""The example service's load test (tests/test_service_load.py: retries, duplicates, a database restart in the middle)
with the service behind PgBouncer in transaction mode: service → cutting proxy → PgBouncer → PostgreSQL, its
DATABASE_URL saying pool_mode=transaction and its migrate step on DATABASE_DIRECT_URL."""

from __future__ import annotations

import pytest

from tests.pgbouncer import running_pgbouncer
from tests.test_service_load import run_load

pytestmark = [pytest.mark.rig, pytest.mark.slow]


@pytest.fixture
def load_log(tmp_path):
    with open(tmp_path / "service.log", "w") as log:
        yield log


async def test_the_load_test_passes_through_pgbouncer_in_transaction_mode(server, seeded_db, connect, load_log):
    with running_pgbouncer(server.url) as bouncer:
        pooled = await bouncer.pooled(seeded_db)
        await run_load(seeded_db, pooled, connect, load_log, env={"DATABASE_DIRECT_URL": seeded_db})
        assert bouncer.logins(seeded_db) > 0, "the service did not go through PgBouncer"
