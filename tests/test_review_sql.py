"""`langlearn migrations sql --review`: what a person reads, against the runnable script it summarises.

The lock table below is transcribed from PostgreSQL's manual ("Explicit Locking" and each command's page),
independently of langlearn/history/locks.py's rules."""

from __future__ import annotations

import re

import pytest

from langlearn import history
from langlearn.history.locks import lock_note
from langlearn.history.partitionwise import expansion
from langlearn.history.plan import Plan, upgrade_plan
from langlearn.history.script import terminated
from tests.conftest import LANGLEARN, run_cli


@pytest.mark.parametrize(("statement", "expected"), [
    ('ALTER TABLE "users" ADD COLUMN "nickname" VARCHAR(50)', {("ACCESS EXCLUSIVE", "users")}),
    ('ALTER TABLE "a" ADD CONSTRAINT "a_b_fkey" FOREIGN KEY ("b_id") REFERENCES "b" ("id") ON DELETE CASCADE NOT VALID',
     {("SHARE ROW EXCLUSIVE", "a"), ("SHARE ROW EXCLUSIVE", "b")}),
    ('ALTER TABLE "a" VALIDATE CONSTRAINT "a_b_fkey"', {("SHARE UPDATE EXCLUSIVE", "a")}),
    ('ALTER TABLE "a" ADD CONSTRAINT "c" CHECK (x > 0) NOT VALID', {("ACCESS EXCLUSIVE", "a")}),
    ('ALTER TABLE "a" VALIDATE CONSTRAINT "c", ALTER COLUMN "x" SET NOT NULL', {("ACCESS EXCLUSIVE", "a")}),  # the strongest
    ('CREATE INDEX "i" ON "a" ("x")', {("SHARE", "a")}),
    ('CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "i" ON "a" ("x", "y")', {("SHARE UPDATE EXCLUSIVE", "a")}),
    ('DROP INDEX CONCURRENTLY IF EXISTS "i"', {("SHARE UPDATE EXCLUSIVE", "the table of i")}),
    ('DROP TABLE IF EXISTS "a"', {("ACCESS EXCLUSIVE", "a")}),
    ('ALTER TABLE "p" ATTACH PARTITION "p_2027_01" FOR VALUES FROM (\'2027-01-01\') TO (\'2027-02-01\')',
     {("SHARE UPDATE EXCLUSIVE", "p"), ("ACCESS EXCLUSIVE", "p_2027_01")}),
    ('ALTER TABLE "p" DETACH PARTITION "p_2020_01" CONCURRENTLY', {("SHARE UPDATE EXCLUSIVE", "p")}),
    ('CREATE TABLE "p_2027_02" PARTITION OF "p" FOR VALUES FROM (\'2027-02-01\') TO (\'2027-03-01\')', {("ACCESS EXCLUSIVE", "p")}),
    ('CREATE TABLE "c" ("id" UUID PRIMARY KEY, "a_id" UUID REFERENCES "a" ("id"))', {("SHARE ROW EXCLUSIVE", "a")}),
    ('COMMENT ON COLUMN "a"."x" IS \'why, (with) commas\'', {("SHARE UPDATE EXCLUSIVE", "a")}),
    ('-- hand edit: why\nUPDATE "a" SET "x" = 0 WHERE "x" IS NULL', {("ROW EXCLUSIVE", "a")}),
    ('CREATE TYPE "rarity" AS ENUM (\'common\', \'rare\')', set()),
    ("SET statement_timeout = 0", set()),
])
def test_each_statement_is_noted_with_the_locks_the_manual_lists(statement, expected):
    assert {(lock.mode, lock.relation) for lock in lock_note(statement).locks} == expected


def test_what_the_rules_do_not_know_is_said_not_guessed():
    assert str(lock_note("VACUUM (ANALYZE) users")) == "not classified: read it"
    assert "read it" in str(lock_note("DO $$ BEGIN PERFORM 1; END $$"))


def review_statements(review: str) -> list[str]:
    """The statements of a review, in order (each follows its `-- lock:` line)."""
    steps = re.split(r"\n\n-- (?:apply |revert) ", review)
    return [chunk.split("\n", 1)[1] for step in steps for chunk in step.split("\n\n-- lock: ")[1:]]


def whole_history() -> Plan:
    files = history.load_history()
    return upgrade_plan(files, ())


def test_the_review_holds_the_scripts_statements_in_order_and_no_bookkeeping():
    review = run_cli(LANGLEARN, "migrations", "sql", "--from", "base", "--review")
    script = run_cli(LANGLEARN, "migrations", "sql", "--from", "base")  # not a terminal: the runnable script
    assert review.returncode == script.returncode == 0, review.stderr + script.stderr
    expected = [terminated(statement) for step in whole_history().steps for statement in step.statements]
    shown = [chunk.rstrip("\n") for chunk in review_statements(review.stdout)]
    assert shown == expected
    position = 0
    for step in whole_history().steps:  # the script runs the same statements, in the same order
        for statement in step.statements:
            query = expansion(statement, in_transaction=step.transactional)  # sent as its catalog query's rows (\gexec)
            sent = terminated(statement) if query is None else f"{query}\n\\gexec"
            position = script.stdout.index(sent, position) + len(sent)
    for version in history.version_files():  # each version's header names its mode
        assert any(line.startswith("-- apply ") and version in line and ("transaction" in line) for line in review.stdout.splitlines())
    assert 'INSERT INTO "aerich"' in script.stdout and 'INSERT INTO "aerich"' not in review.stdout
    assert "pg_advisory" not in review.stdout
    assert len(review.stdout) * 5 < len(script.stdout)


def test_review_and_script_exclude_each_other():
    both = run_cli(LANGLEARN, "migrations", "sql", "--from", "base", "--review", "--script")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
