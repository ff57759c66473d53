"""Assets: the finalized file's pixel size and a fingerprint of its pixels, for the audit.

The size is filled in for assets finalized before this revision: finalize has recorded every upscale it made in the
asset's provenance (``upscaled_from``) since it existed, so the delivered size is the candidate's size scaled the way
finalize scales it, or the candidate's own size when no upscale was noted. Their fingerprints cannot be made without
their files; they stay empty, and the audit says so for their copies.

Revision ID: 0003_final_size_fingerprint
Revises: 0002_revisions
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003_final_size_fingerprint"
down_revision: str | None = "0002_revisions"
branch_labels: str | None = None
depends_on: str | None = None

UPSCALE_MIN_SIDE = 256  # frozen copy of tasks.provenance.watermark.MIN_SIDE, which finalize upscaled small images to


def upgrade() -> None:
    """Add final_width, final_height and fingerprint to assets; fill the sizes of finalized assets."""
    op.add_column("assets", sa.Column("final_width", sa.Integer(), nullable=True))
    op.add_column("assets", sa.Column("final_height", sa.Integer(), nullable=True))
    op.add_column("assets", sa.Column("fingerprint", sa.LargeBinary(), nullable=True))

    assets = sa.table(
        "assets",
        sa.column("asset_key", sa.Integer()),
        sa.column("run_id", sa.String()),
        sa.column("candidate_id", sa.String()),
        sa.column("final_sha256", sa.String()),
        sa.column("provenance", sa.JSON()),
        sa.column("final_width", sa.Integer()),
        sa.column("final_height", sa.Integer()),
    )
    candidates = sa.table(
        "candidates",
        sa.column("run_id", sa.String()),
        sa.column("candidate_id", sa.String()),
        sa.column("width", sa.Integer()),
        sa.column("height", sa.Integer()),
    )
    bind = op.get_bind()
    query = (
        sa.select(assets.c.asset_key, assets.c.provenance, candidates.c.width, candidates.c.height)
        .join(
            candidates,
            (candidates.c.run_id == assets.c.run_id) & (candidates.c.candidate_id == assets.c.candidate_id),
        )
        .where(assets.c.final_sha256.is_not(None))
        .order_by(assets.c.asset_key)
    )
    for key, provenance, width, height in bind.execute(query).all():
        final_width, final_height = _delivered_size(provenance, width, height)
        bind.execute(
            assets.update().where(assets.c.asset_key == key).values(final_width=final_width, final_height=final_height)
        )


def _delivered_size(provenance: Any, width: int, height: int) -> tuple[int, int]:
    """The size finalize delivered a candidate of `width` x `height` at (frozen copy of its upscale rule)."""
    upscaled = isinstance(provenance, dict) and isinstance(provenance.get("upscaled_from"), dict)
    if not upscaled:
        return width, height
    scale = UPSCALE_MIN_SIDE / min(width, height)
    return max(UPSCALE_MIN_SIDE, round(width * scale)), max(UPSCALE_MIN_SIDE, round(height * scale))


def downgrade() -> None:
    """Not provided: the ledger is append-only, and a downgrade would drop what a newer release recorded."""
    raise NotImplementedError("ledger migrations are not reversible; restore a backup instead.")
