"""Everything we hold about one reader, as JSON-ready data (their right of access).

Profile, subscriptions with list names and statuses, consent records, deliveries (which
edition, how it went, when) and events (what happened, when, with the provider's detail).
One person's history fits in memory, so this reads it all at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mailer.db.models import Delivery, Edition, Event, Newsletter
from subscribers.models import Consent, MailingList, Subscriber, Subscription, Suppression


class NoSuchSubscriber(LookupError):
    pass


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export(session: Session, subscriber_id: int) -> dict[str, Any]:
    """The reader's data; raises NoSuchSubscriber if there is no such subscriber."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NoSuchSubscriber(f"no subscriber {subscriber_id}")
    suppression = session.scalar(select(Suppression).where(Suppression.email == subscriber.email))
    return {
        "profile": {
            "id": subscriber.id,
            "email": subscriber.email,
            "name": subscriber.name,
            "status": subscriber.status,
            "attributes": subscriber.attributes,
            "timezone": subscriber.timezone,
            "paused_until": _time(subscriber.paused_until),
            "created_at": _time(subscriber.created_at),
            "updated_at": _time(subscriber.updated_at),
        },
        "subscriptions": [
            {
                "list": name,
                "status": s.status,
                "since": _time(s.created_at),
                "unsubscribed_at": _time(s.unsubscribed_at),
            }
            for s, name in session.execute(
                select(Subscription, MailingList.name)
                .join(MailingList, MailingList.id == Subscription.list_id)
                .where(Subscription.subscriber_id == subscriber_id)
                .order_by(MailingList.name)
            )
        ],
        "consents": [
            {
                "kind": c.kind,
                "list": name,
                "source": c.source,
                "wording": c.wording,
                "client": c.client,
                "at": _time(c.at),
            }
            for c, name in session.execute(
                select(Consent, MailingList.name)
                .outerjoin(MailingList, MailingList.id == Consent.list_id)
                .where(Consent.subscriber_id == subscriber_id)
                .order_by(Consent.at, Consent.id)
            )
        ],
        "suppression": None
        if suppression is None
        else {
            "reason": suppression.reason,
            "source": suppression.source,
            "since": _time(suppression.created_at),
        },
        "deliveries": [
            {
                "edition": d.edition_id,
                "newsletter": newsletter,
                "subject": subject,
                "status": d.status,
                "queued_at": _time(d.queued_at),
                "sent_at": _time(d.finished_at),
                "delivered_at": _time(d.delivered_at),
                "opened_at": _time(d.opened_at),
                "clicked_at": _time(d.clicked_at),
                "bounce": d.bounce_class,
            }
            for d, subject, newsletter in session.execute(
                select(Delivery, Edition.subject, Newsletter.name)
                .outerjoin(Edition, Edition.id == Delivery.edition_id)
                .outerjoin(Newsletter, Newsletter.id == Edition.newsletter_id)
                .where(Delivery.subscriber_id == subscriber_id)
                .order_by(Delivery.id)
            )
        ],
        "events": [
            {
                "kind": e.kind,
                "at": _time(e.occurred_at),
                "edition": e.edition_id,
                "source": e.source,
                "bounce": e.bounce_class,
                "detail": e.detail,
            }
            for e in session.scalars(
                select(Event)
                .where(
                    or_(
                        Event.email == subscriber.email,
                        Event.delivery_id.in_(
                            select(Delivery.id).where(Delivery.subscriber_id == subscriber_id)
                        ),
                    )
                )
                .order_by(Event.occurred_at, Event.id)
            )
        ],
    }
