"""ledger tallies: the ledger's counts kept as it changes, and the next retry by index

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("queued", "sent", "failed", "skipped", "unknown")


def upgrade() -> None:
    # Counting a large ledger by status on every page that shows an edition's progress
    # was most of those pages' time; each change of state now adds a row of differences.
    op.create_table(
        "ledger_tallies",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Integer(), server_default="0", nullable=False) for name in STATUSES),
        sa.ForeignKeyConstraint(["edition_id"], ["editions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ledger_tallies_edition_id", "ledger_tallies", ["edition_id"])
    # What the ledger holds today, one row per edition, so that the sums start right.
    deliveries = sa.table("deliveries", sa.column("edition_id"), sa.column("status"))
    tallies = sa.table("ledger_tallies", sa.column("edition_id"), *map(sa.column, STATUSES))
    counted = sa.select(
        deliveries.c.edition_id,
        *(
            sa.func.coalesce(
                sa.func.sum(sa.case((deliveries.c.status == name, 1), else_=0)), 0
            ).label(name)
            for name in STATUSES
        ),
    )
    # The ledger has no foreign keys: rows of an edition that is gone are not counted.
    editions = sa.table("editions", sa.column("id"))
    counted = counted.where(deliveries.c.edition_id.in_(sa.select(editions.c.id))).group_by(
        deliveries.c.edition_id
    )
    op.execute(tallies.insert().from_select(["edition_id", *STATUSES], counted))
    # Only rows waiting for a retry or their wave carry retry_after: the next of them
    # is one index probe instead of a pass over the edition's queued rows.
    op.create_index(
        "ix_deliveries_retry_after",
        "deliveries",
        ["edition_id", "retry_after"],
        postgresql_where=sa.text("retry_after IS NOT NULL"),
        sqlite_where=sa.text("retry_after IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_retry_after", table_name="deliveries")
    op.drop_index("ix_ledger_tallies_edition_id", table_name="ledger_tallies")
    op.drop_table("ledger_tallies")
