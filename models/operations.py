"""Operations: records the tools keep about what they did to the database (not product data)."""

from __future__ import annotations

from enum import Enum
from typing import Any

from tortoise import fields
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint

from langlearn.models.base import TimestampedModel, counter, json_object
from langlearn.models.enums import NativeEnumField, pg_enum


@pg_enum("seed_preset")
class SeedPreset(str, Enum):
    DEMO = "demo"
    SCALE = "scale"


@pg_enum("seed_run_status")
class SeedRunStatus(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class SeedRun(TimestampedModel):
    """One seed of this database by `langlearn seed`: what was asked, how far it got, what it wrote.

    A run is a fixed list of steps (the content, then one step per batch of users, then the league
    ranks), each committed in the same transaction as the `steps_done` that counts it, so a killed
    run resumes after its last committed step. `anchor_at` is the end of the simulated history,
    fixed at the first start so that a resumed run writes the same rows as an uninterrupted one.
    `counts` holds the rows written per table. One row per (preset, seed): running the same seed
    again resumes or confirms this row instead of adding another.

    A bulk load (a large seed of a fresh database) takes the user tables' keys, indexes and foreign keys
    off while it copies, and rebuilds them at the end, as pg_restore does; `deferred` holds their
    definitions, read from the catalog before they were dropped, from the moment they are dropped until
    all are rebuilt (then NULL). A run killed in between finishes the rebuild when it is run again.
    """

    preset = NativeEnumField(SeedPreset)
    seed = fields.BigIntField(description="the random seed every generated value derives from")
    code_version = fields.CharField(max_length=64, description="package version + digest of the seed's code and data")
    parameters = json_object(description="users, batch size and the other inputs of the run")
    anchor_at = fields.DatetimeField(description="end of the simulated history; nothing generated lies after it")
    status = NativeEnumField(SeedRunStatus, default=SeedRunStatus.RUNNING, db_default=SeedRunStatus.RUNNING)
    steps_total = fields.IntField()
    steps_done = counter()
    counts = json_object(description="rows written per table")
    resumes = counter(description="how many times an interrupted run was started again")
    error = fields.TextField(null=True, description="why the last attempt failed, when it did")
    deferred: fields.JSONField[list[dict[str, Any]] | None] = fields.JSONField(
        null=True, description="the keys, indexes and foreign keys a bulk load took off, until they are rebuilt"
    )
    started_at = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "seed_runs"
        constraints = (
            CheckConstraint(check="seed >= 0", name="seed_runs_seed_check"),
            CheckConstraint(check="steps_done >= 0 AND steps_done <= steps_total", name="seed_runs_steps_check"),
            CheckConstraint(check="resumes >= 0", name="seed_runs_resumes_check"),
            CheckConstraint(
                check="(status = 'completed') = (finished_at IS NOT NULL)", name="seed_runs_finished_check"
            ),
            UniqueConstraint(fields=("preset", "seed"), name="seed_runs_preset_seed_key"),
        )

    def __str__(self) -> str:
        return f"{self.preset.value} seed {self.seed} ({self.status.value})"
