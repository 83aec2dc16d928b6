"""list tallies: the lists' memberships by status kept as subscriptions change, by
triggers, so that every way in (forms, imports, cascades) is counted

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("active", "pending", "unsubscribed")

# SQLite has row triggers only; they fire for foreign-key cascades too. A row counts 1
# in its status's column (negated as it was, for a delete or an update).
SQLITE_TRIGGERS = (
    """
CREATE TRIGGER subscriptions_tally_insert AFTER INSERT ON subscriptions BEGIN
  INSERT INTO list_tallies (list_id, active, pending, unsubscribed)
  VALUES (NEW.list_id, NEW.status = 'active', NEW.status = 'pending',
          NEW.status = 'unsubscribed');
END
""",
    """
CREATE TRIGGER subscriptions_tally_delete AFTER DELETE ON subscriptions BEGIN
  INSERT INTO list_tallies (list_id, active, pending, unsubscribed)
  VALUES (OLD.list_id, -(OLD.status = 'active'), -(OLD.status = 'pending'),
          -(OLD.status = 'unsubscribed'));
END
""",
    """
CREATE TRIGGER subscriptions_tally_update AFTER UPDATE OF list_id, status ON subscriptions
WHEN OLD.list_id IS NOT NEW.list_id OR OLD.status IS NOT NEW.status BEGIN
  INSERT INTO list_tallies (list_id, active, pending, unsubscribed)
  VALUES (OLD.list_id, -(OLD.status = 'active'), -(OLD.status = 'pending'),
          -(OLD.status = 'unsubscribed')),
         (NEW.list_id, NEW.status = 'active', NEW.status = 'pending',
          NEW.status = 'unsubscribed');
END
""",
)

# PostgreSQL: statement triggers with transition tables, so that an import's insert of
# a thousand memberships adds one row per list, not a thousand. An update's rows count
# once negated as they were and once as they are.
POSTGRESQL_FUNCTION = """
CREATE FUNCTION tally_subscriptions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO list_tallies (list_id, active, pending, unsubscribed)
    SELECT list_id, count(*) FILTER (WHERE status = 'active'),
           count(*) FILTER (WHERE status = 'pending'),
           count(*) FILTER (WHERE status = 'unsubscribed')
    FROM new_rows GROUP BY list_id;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO list_tallies (list_id, active, pending, unsubscribed)
    SELECT list_id, -count(*) FILTER (WHERE status = 'active'),
           -count(*) FILTER (WHERE status = 'pending'),
           -count(*) FILTER (WHERE status = 'unsubscribed')
    FROM old_rows GROUP BY list_id;
  ELSE
    INSERT INTO list_tallies (list_id, active, pending, unsubscribed)
    SELECT list_id, sum(active), sum(pending), sum(unsubscribed)
    FROM (
      SELECT list_id, CAST(status = 'active' AS INTEGER) AS active,
             CAST(status = 'pending' AS INTEGER) AS pending,
             CAST(status = 'unsubscribed' AS INTEGER) AS unsubscribed
      FROM new_rows
      UNION ALL
      SELECT list_id, -CAST(status = 'active' AS INTEGER),
             -CAST(status = 'pending' AS INTEGER),
             -CAST(status = 'unsubscribed' AS INTEGER)
      FROM old_rows
    ) AS changes
    GROUP BY list_id
    HAVING sum(active) <> 0 OR sum(pending) <> 0 OR sum(unsubscribed) <> 0;
  END IF;
  RETURN NULL;
END $$
"""
POSTGRESQL_TRIGGERS = (
    "CREATE TRIGGER subscriptions_tally_insert AFTER INSERT ON subscriptions "
    "REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_subscriptions()",
    "CREATE TRIGGER subscriptions_tally_delete AFTER DELETE ON subscriptions "
    "REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_subscriptions()",
    "CREATE TRIGGER subscriptions_tally_update AFTER UPDATE ON subscriptions "
    "REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION tally_subscriptions()",
)


def upgrade() -> None:
    # Counting a million memberships was the whole time of the lists page.
    op.create_table(
        "list_tallies",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        *(sa.Column(s, sa.Integer(), server_default="0", nullable=False) for s in STATUSES),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_list_tallies")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_FUNCTION)
        for statement in POSTGRESQL_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    # What the subscriptions hold today, one row per list, so that the sums start right.
    op.execute(
        "INSERT INTO list_tallies (list_id, active, pending, unsubscribed) "
        "SELECT list_id, SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN status = 'unsubscribed' THEN 1 ELSE 0 END) "
        "FROM subscriptions GROUP BY list_id"
    )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for event in ("insert", "delete", "update"):
        on = " ON subscriptions" if postgresql else ""
        op.execute(f"DROP TRIGGER IF EXISTS subscriptions_tally_{event}{on}")
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS tally_subscriptions()")
    op.drop_table("list_tallies")
