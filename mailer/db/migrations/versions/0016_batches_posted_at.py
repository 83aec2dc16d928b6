"""batches posted: the moment a batch was handed to the transport, so that a crash
leaves unknown only what may have reached the wire

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailer.db.base

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "batches", sa.Column("posted_at", mailer.db.base.UTCDateTime(timezone=True), nullable=True)
    )
    # Batches claimed before this version went out as they always did: marked posted,
    # so that the reaper treats an open one as it did before (its rows unknown).
    op.execute("UPDATE batches SET posted_at = claimed_at")


def downgrade() -> None:
    op.drop_column("batches", "posted_at")
