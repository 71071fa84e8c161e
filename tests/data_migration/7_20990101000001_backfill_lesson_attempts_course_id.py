"""Data migration recipe, step 2 of 4 (backfill): fill lesson_attempts.course_id of the rows older than step 1, then index it.

One `UPDATE ... FROM lesson_attempts` would lock every row of the table until it commits, leave a
table's worth of dead row versions no vacuum can reclaim before then, and lose everything if it fails
at the end. Instead:

- Batches of `batch_size` rows, each committed inside the DO block (PostgreSQL >= 11, outside a
  transaction: hence `RUN_IN_TRANSACTION = False`, which the runner honours by sending each statement
  on its own in autocommit). A batch's row locks last one batch; a writer that meets one waits that long.
- Batches walk the primary key (`id > last_id ORDER BY id LIMIT n`): each is an index range, so it costs
  its own rows; `WHERE course_id IS NULL` alone would rescan the rows already done, once per batch.
- Resumable: a batch commits or vanishes, and `course_id IS NULL` skips what is done, so a run killed
  midway (the migration is then not recorded) continues where it stopped when the upgrade runs again.
  Rows the trigger of step 1 filled are skipped too.
- No `SKIP LOCKED`: a row skipped behind the key walk would stay NULL. Waiting for a writer's row lock
  costs at most that writer's short transaction, and the session's lock_timeout still bounds it.
- statement_timeout is armed once per top-level statement: COMMITs inside a DO block neither end nor
  re-arm it, and a SET inside the block is too late (measured on PostgreSQL 16,
  test_statement_timeout_bounds_a_do_block_as_a_whole). The runner's 120 s would so bound the whole
  backfill, however short each batch. The file lifts it for the DO statement only: saves the session's
  value, runs the backfill without one, restores it for the migrations after this one. lock_timeout
  stays, and the server's client check stops the backfill if the migrating process dies.
- `pause` between batches (0 here) is the throttle to raise when replicas or autovacuum fall behind.
- The index is built after the backfill (once, instead of updated with every batch), CONCURRENTLY: no
  lock that blocks writes, which needs `RUN_IN_TRANSACTION = False` too. A rerun must not keep the
  INVALID index an interrupted CREATE INDEX CONCURRENTLY leaves behind, which `IF NOT EXISTS` alone
  would: hence the DROP INDEX before it. It runs under the session's statement_timeout again.

The downgrade drops the index and leaves the values: at step 1, course_id is "NULL or the lesson's
course", which the filled rows are, and reverting step 1 drops the column.
"""

from langlearn.history.aerich import statement_by_statement

RUN_IN_TRANSACTION = False


async def upgrade(db) -> str:
    # hand edit: Aerich would send the script as one string (one implicit transaction); this sends it statement by statement
    return await statement_by_statement(db, __file__, """
        -- hand edit: statement_timeout would bound the whole DO block, COMMITs and all: lifted for it alone, then restored
        SELECT set_config('langlearn.saved_statement_timeout', current_setting('statement_timeout'), false);
        SET statement_timeout = 0;
        -- hand edit: the backfill, a committed transaction per batch of rows, walking the primary key
        DO $$
        DECLARE
            batch_size CONSTANT integer := 1000;
            pause CONSTANT interval := '0 s';
            last_id uuid := '00000000-0000-0000-0000-000000000000';  -- below every id; uuid4 never makes this one
            batch_end uuid;
        BEGIN
            LOOP
                SELECT id INTO batch_end
                FROM (SELECT id FROM lesson_attempts WHERE id > last_id ORDER BY id LIMIT batch_size) AS batch
                ORDER BY id DESC LIMIT 1;
                EXIT WHEN batch_end IS NULL;
                UPDATE lesson_attempts AS a SET course_id = l.course_id
                FROM lessons AS l
                WHERE l.id = a.lesson_id AND a.id > last_id AND a.id <= batch_end AND a.course_id IS NULL;
                COMMIT;
                last_id := batch_end;
                PERFORM pg_sleep_for(pause);
            END LOOP;
        END
        $$;
        SELECT set_config('statement_timeout', current_setting('langlearn.saved_statement_timeout'), false);
        -- hand edit: CONCURRENTLY, after the backfill; dropped first, so that a rerun keeps no INVALID index
        DROP INDEX CONCURRENTLY IF EXISTS "idx_lesson_attempt_course_started";
        CREATE INDEX CONCURRENTLY IF NOT EXISTS "idx_lesson_attempt_course_started" ON "lesson_attempts" ("course_id", "started_at");""")


async def downgrade(db) -> str:
    return await statement_by_statement(db, __file__, """
        DROP INDEX CONCURRENTLY IF EXISTS "idx_lesson_attempt_course_started";""")
