"""Revisions: an append-only record of every value a run's policy and a job's tracked fields have held.

Ledgers of 0.1.0 overwrote these on every resumed attempt. Their current values are carried over as first revisions
(old value null, attempt null, time of the upgrade): what they held before that was already lost.

Revision ID: 0002_revisions
Revises: 0001_baseline
Create Date: 2026-12-07
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002_revisions"
down_revision: str | None = "0001_baseline"
branch_labels: str | None = None
depends_on: str | None = None

JOB_FIELDS = ("keep_top_k", "output_format", "screening")


def _sha256(value: Any) -> str:
    # Frozen copy of tasks.storage.ledger.value_sha256: a migration must not change when the code does.
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def upgrade() -> None:
    """Create the revisions table and carry the runs' policies and the jobs' tracked fields over into it."""
    revisions = op.create_table(
        "revisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=96), nullable=False),
        sa.Column("job_key", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("old", sa.JSON(), nullable=True),
        sa.Column("new", sa.JSON(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
        sa.ForeignKeyConstraint(["run_id", "job_key"], ["jobs.run_id", "jobs.job_key"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_revisions_run_id_job_key", "revisions", ["run_id", "job_key"], unique=False)

    runs = sa.table("runs", sa.column("run_id", sa.String()), sa.column("policy", sa.JSON()))
    jobs = sa.table(
        "jobs",
        sa.column("run_id", sa.String()),
        sa.column("job_key", sa.String()),
        sa.column("keep_top_k", sa.Integer()),
        sa.column("output_format", sa.String()),
        sa.column("screening", sa.JSON()),
    )
    bind = op.get_bind()
    now = datetime.now(UTC)
    carried: list[dict[str, Any]] = []
    for run_id, policy in bind.execute(sa.select(runs.c.run_id, runs.c.policy).order_by(runs.c.run_id)):
        carried.append(_revision(run_id, None, "policy", policy, now))
    query = sa.select(jobs).order_by(jobs.c.run_id, jobs.c.job_key)
    for job in bind.execute(query).mappings():
        for name in JOB_FIELDS:
            if job[name] is not None:
                carried.append(_revision(job["run_id"], job["job_key"], name, job[name], now))
    if carried:
        op.bulk_insert(revisions, carried)


def _revision(run_id: str, job_key: str | None, name: str, value: Any, at: datetime) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "job_key": job_key,
        "name": name,
        "old": None,
        "new": value,
        "sha256": _sha256(value),
        "attempt": None,
        "at": at,
    }


def downgrade() -> None:
    """Not provided: the ledger is append-only; a downgrade would drop the recorded revisions."""
    raise NotImplementedError("ledger migrations are not reversible; restore a backup instead.")
