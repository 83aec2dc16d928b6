"""bounce and event tracking: delivery facts on the ledger, the policy's event queue,
provider sync cursors

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailer.db.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = mailer.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered_at", WHEN, nullable=True))
        batch_op.add_column(sa.Column("opened_at", WHEN, nullable=True))
        batch_op.add_column(sa.Column("clicked_at", WHEN, nullable=True))
        batch_op.add_column(sa.Column("bounce_class", sa.String(length=10), nullable=True))

    with op.batch_alter_table("events", schema=None) as batch_op:
        # Events name deliveries that may be gone, or that never existed (a forged or
        # stale custom arg): the id is kept as reported, without a foreign key.
        batch_op.drop_constraint("fk_events_delivery_id_deliveries", type_="foreignkey")
        batch_op.add_column(sa.Column("bounce_class", sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column("detail", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("processed_at", WHEN, nullable=True))
        batch_op.create_index("ix_events_edition_kind", ["edition_id", "kind"], unique=False)
    # Events recorded before this revision were never meant for the policy.
    op.execute("UPDATE events SET processed_at = received_at")
    op.create_index(
        "ix_events_pending",
        "events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("processed_at IS NULL"),
        sqlite_where=sa.text("processed_at IS NULL"),
    )

    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_batches_provider_message_id"), ["provider_message_id"], unique=False
        )

    op.create_table(
        "provider_syncs",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("synced_until", sa.BigInteger(), nullable=True),
        sa.Column("last_run_at", WHEN, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_provider_syncs")),
    )


def downgrade() -> None:
    op.drop_table("provider_syncs")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_provider_message_id"))
    op.drop_index("ix_events_pending", table_name="events")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_edition_kind")
        batch_op.drop_column("processed_at")
        batch_op.drop_column("detail")
        batch_op.drop_column("bounce_class")
        batch_op.create_foreign_key(
            "fk_events_delivery_id_deliveries",
            "deliveries",
            ["delivery_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("bounce_class")
        batch_op.drop_column("clicked_at")
        batch_op.drop_column("opened_at")
        batch_op.drop_column("delivered_at")
