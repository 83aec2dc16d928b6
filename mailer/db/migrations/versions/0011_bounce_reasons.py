"""bounce reasons: why a delivery failed, on the event and on the suppression it caused

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: events and suppressions from before this revision were never
    # given a reason, and inventing one would be a guess shown to operators as a fact.
    op.add_column("events", sa.Column("bounce_reason", sa.String(length=30), nullable=True))
    op.add_column("suppressions", sa.Column("bounce_reason", sa.String(length=30), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_column("bounce_reason")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("bounce_reason")
