"""The verification of partitioned tables: a partitioned table is one table (its key, its partition key,
its indexes), its partitions are its storage and never extra tables, and a partition lacking one of its
table's indexes is reported."""

from __future__ import annotations

from langlearn import history
from langlearn.verify import check_schema, expected_schema
from tests.test_verify import assert_reported, found

PARTITIONED = ("activity_feeds", "question_attempts")
WIDENED_KEYS = "12"  # the migration that gives both tables the key (id, created_at), before 13 partitions them


def test_the_models_declare_both_history_tables_partitioned_by_month_with_created_at_in_their_key():
    tables = expected_schema().tables
    for name in PARTITIONED:
        assert tables[name].partition_key == "RANGE (created_at)"
        assert tables[name].primary_key == ("id", "created_at")
    assert {name for name, table in tables.items() if table.partition_key} == set(PARTITIONED)


async def test_at_head_the_partitioned_tables_and_their_partitions_verify_clean(head_db, connect):
    connection = await connect(head_db)
    partitions = await connection.fetchval(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY($1::text[]) AND p.relkind = 'p'",
        list(PARTITIONED),
    )
    assert partitions >= 2 * 5  # the first partition, three months at least, the DEFAULT one: none of them an extra table
    assert await check_schema(connection) == []


async def test_a_history_table_that_is_not_partitioned_is_reported_with_the_fix(head_db, connect):
    await history.downgrade(head_db, to=WIDENED_KEYS)  # the schema check alone: the CLI would report the pending migration too
    # only what concerns the history tables: the downgrade also reverts any migration after 13 (a user's, say)
    findings = [finding for finding in await check_schema(await connect(head_db)) if finding.subject.split(".")[0] in PARTITIONED]
    assert found(findings) == {("error", "partitioning_differs", name) for name in PARTITIONED}
    assert all("is a plain table, the model says it is partitioned by RANGE (created_at)" in finding.message for finding in findings)


async def test_a_partition_lacking_an_index_of_its_table_is_reported_per_partition(head_db, connect):
    """An index built partition by partition (CREATE INDEX ON ONLY the table, then each partition's, then ATTACH),
    stopped after the first: the table's index is INVALID and every other partition lacks it."""
    connection = await connect(head_db)
    partitions = [row["name"] for row in await connection.fetch(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'activity_feeds'::regclass ORDER BY 1"
    )]
    await connection.execute('DROP INDEX "idx_activity_feed_public"')
    await connection.execute('CREATE INDEX "idx_activity_feed_public" ON ONLY "activity_feeds" ("user_id", "is_public", "created_at")')
    built = f"{partitions[0]}_feed_idx"
    await connection.execute(f'CREATE INDEX "{built}" ON "{partitions[0]}" ("user_id", "is_public", "created_at")')
    await connection.execute(f'ALTER INDEX "idx_activity_feed_public" ATTACH PARTITION "{built}"')
    expected = {("error", "partition_index_missing", f"{partition}.idx_activity_feed_public") for partition in partitions[1:]}
    expected.add(("error", "invalid_index", "activity_feeds.idx_activity_feed_public"))
    findings = await assert_reported(head_db, connection, check_schema, expected)
    missing = next(finding for finding in findings if finding.kind == "partition_index_missing")
    assert 'ATTACH PARTITION' in missing.message and missing.details["table"] == "activity_feeds"
