"""What an upgrade or a downgrade will do: the migrations in the order they run, each with its statements and bookkeeping.

A plan is built from the files and the versions a database recorded (or, offline, the version it
is assumed to be at), and then either run (`runner`) or printed (`script`): both read the same
steps, so the SQL a reviewer approves is the SQL the runner sends.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from langlearn.errors import UsageError
from langlearn.history.checksums import CREATE_CHECKSUM_TABLE, record_applied, record_checksum, record_reverted
from langlearn.history.files import Direction, History, Migration


@dataclass(frozen=True)
class Step:
    """One migration applied or reverted."""

    migration: Migration
    direction: Direction

    @property
    def version(self) -> str:
        return self.migration.version

    @property
    def transactional(self) -> bool:
        return self.migration.transactional

    @property
    def statements(self) -> tuple[str, ...]:
        return self.migration.statements(self.direction)

    @property
    def bookkeeping(self) -> tuple[str, ...]:
        return record_applied(self.migration) if self.direction == "up" else record_reverted(self.migration)

    def describe(self) -> str:
        verb = "apply " if self.direction == "up" else "revert"
        count = len(self.statements)
        return f"{verb} {self.version}  {self.migration.mode}, {count} statement{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class Plan:
    """The steps from `start` (the newest applied version, None for none) to `end`."""

    direction: Direction
    start: str | None
    end: str | None
    steps: tuple[Step, ...]
    adopt: tuple[Migration, ...] = ()  # applied migrations whose digests are not recorded yet

    @property
    def preparation(self) -> tuple[str, ...]:
        """Bookkeeping before the first step, in one transaction: the checksum table, and the digests of
        the applied migrations that have none."""
        if not (self.adopt or self.steps):
            return ()
        return (CREATE_CHECKSUM_TABLE, *(record_checksum(migration, "adopt") for migration in self.adopt))

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(step.version for step in self.steps)

    def summary(self) -> str:
        """One line: what the plan does, from where to where."""
        start, end = self.start or "no version", self.end or "no version"
        if not self.steps:
            return f"nothing to {'apply' if self.direction == 'up' else 'revert'}: the database stays at {start}"
        verb = "apply" if self.direction == "up" else "revert"
        return f"{verb} {len(self.steps)} migration(s): from {start} to {end}"


def upgrade_plan(history: History, applied: Collection[str], to: Migration | None = None) -> Plan:
    """Apply every migration not yet applied, in order, up to and including `to` (default: head)."""
    limit = to.number if to is not None else None
    steps = tuple(
        Step(migration, "up") for migration in history if migration.version not in applied and (limit is None or migration.number <= limit)
    )
    return Plan("up", _newest(history, applied), _newest(history, [*applied, *(step.version for step in steps)]), steps)


def downgrade_plan(history: History, applied: Collection[str], to: Migration | None) -> Plan:
    """Revert every applied migration above `to` (None: all of them), newest first; `to` stays applied."""
    unknown = [version for version in applied if version not in history.versions]
    if unknown:
        raise UsageError(
            f"the database recorded {', '.join(unknown)}, which this code does not have, so it cannot revert it; "
            "run the downgrade with the code that has it"
        )
    limit = to.number if to is not None else -1
    steps = tuple(Step(migration, "down") for migration in reversed(history.migrations) if migration.version in applied and migration.number > limit)
    start = _newest(history, applied)
    remaining = [version for version in applied if version not in {step.version for step in steps}]
    return Plan("down", start, _newest(history, remaining), steps)


def steps_back(history: History, applied: Collection[str], steps: int) -> Migration | None:
    """The migration a database ends at after reverting its `steps` newest applied migrations (None: none left)."""
    if steps < 1:
        raise UsageError(f"steps must be at least 1, not {steps}", command_line=f"--steps must be at least 1, not {steps}")
    newest_first = [migration for migration in reversed(history.migrations) if migration.version in applied]
    if steps > len(newest_first):
        raise UsageError(f"cannot revert {steps} migration(s): the database has {len(newest_first)} applied")
    return newest_first[steps] if steps < len(newest_first) else None


def assumed_applied(history: History, at: Migration | None) -> list[str]:
    """Offline: the versions a database at `at` has applied (every one up to it)."""
    return [migration.version for migration in history if at is not None and migration.number <= at.number]


def _newest(history: History, applied: Collection[str]) -> str | None:
    known = [migration for migration in history if migration.version in applied]
    return known[-1].version if known else None
