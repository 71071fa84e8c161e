"""Data migration recipe, step 3 of 4 (contract, first half): lesson_attempts.course_id's constraints, NOT VALID.

Added NOT VALID, a constraint checks the rows written from now on and none of those already there, so
adding it takes its lock for milliseconds instead of for a scan of the table:

- CHECK (course_id IS NOT NULL), the way to NOT NULL without a scan under ACCESS EXCLUSIVE (step 4);
- the foreign key to courses (a brief SHARE ROW EXCLUSIVE on both tables).

Step 4 validates both in a transaction of its own: validated in this one, the scan would run under the
locks taken here. One transaction, so a failure (a lock timeout) leaves nothing behind to rerun around.
"""

RUN_IN_TRANSACTION = True


async def upgrade(db) -> str:
    return """
        -- hand edit: NOT VALID, so that neither ADD scans the table under its lock; step 4 validates them
        ALTER TABLE "lesson_attempts" ADD CONSTRAINT "lesson_attempts_course_id_not_null" CHECK ("course_id" IS NOT NULL) NOT VALID;
        ALTER TABLE "lesson_attempts" ADD CONSTRAINT "lesson_attempts_course_id_fkey"
            FOREIGN KEY ("course_id") REFERENCES "courses" ("id") ON DELETE CASCADE NOT VALID;"""


async def downgrade(db) -> str:
    return """
        ALTER TABLE "lesson_attempts" DROP CONSTRAINT "lesson_attempts_course_id_fkey";
        ALTER TABLE "lesson_attempts" DROP CONSTRAINT "lesson_attempts_course_id_not_null";"""
