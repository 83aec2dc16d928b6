"""readers: proof of consent, lists' opt-in mode and visibility, pauses, confirmation
pacing, public archives

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailer.db.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("wording", sa.Text(), nullable=False),
        sa.Column("client", sa.String(length=100), nullable=False),
        sa.Column("at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"], ["lists.id"], name=op.f("fk_consents_list_id_lists"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_consents_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consents_subscriber_id"), ["subscriber_id"], unique=False
        )

    # Plain ALTER TABLE … ADD COLUMN, not batch mode: on SQLite batch mode may copy and
    # drop a table, and dropping `newsletters` with foreign keys on deletes, through
    # ON DELETE CASCADE, every edition, batch and schedule of theirs.
    op.add_column(
        "lists", sa.Column("opt_in", sa.String(length=10), server_default="double", nullable=False)
    )
    op.add_column(
        "lists", sa.Column("public", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column(
        "newsletters",
        sa.Column("public_archive", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "subscribers",
        sa.Column("paused_until", mailer.db.base.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "subscribers",
        sa.Column("confirmation_sent_at", mailer.db.base.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), not batch mode: copying and dropping `subscribers`
    # would delete their subscriptions through the foreign key.
    for column in ("confirmation_sent_at", "paused_until"):
        op.drop_column("subscribers", column)
    op.drop_column("newsletters", "public_archive")
    for column in ("public", "opt_in"):
        op.drop_column("lists", column)
    op.drop_index("ix_consents_subscriber_id", table_name="consents")
    op.drop_table("consents")
