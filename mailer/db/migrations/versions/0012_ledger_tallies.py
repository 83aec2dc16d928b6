"""tallies: the ledger's counts and the events per hour kept as they change; the next
retry by index

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import mailer.db.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("queued", "sent", "failed", "skipped", "unknown")
STAMPS = ("delivered", "opened", "clicked", "bounced_hard", "bounced_soft")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Counting a large ledger and its events on every page that shows an edition's
    # progress or numbers was most of those pages' time; each change now adds a row of
    # differences instead.
    op.create_table(
        "ledger_tallies",
        sa.Column("id", BigId, nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        *(
            sa.Column(name, sa.Integer(), server_default="0", nullable=False)
            for name in (*STATUSES, *STAMPS)
        ),
        sa.ForeignKeyConstraint(["edition_id"], ["editions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ledger_tallies_edition_id", "ledger_tallies", ["edition_id"])
    op.create_table(
        "event_tallies",
        sa.Column("id", BigId, nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("hour", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["editions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_event_tallies_edition_id", "event_tallies", ["edition_id"])
    _count_the_ledger()
    _count_the_events()
    # Only rows waiting for a retry or their wave carry retry_after: the next of them
    # is one index probe instead of a pass over the edition's queued rows.
    op.create_index(
        "ix_deliveries_retry_after",
        "deliveries",
        ["edition_id", "retry_after"],
        postgresql_where=sa.text("retry_after IS NOT NULL"),
        sqlite_where=sa.text("retry_after IS NOT NULL"),
    )


def _count_the_ledger() -> None:
    """What the ledger holds today, one row per edition, so that the sums start right."""
    deliveries = sa.table(
        "deliveries",
        *map(sa.column, ("edition_id", "status", "delivered_at", "opened_at", "clicked_at")),
        sa.column("bounce_class"),
    )
    conditions: dict[str, Any] = {name: deliveries.c.status == name for name in STATUSES} | {
        "delivered": deliveries.c.delivered_at.is_not(None),
        "opened": deliveries.c.opened_at.is_not(None),
        "clicked": deliveries.c.clicked_at.is_not(None),
        "bounced_hard": deliveries.c.bounce_class == "hard",
        "bounced_soft": deliveries.c.bounce_class == "soft",
    }
    # The ledger has no foreign keys: rows of an edition that is gone are not counted.
    editions = sa.table("editions", sa.column("id"))
    counted = (
        sa.select(
            deliveries.c.edition_id,
            *(
                sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0).label(name)
                for name, condition in conditions.items()
            ),
        )
        .where(deliveries.c.edition_id.in_(sa.select(editions.c.id)))
        .group_by(deliveries.c.edition_id)
    )
    tallies = sa.table("ledger_tallies", sa.column("edition_id"), *map(sa.column, conditions))
    op.execute(tallies.insert().from_select(["edition_id", *conditions], counted))


def _count_the_events() -> None:
    """The stored events per edition, hour and kind (the groups are few: read and
    written through Python, where the hour is the same on both databases)."""
    connection = op.get_bind()
    events = sa.table(
        "events",
        sa.column("edition_id"),
        sa.column("kind"),
        sa.column("occurred_at", mailer.db.base.UTCDateTime()),
    )
    if connection.dialect.name == "postgresql":
        hour: Any = sa.func.to_char(
            sa.func.date_trunc("hour", sa.func.timezone("UTC", events.c.occurred_at)),
            "YYYY-MM-DD HH24",
        )
    else:
        hour = sa.func.strftime("%Y-%m-%d %H", events.c.occurred_at)
    editions = sa.table("editions", sa.column("id"))
    groups = connection.execute(
        sa.select(events.c.edition_id, hour, events.c.kind, sa.func.count())
        .where(events.c.edition_id.in_(sa.select(editions.c.id)))
        .group_by(events.c.edition_id, hour, events.c.kind)
    )
    tallies = sa.table(
        "event_tallies",
        sa.column("edition_id"),
        sa.column("hour", mailer.db.base.UTCDateTime()),
        sa.column("kind"),
        sa.column("events"),
    )
    rows = [
        {
            "edition_id": edition_id,
            "hour": datetime.strptime(text, "%Y-%m-%d %H").replace(tzinfo=UTC),
            "kind": kind,
            "events": number,
        }
        for edition_id, text, kind, number in groups
    ]
    if rows:
        op.bulk_insert(tallies, rows)


def downgrade() -> None:
    op.drop_index("ix_deliveries_retry_after", table_name="deliveries")
    op.drop_index("ix_event_tallies_edition_id", table_name="event_tallies")
    op.drop_table("event_tallies")
    op.drop_index("ix_ledger_tallies_edition_id", table_name="ledger_tallies")
    op.drop_table("ledger_tallies")
