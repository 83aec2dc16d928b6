"""Send an edition: fill the ledger, then claim, hand over and record, batch by batch.

Every step commits before the next begins, so a process killed anywhere
resumes from the ledger (Invariant 4): queued rows are still queued, and rows
it had in flight become ``unknown`` once their claim expires.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from mailer.db.base import utcnow
from mailer.db.models import (
    Briefing,
    BriefingStatus,
    DeliveryStatus,
    Edition,
    EditionBriefing,
    EditionStatus,
)
from mailer.db.session import transaction
from mailer.dispatch import ledger, liveness
from mailer.links import unsubscribe_url
from mailer.transports.base import (
    Envelope,
    Outcome,
    Recipient,
    Result,
    Transport,
    TransportUnauthorized,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, int]], None]


class DispatchError(RuntimeError):
    """The edition cannot be sent as asked."""


@dataclass(frozen=True)
class DispatchSettings:
    base_url: str
    secret_key: bytes
    batch_size: int = ledger.MAX_BATCH
    claim_timeout: timedelta = timedelta(seconds=60)
    throttle_per_second: float = 0.0


class Throttle:
    """Keeps one process at or under ``rate`` messages per second (0: no limit)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.started = clock()
        self.handed = 0

    def wait_for(self, count: int) -> None:
        if self.rate <= 0:
            return
        # The batch may go once everything before it fits within the rate.
        due = self.started + self.handed / self.rate
        delay = due - self.clock()
        if delay > 0:
            self.sleep(delay)
        self.handed += count


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def start(session: Session, edition: Edition) -> int:
    """Move a rendered edition into ``sending`` and fill its ledger. Idempotent."""
    if edition.status in (EditionStatus.SENT, EditionStatus.CANCELLED):
        return 0
    if edition.status == EditionStatus.DRAFT or edition.html is None or edition.text is None:
        raise DispatchError(f"edition {edition.id} has not been rendered yet")
    added = 0
    if edition.status == EditionStatus.READY:
        added = ledger.fill(session, edition)
        edition.status = EditionStatus.SENDING
        edition.send_started_at = utcnow()
        # Sent copies are immutable from here on: later source edits become corrections.
        session.execute(
            update(Briefing)
            .where(
                Briefing.id.in_(
                    select(EditionBriefing.briefing_id).where(
                        EditionBriefing.edition_id == edition.id
                    )
                )
            )
            .values(status=BriefingStatus.SENT)
        )
        log.info("edition.started", extra={"edition_id": edition.id, "queued": added})
    return added


def envelope_for(edition: Edition) -> Envelope:
    newsletter = edition.newsletter
    assert edition.html is not None and edition.text is not None and edition.token_nonce
    return Envelope(
        edition_id=edition.id,
        newsletter_slug=newsletter.slug,
        from_name=newsletter.from_name,
        from_email=newsletter.from_email,
        reply_to=newsletter.reply_to,
        subject=edition.subject,
        html=edition.html,
        text=edition.text,
        nonce=edition.token_nonce,
    )


def send_edition(
    factory: sessionmaker[Session],
    edition_id: int,
    transport: Transport,
    settings: DispatchSettings,
    *,
    worker: str | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, int]:
    """Drain the edition's ledger through ``transport``; return counts by status.

    Safe to run again at any time: it resumes where the last run stopped and
    never mails a (edition, subscriber) pair twice.
    """
    worker = worker or worker_name()
    engine = factory.kw["bind"]
    with liveness.Liveness(engine, worker):
        return _send(factory, edition_id, transport, settings, worker, on_progress, should_stop)


def _send(
    factory: sessionmaker[Session],
    edition_id: int,
    transport: Transport,
    settings: DispatchSettings,
    worker: str,
    on_progress: ProgressCallback | None,
    should_stop: Callable[[], bool] | None,
) -> dict[str, int]:
    with transaction(factory) as session:
        # Locked: an editor's change and the start of sending cannot interleave.
        edition = _load(session, edition_id, lock=True)
        start(session, edition)
        ledger.reap(session, settings.claim_timeout)
        envelope = envelope_for(edition) if edition.status == EditionStatus.SENDING else None

    if on_progress is not None:
        with factory() as session:
            on_progress(ledger.counts(session, edition_id))
    throttle = Throttle(settings.throttle_per_second)
    after_id = 0
    while envelope is not None:
        if should_stop is not None and should_stop():
            break  # asked to stop (SIGTERM): nothing claimed, nothing lost
        with transaction(factory) as session:
            edition = _load(session, edition_id)
            if edition.status != EditionStatus.SENDING:
                break  # paused or cancelled by an operator
            batch = ledger.claim(
                session, edition, worker, transport.name, settings.batch_size, after_id=after_id
            )
        if batch is None:
            if after_id == 0:
                break
            after_id = 0  # one more pass from the start, for rows queued again behind us
            continue
        after_id = batch.last_id
        if batch.deliveries:
            recipients = [
                Recipient(
                    delivery_id=d.delivery_id,
                    email=d.email,
                    name=d.name,
                    unsubscribe_url=unsubscribe_url(
                        settings.base_url, settings.secret_key, d.subscriber_id, edition_id
                    ),
                )
                for d in batch.deliveries
            ]
            throttle.wait_for(len(recipients))
            try:
                results = transport.send(envelope, recipients)
            except TransportUnauthorized as exc:
                _pause_for(factory, edition_id, batch.batch_id, recipients, str(exc))
                break
            with transaction(factory) as session:
                outcomes = ledger.record(session, batch.batch_id, results)
            if all(r.transport_down for r in results):
                # Nothing went out: the transport is down, not the recipients. Stop
                # rather than burn every row's attempts in a tight loop; rerun later.
                log.warning(
                    "edition.transport_unavailable",
                    extra={"edition_id": edition_id, "error": results[0].error},
                )
                break
            log.info(
                "batch.recorded",
                extra={
                    "edition_id": edition_id,
                    "batch_id": batch.batch_id,
                    **{k.value: v for k, v in outcomes.items()},
                },
            )
        if on_progress is not None:
            with factory() as session:
                on_progress(ledger.counts(session, edition_id))

    with transaction(factory) as session:
        edition = _load(session, edition_id)
        tally = ledger.counts(session, edition_id)
        unfinished = tally[DeliveryStatus.QUEUED] + tally[DeliveryStatus.SENDING]
        if edition.status == EditionStatus.SENDING and unfinished == 0:
            edition.status = EditionStatus.SENT
            edition.sent_at = utcnow()
            log.info("edition.sent", extra={"edition_id": edition_id, **tally})
    return tally


def _pause_for(
    factory: sessionmaker[Session],
    edition_id: int,
    batch_id: int,
    recipients: list[Recipient],
    reason: str,
) -> None:
    """Nothing of this batch went out: queue it again and pause until an operator looks."""
    with transaction(factory) as session:
        # No backoff: they go as soon as an operator has fixed the cause and resumed.
        ledger.record(
            session,
            batch_id,
            [
                Result(r.delivery_id, Outcome.RETRY, error=reason, transport_down=True)
                for r in recipients
            ],
            backoff=False,
        )
        edition = _load(session, edition_id)
        edition.status = EditionStatus.PAUSED
        edition.status_reason = reason
    log.error("edition.paused", extra={"edition_id": edition_id, "reason": reason})


def pause(session: Session, edition: Edition, reason: str = "paused by an operator") -> None:
    if edition.status != EditionStatus.SENDING:
        raise DispatchError(f"edition {edition.id} is {edition.status}, not sending")
    edition.status, edition.status_reason = EditionStatus.PAUSED, reason


def resume(session: Session, edition: Edition) -> None:
    if edition.status != EditionStatus.PAUSED:
        raise DispatchError(f"edition {edition.id} is {edition.status}, not paused")
    edition.status, edition.status_reason = EditionStatus.SENDING, None


def cancel(session: Session, edition: Edition, reason: str = "cancelled by an operator") -> int:
    """Stop for good: whoever is still queued is skipped. Returns how many."""
    if edition.status in (EditionStatus.SENT, EditionStatus.CANCELLED):
        raise DispatchError(f"edition {edition.id} is already {edition.status}")
    edition.status, edition.status_reason = EditionStatus.CANCELLED, reason
    return ledger.skip_queued(session, edition.id, reason)


def _load(session: Session, edition_id: int, *, lock: bool = False) -> Edition:
    edition = session.get(Edition, edition_id, with_for_update=lock or None)
    if edition is None:
        raise DispatchError(f"no edition with id {edition_id}")
    return edition
