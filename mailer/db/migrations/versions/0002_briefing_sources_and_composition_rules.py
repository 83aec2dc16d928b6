"""briefing sources and composition rules

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mailer.db.base

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Existing rows get the defaults the models use (copied, so this file never changes).
SUBJECT_TEMPLATE = "{{ top.title | truncate_words(78) }}"
PREHEADER_TEMPLATE = (
    "{% if count > 1 %}Plus {{ count - 1 }} more: {{ others | map(attribute='title') "
    "| join('; ') | truncate_words(140) }}{% else %}{{ top.lead | truncate_words(140) }}{% endif %}"
)


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("location", sa.String(length=2000), nullable=False),
        sa.Column("newsletter_id", sa.Integer(), nullable=True),
        sa.Column("mark_ready", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("etag", sa.String(length=500), nullable=True),
        sa.Column("last_modified", sa.String(length=100), nullable=True),
        sa.Column("last_pulled_at", mailer.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_outcome", sa.String(length=200), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["newsletter_id"],
            ["newsletters.id"],
            name=op.f("fk_sources_newsletter_id_newsletters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
        sa.UniqueConstraint("name", name=op.f("uq_sources_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=True),
        sa.Column("created_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", mailer.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", mailer.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_api_tokens_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "pull_errors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=True),
        sa.Column("item", sa.String(length=2000), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_pull_errors_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pull_errors")),
    )
    with op.batch_alter_table("pull_errors", schema=None) as batch_op:
        batch_op.create_index(
            "ix_pull_errors_source_created", ["source_id", "created_at"], unique=False
        )

    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("briefing_id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("lead", sa.Text(), nullable=False),
        sa.Column(
            "sections", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("recorded_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["briefing_id"],
            ["briefings.id"],
            name=op.f("fk_corrections_briefing_id_briefings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corrections")),
        sa.UniqueConstraint(
            "briefing_id", "content_hash", name=op.f("uq_corrections_briefing_id_content_hash")
        ),
    )
    with op.batch_alter_table("briefings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("lead_html", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("author", sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f("ix_briefings_source_id"), ["source_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_briefings_source_id_sources"),
            "sources",
            ["source_id"],
            ["id"],
            ondelete="SET NULL",
        )

    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject_override", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("preheader_override", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("status_reason", sa.Text(), nullable=True))

    with op.batch_alter_table("newsletters", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "tag_filter",
                sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                nullable=False,
                server_default=sa.text("'[]'"),
            )
        )
        batch_op.add_column(
            sa.Column("max_briefings", sa.Integer(), nullable=False, server_default="10")
        )
        batch_op.add_column(
            sa.Column("max_age_hours", sa.Integer(), nullable=False, server_default="48")
        )
        batch_op.add_column(
            sa.Column(
                "subject_template", sa.Text(), nullable=False, server_default=SUBJECT_TEMPLATE
            )
        )
        batch_op.add_column(
            sa.Column(
                "preheader_template", sa.Text(), nullable=False, server_default=PREHEADER_TEMPLATE
            )
        )
        batch_op.add_column(
            sa.Column("send_when_empty", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("newsletters", schema=None) as batch_op:
        batch_op.drop_column("send_when_empty")
        batch_op.drop_column("preheader_template")
        batch_op.drop_column("subject_template")
        batch_op.drop_column("max_age_hours")
        batch_op.drop_column("max_briefings")
        batch_op.drop_column("tag_filter")

    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.drop_column("status_reason")
        batch_op.drop_column("preheader_override")
        batch_op.drop_column("subject_override")

    with op.batch_alter_table("briefings", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_briefings_source_id_sources"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_briefings_source_id"))
        batch_op.drop_column("author")
        batch_op.drop_column("lead_html")
        batch_op.drop_column("source_id")

    op.drop_table("corrections")
    with op.batch_alter_table("pull_errors", schema=None) as batch_op:
        batch_op.drop_index("ix_pull_errors_source_created")

    op.drop_table("pull_errors")
    op.drop_table("api_tokens")
    op.drop_table("sources")
