"""subscriber names indexed by trigrams on PostgreSQL, so that a name substring search
reads the index instead of the whole table

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite scans the names; see search_subscribers
    # pg_trgm ships with PostgreSQL (contrib) and is a trusted extension since 13: the
    # database's owner may create it without being a superuser.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        "ix_subscribers_name_trgm",
        "subscribers",
        ["name"],
        postgresql_using="gin",
        postgresql_ops={"name": "gin_trgm_ops"},
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The extension stays: other objects of the database may use it.
    op.drop_index("ix_subscribers_name_trgm", table_name="subscribers")
