"""batches sent whole: a batch that went out whole is recorded on its own row only

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HOLDING_BATCH = "finished_at IS NULL OR sent_whole"


def upgrade() -> None:
    # Marking a thousand rows sent was most of PostgreSQL's work in a send; a batch sent
    # whole now says so on its own row, and its range stays closed to claims. Workers must
    # be stopped for the upgrade: one still running the old code would claim those rows.
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sent_whole", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.drop_index("ix_batches_open", table_name="batches")
    op.create_index(
        "ix_batches_holding",
        "batches",
        ["edition_id", "last_id"],
        unique=False,
        postgresql_where=sa.text(HOLDING_BATCH),
        sqlite_where=sa.text(HOLDING_BATCH),
    )
    op.create_index(
        "ix_deliveries_unknown",
        "deliveries",
        ["edition_id", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'unknown'"),
        sqlite_where=sa.text("status = 'unknown'"),
    )


def downgrade() -> None:
    # The old scheme reads a row's state from the row: write what batches sent whole
    # stand for into their rows before the flag goes.
    deliveries = sa.table(
        "deliveries",
        *(sa.column(name) for name in ("id", "edition_id", "status", "batch_id", "attempts")),
        *(sa.column(name) for name in ("message_id", "claimed_at", "finished_at")),
    )
    batches = sa.table(
        "batches",
        *(sa.column(name) for name in ("id", "edition_id", "first_id", "last_id", "sent_whole")),
        *(sa.column(name) for name in ("provider_message_id", "claimed_at", "finished_at")),
    )

    def of_its_batch(column: str) -> sa.ScalarSelect[object]:
        return (
            sa.select(batches.c[column])
            .where(
                batches.c.sent_whole.is_(True),
                batches.c.edition_id == deliveries.c.edition_id,
                deliveries.c.id.between(batches.c.first_id, batches.c.last_id),
            )
            .scalar_subquery()
        )

    op.execute(
        deliveries.update()
        .where(
            deliveries.c.status == "queued",
            deliveries.c.batch_id.is_(None),
            of_its_batch("id").is_not(None),
        )
        .values(
            status="sent",
            attempts=deliveries.c.attempts + 1,
            batch_id=of_its_batch("id"),
            message_id=of_its_batch("provider_message_id"),
            claimed_at=of_its_batch("claimed_at"),
            finished_at=of_its_batch("finished_at"),
        )
    )
    op.drop_index("ix_deliveries_unknown", table_name="deliveries")
    op.drop_index("ix_batches_holding", table_name="batches")
    op.create_index(
        "ix_batches_open",
        "batches",
        ["edition_id", "first_id"],
        unique=False,
        postgresql_where=sa.text("finished_at IS NULL"),
        sqlite_where=sa.text("finished_at IS NULL"),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("sent_whole")
