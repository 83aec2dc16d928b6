"""retry after on deliveries; the claim index in id order

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailer.db.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retry_after", mailer.db.base.UTCDateTime(timezone=True), nullable=True)
        )
        # Claims read "queued rows of this edition in id order": with id in the index
        # PostgreSQL walks it in order instead of sorting every queued row per batch.
        batch_op.drop_index("ix_deliveries_edition_status")
        batch_op.create_index(
            "ix_deliveries_edition_status", ["edition_id", "status", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_edition_status")
        batch_op.create_index(
            "ix_deliveries_edition_status", ["edition_id", "status"], unique=False
        )
        batch_op.drop_column("retry_after")
