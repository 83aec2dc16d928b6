"""workspace: accounts, their sessions and sign-in throttles, the audit log; an editor's
corrections of briefings, per-edition headlines, exclusions, approvals and one-off send times

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailer.db.base

JSON = mailer.db.base.JSONType

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("disabled_at", mailer.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_sign_in_at", mailer.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("email", name=op.f("uq_accounts_email")),
    )
    op.create_table(
        "sign_in_throttles",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", mailer.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sign_in_throttles")),
    )
    op.create_table(
        "account_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=100), nullable=False),
        sa.Column("user_agent", sa.String(length=300), nullable=False),
        sa.Column("created_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", mailer.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_account_sessions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_account_sessions_token_hash")),
    )
    with op.batch_alter_table("account_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_account_sessions_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=400), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target_kind", sa.String(length=50), nullable=False),
        sa.Column("target_id", sa.String(length=100), nullable=True),
        sa.Column("before", JSON, nullable=True),
        sa.Column("after", JSON, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_audit_log_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)
        batch_op.create_index("ix_audit_log_target", ["target_kind", "target_id"], unique=False)

    op.create_table(
        "sign_in_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", mailer.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", mailer.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_sign_in_links_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sign_in_links_token_hash")),
    )
    with op.batch_alter_table("sign_in_links", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sign_in_links_account_id"), ["account_id"], unique=False
        )

    with op.batch_alter_table("briefings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("edited_title", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("edited_lead", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("edited_by", sa.String(length=400), nullable=True))
        batch_op.add_column(
            sa.Column("edited_at", mailer.db.base.UTCDateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("edition_briefings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("headline", sa.String(length=300), nullable=True))

    with op.batch_alter_table("editions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("excluded_briefing_ids", JSON, server_default=sa.text("'[]'"), nullable=False)
        )
        batch_op.add_column(sa.Column("approved_by", sa.String(length=400), nullable=True))
        batch_op.add_column(
            sa.Column("approved_at", mailer.db.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("scheduled_for", mailer.db.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_editions_scheduled_for"), ["scheduled_for"], unique=False
        )


def downgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (SQLite 3.35+), not batch mode: batch mode would copy
    # and drop these tables, and with foreign keys on, dropping `editions` deletes the
    # batches, edition items and schedule runs that refer to it.
    op.drop_index("ix_editions_scheduled_for", table_name="editions")
    for column in ("scheduled_for", "approved_at", "approved_by", "excluded_briefing_ids"):
        op.drop_column("editions", column)
    op.drop_column("edition_briefings", "headline")
    for column in ("edited_at", "edited_by", "edited_lead", "edited_title"):
        op.drop_column("briefings", column)

    with op.batch_alter_table("sign_in_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sign_in_links_account_id"))

    op.drop_table("sign_in_links")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_target")
        batch_op.drop_index(batch_op.f("ix_audit_log_at"))
        batch_op.drop_index(batch_op.f("ix_audit_log_action"))

    op.drop_table("audit_log")
    with op.batch_alter_table("account_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_sessions_account_id"))

    op.drop_table("account_sessions")
    op.drop_table("sign_in_throttles")
    op.drop_table("accounts")
