"""Data migration recipe, step 1 of 4 (expand): add lesson_attempts.course_id, NULL for now, kept right from here on.

A learner's attempts in one course, newest first (a course's progress screen), should not need a join
through lessons on every read, so each lesson attempt gets its lesson's course_id. Step 2 fills the rows
that exist, in batches, and indexes the column; steps 3 and 4 make it NOT NULL and a foreign key to courses.
(The history tables question_attempts and activity_feeds are partitioned, where an index cannot be built
CONCURRENTLY in one statement: this recipe is for a plain table, lesson_attempts being the largest.)

- The column is added nullable and without a default: a catalog change only, no table rewrite, so this
  transaction holds its ACCESS EXCLUSIVE lock for milliseconds (a volatile default, or a
  `GENERATED ... STORED` column, would rewrite the table under that lock).
- A trigger fills course_id on every row written from now on, by whatever code writes it (the running
  service does not know the column yet). So the backfill has only the rows that existed before this
  commit, and nothing it has done can go stale behind it (a lesson's course never changes). `UPDATE OF lesson_id` only: the
  backfill's own UPDATE (of course_id) does not pay for the lookup twice.
- Pure SQL, no import of the application: a migration is frozen when it is written, whatever the
  models become later.

MODELS_STATE: a real migration carries the one `aerich migrate --empty --name ...` wrote, with the model
change (`course = ForeignKeyField(..., null=True)` here, then `null=False` in step 4). This recipe changes no
model, so tests/test_data_migration.py gives each copy it runs the head's.
"""

RUN_IN_TRANSACTION = True


async def upgrade(db) -> str:
    return """
        -- hand edit: nullable and no default, so no table rewrite; no foreign key yet (Aerich adds one here, validated: step 3)
        ALTER TABLE "lesson_attempts" ADD COLUMN "course_id" UUID;
        -- hand edit: rows written from now on get their course_id, whatever code writes them
        CREATE FUNCTION "lesson_attempts_course_id"() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            SELECT l.course_id INTO NEW.course_id FROM lessons AS l WHERE l.id = NEW.lesson_id;
            RETURN NEW;
        END
        $$;
        CREATE TRIGGER "lesson_attempts_course_id" BEFORE INSERT OR UPDATE OF "lesson_id" ON "lesson_attempts"
            FOR EACH ROW EXECUTE FUNCTION "lesson_attempts_course_id"();"""


async def downgrade(db) -> str:
    return """
        DROP TRIGGER "lesson_attempts_course_id" ON "lesson_attempts";
        DROP FUNCTION "lesson_attempts_course_id"();
        ALTER TABLE "lesson_attempts" DROP COLUMN "course_id";"""
