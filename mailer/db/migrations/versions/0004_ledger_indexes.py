"""ledger without foreign keys; indexes for claiming queued rows and recording by batch

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The ledger's rows come from one INSERT … SELECT over subscribers: foreign keys
    # only added a per-row check and lock that made the fill about four times slower.
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint("fk_deliveries_batch_id_batches", type_="foreignkey")
        batch_op.drop_constraint("fk_deliveries_edition_id_editions", type_="foreignkey")
        batch_op.drop_constraint("fk_deliveries_subscriber_id_subscribers", type_="foreignkey")
    # Claims read "queued rows of this edition in id order". Indexing status too moved
    # every row within the index at each change of state (five index writes per row
    # per send); a partial index is written when the row is queued and when claimed.
    op.drop_index("ix_deliveries_edition_status", table_name="deliveries")
    op.create_index(
        "ix_deliveries_queued",
        "deliveries",
        ["edition_id", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
    # Partial: queued rows have no batch, and a million-row fill should not pay for
    # index entries that say so.
    op.create_index(
        "ix_deliveries_batch",
        "deliveries",
        ["batch_id"],
        unique=False,
        postgresql_where=sa.text("batch_id IS NOT NULL"),
        sqlite_where=sa.text("batch_id IS NOT NULL"),
    )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_deliveries_batch_id_batches", "batches", ["batch_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_foreign_key(
            "fk_deliveries_edition_id_editions",
            "editions",
            ["edition_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            "fk_deliveries_subscriber_id_subscribers",
            "subscribers",
            ["subscriber_id"],
            ["id"],
            ondelete="CASCADE",
        )
    op.drop_index("ix_deliveries_batch", table_name="deliveries")
    op.drop_index("ix_deliveries_queued", table_name="deliveries")
    op.create_index(
        "ix_deliveries_edition_status", "deliveries", ["edition_id", "status", "id"], unique=False
    )
