"""Baseline: the ledger schema of version 0.1.0, as `Base.metadata.create_all` made it before migrations existed.

A ledger made by 0.1.0 (tables present, no alembic_version) is stamped with this revision instead of running it.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001_baseline"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the 0.1.0 tables: runs, jobs, candidates, embeddings, history, assets, audits."""
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(length=96), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("campaign_name", sa.Text(), nullable=False),
        sa.Column("manifest_path", sa.Text(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("run_dir", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index("ix_runs_campaign_id", "runs", ["campaign_id"], unique=False)
    op.create_table(
        "jobs",
        sa.Column("run_id", sa.String(length=96), nullable=False),
        sa.Column("job_key", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.String(length=64), nullable=False),
        sa.Column("variant", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("keep_top_k", sa.Integer(), nullable=False),
        sa.Column("output_format", sa.String(length=8), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("screening", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"]),
        sa.PrimaryKeyConstraint("run_id", "job_key"),
    )
    op.create_table(
        "candidates",
        sa.Column("run_id", sa.String(length=96), nullable=False),
        sa.Column("candidate_id", sa.String(length=32), nullable=False),
        sa.Column("job_key", sa.String(length=32), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=False),
        sa.Column("model_ref", sa.Text(), nullable=False),
        sa.Column("model_identity", sa.JSON(), nullable=False),
        sa.Column("pipeline_kind", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("guidance", sa.Float(), nullable=False),
        sa.Column("scheduler", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("image_path", sa.Text(), nullable=True),
        sa.Column("image_sha256", sa.String(length=64), nullable=True),
        sa.Column("pixel_sha256", sa.String(length=64), nullable=True),
        sa.Column("generation", sa.JSON(), nullable=False),
        sa.Column("clip_model", sa.Text(), nullable=True),
        sa.Column("clip_score", sa.Float(), nullable=True),
        sa.Column("clip_cosine", sa.Float(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("safety", sa.JSON(), nullable=True),
        sa.Column("review", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id", "job_key"], ["jobs.run_id", "jobs.job_key"]),
        sa.PrimaryKeyConstraint("run_id", "candidate_id"),
    )
    op.create_index("ix_candidates_candidate_id", "candidates", ["candidate_id"], unique=False)
    op.create_index("ix_candidates_state", "candidates", ["state"], unique=False)
    op.create_table(
        "embeddings",
        sa.Column("run_id", sa.String(length=96), nullable=False),
        sa.Column("candidate_id", sa.String(length=32), nullable=False),
        sa.Column("clip_model", sa.Text(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_id", "candidate_id"], ["candidates.run_id", "candidates.candidate_id"]),
        sa.PrimaryKeyConstraint("run_id", "candidate_id", "clip_model"),
    )
    op.create_table(
        "history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=96), nullable=False),
        sa.Column("candidate_id", sa.String(length=32), nullable=True),
        sa.Column("from_state", sa.String(length=24), nullable=True),
        sa.Column("to_state", sa.String(length=24), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_history_candidate_id", "history", ["candidate_id"], unique=False)
    op.create_index("ix_history_run_id", "history", ["run_id"], unique=False)
    op.create_table(
        "assets",
        sa.Column("asset_key", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=96), nullable=False),
        sa.Column("candidate_id", sa.String(length=32), nullable=False),
        sa.Column("watermark_method", sa.String(length=32), nullable=True),
        sa.Column("payload_hex", sa.String(length=32), nullable=True),
        sa.Column("final_path", sa.Text(), nullable=True),
        sa.Column("final_sha256", sa.String(length=64), nullable=True),
        sa.Column("mime", sa.String(length=32), nullable=True),
        sa.Column("manifest_label", sa.Text(), nullable=True),
        sa.Column("validation_state", sa.String(length=16), nullable=True),
        sa.Column("signer", sa.Text(), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published", sa.JSON(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id", "candidate_id"], ["candidates.run_id", "candidates.candidate_id"]),
        sa.PrimaryKeyConstraint("asset_key"),
        sa.UniqueConstraint("run_id", "candidate_id"),
    )
    op.create_index("ix_assets_payload_hex", "assets", ["payload_hex"], unique=False)
    op.create_table(
        "audits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("audited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("object", sa.Text(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(length=96), nullable=True),
        sa.Column("candidate_id", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audits_audited_at", "audits", ["audited_at"], unique=False)
    op.create_index("ix_audits_object", "audits", ["object"], unique=False)
    op.create_index("ix_audits_verdict", "audits", ["verdict"], unique=False)
    op.create_index("ix_audits_run_id", "audits", ["run_id"], unique=False)
    op.create_index("ix_audits_candidate_id", "audits", ["candidate_id"], unique=False)


def downgrade() -> None:
    """Not provided: the ledger is append-only; dropping the baseline would delete every record."""
    raise NotImplementedError("ledger migrations are not reversible; restore a backup instead.")
