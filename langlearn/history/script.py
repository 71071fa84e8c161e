"""A plan as a psql script: the exact statements the runner sends, with its transaction boundaries, lock and timeouts.

`langlearn migrations sql --script` prints it; run as is with `psql -v ON_ERROR_STOP=1`, it leaves the
database where `langlearn upgrade` (or `downgrade`) would, bookkeeping included. `--review` (the default on
a terminal) prints what a person reads instead: each version's header with its mode and the table locks it
takes, then its statements, each with its locks; no migration lock, session settings or bookkeeping (Aerich's
row holds the whole models state: most of a script's bytes).
"""

from __future__ import annotations

from langlearn.history.lock import LOCK_STATEMENT, UNLOCK_STATEMENT
from langlearn.history.locks import STRENGTH, lock_note
from langlearn.history.partitionwise import expansion
from langlearn.history.plan import Plan, Step
from langlearn.history.runner import session_statements


def terminated(statement: str) -> str:
    """A statement ending in `;`, on a line of its own when its last line is a comment."""
    if statement.endswith(";"):
        return statement
    return statement + ("\n;" if "--" in statement.rsplit("\n", 1)[-1] else ";")


def sent(statement: str, step: Step) -> str:
    """A statement as the runner sends it: as written, or (outside a transaction) the rows of its `partitionwise` query."""
    query = expansion(statement, in_transaction=step.transactional)
    if query is None:
        return terminated(statement)
    return "\n".join([
        "-- a concurrent index build or drop: psql sends the rows of this query (partition by partition on a partitioned table)",
        query,
        "\\gexec",
    ])


def step_script(step: Step) -> str:
    """One step as the runner runs it: in BEGIN/COMMIT with its bookkeeping, or statement by statement."""
    body = [sent(statement, step) for statement in step.statements]
    bookkeeping = ["-- bookkeeping: Aerich's row and the SQL's digests", *(terminated(statement) for statement in step.bookkeeping)]
    if step.transactional:
        lines = ["BEGIN;", *body, *bookkeeping, "COMMIT;"]
    else:
        lines = [*body, "BEGIN;", *bookkeeping, "COMMIT;"]
    return "\n".join([f"-- {step.describe()}", *lines])


def render(plan: Plan, *, settings: dict[str, str], title: str) -> str:
    """The whole script: lock, session settings, preparation, each step, unlock."""
    parts = [
        f"-- {title}: {plan.summary()}",
        "-- run as is: psql -v ON_ERROR_STOP=1 -f FILE DATABASE_URL",
        "-- the migration lock langlearn takes (this script stops at once if another migrator holds it)",
        terminated(LOCK_STATEMENT),
        "-- the session's timeouts",
        *(terminated(statement) for statement in session_statements(settings)),
    ]
    if plan.preparation:
        parts += ["-- the checksum table, and the digests of migrations applied before they were kept", "BEGIN;"]
        parts += [terminated(statement) for statement in plan.preparation] + ["COMMIT;"]
    for step in plan.steps:
        parts += ["", step_script(step)]
    parts += ["", terminated(UNLOCK_STATEMENT), ""]
    return "\n".join(parts)


def render_review(plan: Plan, *, title: str) -> str:
    """The plan for a reviewer: per version its mode and strongest lock per table, then each statement under its locks."""
    parts = [f"-- {title}: {plan.summary()}",
             "-- for review: the statements only, with the table locks each takes; --script prints the runnable psql script"]
    for step in plan.steps:
        notes = [lock_note(statement) for statement in step.statements]
        strongest: dict[str, str] = {}
        for lock in (lock for note in notes for lock in note.locks):
            if STRENGTH.index(lock.mode) >= STRENGTH.index(strongest.get(lock.relation, lock.mode)):
                strongest[lock.relation] = lock.mode
        parts += ["", f"-- {step.describe()}"]
        by_mode = {mode: [relation for relation, held in strongest.items() if held == mode] for mode in reversed(STRENGTH)}
        shown = "; ".join(f"{mode} on {', '.join(relations)}" for mode, relations in by_mode.items() if relations)
        parts.append(f"-- locks, the strongest per table: {shown or 'no table lock'}")
        for statement, note in zip(step.statements, notes, strict=True):
            parts += ["", f"-- lock: {note}", terminated(statement)]
    return "\n".join([*parts, ""])
