"""The webhook's intake: store a batch as it came, apply it behind the answer.

SendGrid waits for our answer, and retries a whole batch for a day on a slow or failed
one, so the answer waits for one thing only: the signed body, parsed and checked,
written as one ``webhook_batches`` row (``receive``). Everything else comes after
(``apply_batches``): the body is parsed again, its events matched to the ledger and
stored (``store.store_sendgrid``), and the row deleted, in one transaction; the bounce
policy then runs over the stored events (``policy.apply_pending``).

Exactly once: a batch is taken by deleting its row, in the transaction that stores its
events, so of two appliers (two web processes) only one gets it, and a crash before the
commit leaves the row for the next run. Events carry SendGrid's ``sg_event_id``, stored
once whatever happens. A batch whose application fails is kept and retried, up to
``MAX_ATTEMPTS``; then it stays, with its error, for an operator (logged as an error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Connection, Engine, Table, delete, insert, select, update

from mailer.db.base import utcnow
from mailer.db.session import one_writer
from mailer.events.models import WebhookBatch
from mailer.events.sendgrid_events import PayloadError, parse_events
from mailer.events.store import StoreReport, store_sendgrid

log = logging.getLogger(__name__)

BATCHES = cast(Table, WebhookBatch.__table__)
MAX_ATTEMPTS = 5


def receive(engine: Engine, body: bytes, *, source: str = "sendgrid") -> int:
    """Keep a checked body for the intake; the new batch's id."""
    with one_writer(engine), engine.begin() as connection:
        return int(
            connection.execute(
                insert(BATCHES)
                .values(source=source, body=body, received_at=utcnow(), attempts=0)
                .returning(BATCHES.c.id)
            ).scalar_one()
        )


@dataclass
class IntakeReport:
    batches: int = 0
    failed: int = 0
    stored: StoreReport = field(default_factory=StoreReport)


def apply_batches(engine: Engine, *, limit: int | None = None) -> IntakeReport:
    """Store the events of every waiting batch (or of ``limit`` of them), oldest first,
    one transaction each."""
    report = IntakeReport()
    skipped: set[int] = set()
    while limit is None or report.batches + report.failed < limit:
        taken: tuple[int, str, bytes] | None = None
        try:
            with one_writer(engine), engine.begin() as connection:
                taken = _take(connection, skipped)
                if taken is None:
                    return report
                _, source, body = taken
                try:
                    events, rejected = parse_events(body)
                except PayloadError:  # checked when received: only a changed parser
                    events, rejected = [], []
                stored = store_sendgrid(connection, events, rejected, source=source)
        except Exception as exc:
            if taken is None:
                raise
            report.failed += 1
            skipped.add(taken[0])
            _failed(engine, taken[0], exc)
            continue
        report.batches += 1
        _add(report.stored, stored)
    return report


def _take(connection: Connection, skipped: set[int]) -> tuple[int, str, bytes] | None:
    """The oldest batch still to apply, deleted: this transaction now owns it."""
    oldest = (
        select(BATCHES.c.id)
        .where(BATCHES.c.attempts < MAX_ATTEMPTS, BATCHES.c.id.not_in(skipped))
        .order_by(BATCHES.c.id)
        .limit(1)
    )
    if connection.dialect.name == "postgresql":
        # Another process applying batches takes the next one instead of waiting.
        oldest = oldest.with_for_update(skip_locked=True)
    row = connection.execute(
        delete(BATCHES)
        .where(BATCHES.c.id == oldest.scalar_subquery())
        .returning(BATCHES.c.id, BATCHES.c.source, BATCHES.c.body)
    ).first()
    return None if row is None else (int(row.id), str(row.source), bytes(row.body))


def _failed(engine: Engine, batch_id: int, exc: Exception) -> None:
    error = f"{type(exc).__name__}: {exc}"[:1000]
    with one_writer(engine), engine.begin() as connection:
        attempts = connection.execute(
            update(BATCHES)
            .where(BATCHES.c.id == batch_id)
            .values(attempts=BATCHES.c.attempts + 1, last_error=error)
            .returning(BATCHES.c.attempts)
        ).scalar()
    if attempts is not None and attempts >= MAX_ATTEMPTS:
        log.error(
            "webhook.batch_abandoned",
            extra={"batch_id": batch_id, "attempts": attempts, "error": error},
        )
    else:
        log.warning("webhook.batch_failed", extra={"batch_id": batch_id, "error": error})


def _add(total: StoreReport, one: StoreReport) -> None:
    total.received += one.received
    total.stored += one.stored
    total.duplicates += one.duplicates
    total.unmatched += one.unmatched
    total.rejected += one.rejected
