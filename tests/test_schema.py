"""Migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from dataclasses import replace

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from mailer.db import migrate
from mailer.db.models import Base
from mailer.dispatch import ledger
from mailer.dispatch.dispatcher import send_edition
from mailer.runtime import Runtime
from tests import factories
from tests.outboxes import BatchApi


def test_migrations_match_the_models(runtime: Runtime) -> None:
    with runtime.engine.connect() as connection:
        opts = {
            "compare_type": True,
            "include_object": migrate.for_database(connection.dialect.name),
        }
        context = MigrationContext.configure(connection, opts=opts)
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
    assert migrate.is_current(runtime.engine)


def test_upgrade_is_repeatable(runtime: Runtime) -> None:
    migrate.upgrade(runtime.engine)
    assert migrate.current_revision(runtime.engine) == migrate.head_revision()


def test_downgrading_past_batches_sent_whole_writes_their_rows(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 5)
    edition_id = factories.edition(runtime, newsletter_id)
    # Threads: BatchApi records what it was handed in this process.
    settings = replace(runtime.dispatch_settings(), batch_size=2, sender_process=False)
    transport = BatchApi(runtime.settings.outbox_dir)
    assert send_edition(runtime.sessions, edition_id, transport, settings)["sent"] == 5
    with runtime.sessions() as session:
        rows = ledger.rows(session, edition_id)
    before = [(r.id, r.status, r.message_id, r.batch_id) for r in rows]

    migrate.downgrade(runtime.engine, "0007")
    try:
        with runtime.engine.connect() as connection:
            after = connection.execute(
                text("SELECT id, status, message_id, batch_id FROM deliveries ORDER BY id")
            ).all()
    finally:
        migrate.upgrade(runtime.engine)
    assert [tuple(row) for row in after] == before
    assert {status for _, status, _, _ in before} == {"sent"}
    # Back up at the head, the edition is still there (no migration copied and dropped a
    # table its rows cascade from) and its counts were taken from its ledger.
    with runtime.sessions() as session:
        assert ledger.counts(session, edition_id)["sent"] == 5
