"""newsletter language: the BCP 47 tag of what a newsletter is written in, for the
HTML's ``lang`` (screen readers, translation prompts, hyphenation) and its
Content-Language

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every newsletter so far was written for the English template: "en" is what they are.
    op.add_column(
        "newsletters",
        sa.Column("language", sa.String(length=35), nullable=False, server_default="en"),
    )


def downgrade() -> None:
    # Plain DROP COLUMN, not batch mode: on SQLite batch mode copies and drops the table,
    # and with it, through ON DELETE CASCADE, every edition and batch of its newsletters.
    op.drop_column("newsletters", "language")
