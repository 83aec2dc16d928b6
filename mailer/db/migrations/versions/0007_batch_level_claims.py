"""batch-level claims: a batch row holds its deliveries while open

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Claiming used to move a thousand rows to `sending`; now it writes one batch row
    # naming them, and the rows are written once, when the outcome is recorded.
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("last_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("delivery_ids", sa.Text(), nullable=True))
    op.create_index(
        "ix_batches_open",
        "batches",
        ["edition_id", "first_id"],
        unique=False,
        postgresql_where=sa.text("finished_at IS NULL"),
        sqlite_where=sa.text("finished_at IS NULL"),
    )
    # A batch's rows are found by its id range now (events by X-Message-Id): give the
    # batches already sent theirs, while the index on batch_id can still answer.
    op.execute(
        "UPDATE batches SET "
        "first_id = (SELECT min(d.id) FROM deliveries d WHERE d.batch_id = batches.id), "
        "last_id = (SELECT max(d.id) FROM deliveries d WHERE d.batch_id = batches.id)"
    )
    # That index was one more entry to write per row recorded.
    op.drop_index("ix_deliveries_batch", table_name="deliveries")
    # Rows in flight under the old scheme (workers should be stopped for an upgrade)
    # may have gone out: unknown, for an operator to reconcile, never resent blindly.
    op.execute(
        "UPDATE deliveries SET status = 'unknown', "
        "error = 'in flight during an upgrade: outcome not recorded' "
        "WHERE status = 'sending'"
    )
    op.execute(
        "UPDATE batches SET outcome = 'open during an upgrade: rows unknown', "
        "finished_at = claimed_at WHERE finished_at IS NULL"
    )


def downgrade() -> None:
    # The old scheme knows in-flight rows only by their status: mark them unknown, or
    # they would look queued and be sent again.
    bind = op.get_bind()
    open_batches = bind.execute(
        sa.text("SELECT id, delivery_ids FROM batches WHERE finished_at IS NULL")
    ).all()
    for batch_id, delivery_ids in open_batches:
        for delivery_id in json.loads(delivery_ids or "[]"):
            bind.execute(
                sa.text(
                    "UPDATE deliveries SET status = 'unknown', batch_id = :batch, "
                    "error = 'in flight during a downgrade: outcome not recorded' "
                    "WHERE id = :id AND status = 'queued'"
                ),
                {"batch": batch_id, "id": delivery_id},
            )
    op.execute(
        "UPDATE batches SET outcome = 'open during a downgrade: rows unknown', "
        "finished_at = claimed_at WHERE finished_at IS NULL"
    )
    op.drop_index("ix_batches_open", table_name="batches")
    op.create_index(
        "ix_deliveries_batch",
        "deliveries",
        ["batch_id"],
        unique=False,
        postgresql_where=sa.text("batch_id IS NOT NULL"),
        sqlite_where=sa.text("batch_id IS NOT NULL"),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("delivery_ids")
        batch_op.drop_column("last_id")
        batch_op.drop_column("first_id")
