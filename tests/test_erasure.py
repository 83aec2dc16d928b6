"""Erasing a reader leaves their address in no table in clear text; exporting their data."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import JSON, String, Text, cast, func, select
from sqlalchemy.orm import Session

from mailer.accounts.models import AuditEntry
from mailer.db.base import Base
from mailer.db.models import Delivery, DeliveryStatus, Event
from mailer.db.session import transaction
from mailer.runtime import Runtime
from subscribers import erased, erasure, personal_data
from subscribers.models import Consent, Subscriber, Subscription, Suppression
from tests import factories

KEY = b"k" * 32


def tables_holding(session: Session, text: str) -> list[str]:
    """Every ``table.column`` of every table whose text (or JSON as text) holds ``text``."""
    found = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if not isinstance(column.type, String | Text | JSON):
                continue
            hits = session.scalar(
                select(func.count())
                .select_from(table)
                .where(cast(column, String).like(f"%{text}%"))
            )
            if hits:
                found.append(f"{table.name}.{column.name}")
    return found


def _history(runtime: Runtime, email: str) -> int:
    """A subscriber with a delivery, an event and an audit entry that name them."""
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 2)
    edition_id = factories.edition(runtime, newsletter_id)
    with transaction(runtime.sessions) as session:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == email))
        assert subscriber is not None
        session.add(Consent(subscriber_id=subscriber.id, kind="import", source="import:x.csv"))
        delivery = Delivery(
            edition_id=edition_id,
            subscriber_id=subscriber.id,
            email=email,
            status=DeliveryStatus.SENT,
            error=f"250 ok for {email}",
        )
        session.add(delivery)
        session.flush()
        session.add(
            Event(
                source="sendgrid",
                kind="bounce",
                email=email,
                edition_id=edition_id,
                delivery_id=delivery.id,
                detail=f"550 {email} unknown",
                payload={"email": email},
            )
        )
        session.add(Suppression(email=email, reason="bounce", source="sendgrid"))
        session.add(
            AuditEntry(
                actor="cli:test",
                action="subscribers.add",
                target_kind="subscriber",
                target_id=email,
                after={"email": email, "lists": ["morning"]},
                note=f"added {email}",
            )
        )
        return subscriber.id


@pytest.mark.ledger_by_hand
def test_erasure_leaves_only_a_keyed_hash(runtime: Runtime) -> None:
    email = "reader00001@example.com"
    subscriber_id = _history(runtime, email)
    with runtime.sessions() as session:
        assert "subscribers.email" in tables_holding(session, email)
        data = personal_data.export(session, subscriber_id)
    json.dumps(data)  # JSON-ready as it is
    assert data["profile"]["email"] == email
    assert [s["list"] for s in data["subscriptions"]] == ["morning"]
    assert data["consents"][0]["kind"] == "import"
    assert data["deliveries"][0]["status"] == "sent"
    assert data["events"][0]["kind"] == "bounce"

    for _ in range(2):  # a repeated erasure is harmless
        with transaction(runtime.sessions) as session:
            erasure.erase(session, subscriber_id, KEY)

    with runtime.sessions() as session:
        assert tables_holding(session, email) == []
        assert tables_holding(session, "reader00001") == []
        assert erased.was_erased(session, KEY, email)
        assert session.get(Subscriber, subscriber_id) is None
        assert (
            session.scalar(select(func.count()).where(Subscription.subscriber_id == subscriber_id))
            == 0
        )
        delivery = session.scalar(select(Delivery).where(Delivery.subscriber_id == subscriber_id))
        assert delivery is not None and delivery.status == "sent"  # the counts stand
        markers = session.scalars(select(Suppression).where(Suppression.source == "erasure"))
        assert [m.reason for m in markers] == [erased.REASON]
        # The other reader is untouched.
        assert "subscribers.email" in tables_holding(session, "reader00002@example.com")
