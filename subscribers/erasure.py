"""Erase one reader: nothing of them stays in clear text, only a keyed hash as a suppression.

What goes: the subscriber row (name, address, attributes; their subscriptions and consent
records cascade with it), any suppression that holds their address, and their address in
the ledger, in the events and in audit entries that name it. What stays: the ledger rows
and events themselves with their subscriber and edition numbers (an edition's counts must
not change after it was sent), and ``subscribers.erased.marker(key, address)`` as a
suppression, so that no import or sign-up mails them again unless they subscribe anew.

Runs in the caller's transaction and does not commit: the caller's audit entry lands with
it or not at all. Erasing someone already erased finds nothing and changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import String, cast, delete, or_, select, update
from sqlalchemy.orm import Session

from mailer.accounts.models import AuditEntry
from mailer.db.models import Batch, Delivery, DeliveryStatus, Event
from mailer.dispatch import tallies
from mailer.dispatch.tallies import moved
from subscribers import erased
from subscribers.models import Subscriber, Suppression

# What replaces the address wherever the row itself must stay.
ERASED = "[erased]"
SOURCE = "erasure"


def erase(session: Session, subscriber_id: int, key: bytes) -> None:
    """Erase subscriber ``subscriber_id`` (see the module docstring). A missing subscriber
    is not an error: a repeated request must be harmless."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return
    address = subscriber.email
    _erase_ledger(session, subscriber_id, address)
    _erase_events(session, subscriber_id, address)
    _erase_audit(session, address)
    session.execute(delete(Suppression).where(Suppression.email == address))
    # Delete through SQL so the database's ON DELETE CASCADE takes subscriptions and
    # consents; the ORM would otherwise try to load and null them one by one.
    session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))
    session.expunge(subscriber)
    _keep_marker(session, key, address)
    session.flush()


def _erase_ledger(session: Session, subscriber_id: int, address: str) -> None:
    # A row still queued must never go out to nobody: it is skipped, as for someone who
    # unsubscribed before their batch was claimed. Errors may quote the address.
    skipped = session.scalars(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber_id, Delivery.status == DeliveryStatus.QUEUED)
        .values(status=DeliveryStatus.SKIPPED, error="erased")
        .returning(Delivery.edition_id)
    )
    for edition_id in skipped.all():
        tallies.add(session, edition_id, moved(1, DeliveryStatus.QUEUED, DeliveryStatus.SKIPPED))
    session.execute(
        update(Delivery).where(Delivery.subscriber_id == subscriber_id).values(email="", error=None)
    )
    # A batch's error is the transport's answer for the whole batch and may name one
    # of its recipients.
    batch_ids = select(Delivery.batch_id).where(
        Delivery.subscriber_id == subscriber_id, Delivery.batch_id.is_not(None)
    )
    for batch in session.scalars(
        select(Batch).where(Batch.id.in_(batch_ids), Batch.error.contains(address, autoescape=True))
    ):
        batch.error = (batch.error or "").replace(address, ERASED)


def _erase_events(session: Session, subscriber_id: int, address: str) -> None:
    delivery_ids = select(Delivery.id).where(Delivery.subscriber_id == subscriber_id)
    session.execute(
        update(Event)
        .where(or_(Event.email == address, Event.delivery_id.in_(delivery_ids)))
        .values(email="", detail=None, payload={})
        .execution_options(synchronize_session=False)
    )


def _erase_audit(session: Session, address: str) -> None:
    # The audit log is small next to the audience; a text search of its JSON finds the
    # entries that name the address (as typed, and as JSON escapes a non-ASCII one).
    needles = {address, json.dumps(address)[1:-1]}
    matches = []
    for needle in needles:
        pattern = f"%{needle}%"
        matches += [
            AuditEntry.target_id == address,
            AuditEntry.note.contains(needle, autoescape=True),
            cast(AuditEntry.before, String).like(pattern),
            cast(AuditEntry.after, String).like(pattern),
        ]
    for entry in session.scalars(select(AuditEntry).where(or_(*matches))):
        if entry.target_id == address:
            entry.target_id = ERASED
        entry.note = _scrub(entry.note, address)
        entry.before = _scrub(entry.before, address)
        entry.after = _scrub(entry.after, address)


def _scrub(value: Any, address: str) -> Any:
    """``value`` with every string that holds the address rewritten without it."""
    if isinstance(value, str):
        return value.replace(address, ERASED)
    if isinstance(value, dict):
        return {_scrub(k, address): _scrub(v, address) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, address) for v in value]
    return value


def _keep_marker(session: Session, key: bytes, address: str) -> None:
    marker = erased.marker(key, address)
    if session.scalar(select(Suppression.id).where(Suppression.email == marker)) is None:
        session.add(Suppression(email=marker, reason=erased.REASON, source=SOURCE, detail=""))
