"""Data migration recipe, step 1 of 4 (expand): add question_attempts.user_id, NULL for now, kept right from here on.

A user's answers, newest first, should not need a join through lesson_attempts on every read, so each
question attempt gets its lesson attempt's user_id. Step 2 fills the rows that exist, in batches, and
indexes the column; steps 3 and 4 make it NOT NULL and a foreign key to users.

- The column is added nullable and without a default: a catalog change only, no table rewrite, so this
  transaction holds its ACCESS EXCLUSIVE lock for milliseconds (a volatile default, or a
  `GENERATED ... STORED` column, would rewrite the table under that lock).
- A trigger fills user_id on every row written from now on, by whatever code writes it (the running
  service does not know the column yet). So the backfill has only the rows that existed before this
  commit, and nothing it has done can go stale behind it (a lesson attempt's user never changes). `UPDATE OF lesson_attempt_id` only: the
  backfill's own UPDATE (of user_id) does not pay for the lookup twice.
- Pure SQL, no import of the application: a migration is frozen when it is written, whatever the
  models become later.

MODELS_STATE: a real migration carries the one `aerich migrate --empty --name ...` wrote, with the model
change (`user = ForeignKeyField(..., null=True)` here, then `null=False` in step 4). This recipe changes no
model, so tests/test_data_migration.py gives each copy it runs the head's.
"""

RUN_IN_TRANSACTION = True


async def upgrade(db) -> str:
    return """
        -- hand edit: nullable and no default, so no table rewrite; no foreign key yet (Aerich adds one here, validated: step 3)
        ALTER TABLE "question_attempts" ADD COLUMN "user_id" UUID;
        -- hand edit: rows written from now on get their user_id, whatever code writes them
        CREATE FUNCTION "question_attempts_user_id"() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            SELECT a.user_id INTO NEW.user_id FROM lesson_attempts AS a WHERE a.id = NEW.lesson_attempt_id;
            RETURN NEW;
        END
        $$;
        CREATE TRIGGER "question_attempts_user_id" BEFORE INSERT OR UPDATE OF "lesson_attempt_id" ON "question_attempts"
            FOR EACH ROW EXECUTE FUNCTION "question_attempts_user_id"();"""


async def downgrade(db) -> str:
    return """
        DROP TRIGGER "question_attempts_user_id" ON "question_attempts";
        DROP FUNCTION "question_attempts_user_id"();
        ALTER TABLE "question_attempts" DROP COLUMN "user_id";"""
