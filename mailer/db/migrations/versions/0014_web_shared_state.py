"""web shared state: per-client request counts (the public sign-up limit, shared by every
web process), and SendGrid webhook batches stored as received, for the intake to apply

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailer.db.base

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "request_windows",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("window_start", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start", name=op.f("pk_request_windows")),
    )
    op.create_index(op.f("ix_request_windows_window_start"), "request_windows", ["window_start"])
    op.create_table(
        "webhook_batches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_batches")),
    )


def downgrade() -> None:
    op.drop_table("webhook_batches")
    op.drop_index(op.f("ix_request_windows_window_start"), table_name="request_windows")
    op.drop_table("request_windows")
