"""Data migration recipe, step 4 of 4 (contract, second half): validate step 3's constraints; course_id NOT NULL.

- VALIDATE CONSTRAINT scans the table under SHARE UPDATE EXCLUSIVE: reads and writes go on meanwhile.
- SET NOT NULL then finds the validated CHECK, which proves the column has no NULL, and skips its scan
  (PostgreSQL >= 12): its ACCESS EXCLUSIVE lock, taken last, is held only until the COMMIT right after.
  The CHECK, redundant from then on, is dropped in the same transaction.

The downgrade leaves things as step 3 did: the column nullable, both constraints back to NOT VALID (the
foreign key dropped and added again in one ALTER: PostgreSQL has no "invalidate").
"""

RUN_IN_TRANSACTION = True


async def upgrade(db) -> str:
    return """
        -- hand edit: validated apart from their ADD, under SHARE UPDATE EXCLUSIVE: reads and writes go on
        ALTER TABLE "lesson_attempts" VALIDATE CONSTRAINT "lesson_attempts_course_id_not_null";
        ALTER TABLE "lesson_attempts" VALIDATE CONSTRAINT "lesson_attempts_course_id_fkey";
        -- hand edit: no scan, the validated CHECK proves it; ACCESS EXCLUSIVE is taken last, held until the COMMIT right after
        ALTER TABLE "lesson_attempts" ALTER COLUMN "course_id" SET NOT NULL;
        ALTER TABLE "lesson_attempts" DROP CONSTRAINT "lesson_attempts_course_id_not_null";"""


async def downgrade(db) -> str:
    return """
        ALTER TABLE "lesson_attempts" ADD CONSTRAINT "lesson_attempts_course_id_not_null" CHECK ("course_id" IS NOT NULL) NOT VALID;
        ALTER TABLE "lesson_attempts" ALTER COLUMN "course_id" DROP NOT NULL;
        ALTER TABLE "lesson_attempts" DROP CONSTRAINT "lesson_attempts_course_id_fkey",
            ADD CONSTRAINT "lesson_attempts_course_id_fkey" FOREIGN KEY ("course_id") REFERENCES "courses" ("id") ON DELETE CASCADE NOT VALID;"""
