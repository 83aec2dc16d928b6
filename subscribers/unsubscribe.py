"""Leaving: what an unsubscribe link or a one-click request does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.db.base import utcnow
from mailer.db.models import Event
from subscribers.models import Subscriber, Subscription, SubscriptionStatus


@dataclass(frozen=True)
class UnsubscribeResult:
    email: str
    changed: bool  # False when there was nothing left to leave: repeats are harmless


def unsubscribe(
    session: Session,
    subscriber: Subscriber,
    list_ids: Sequence[int],
    *,
    source: str,
    edition_id: int | None = None,
) -> UnsubscribeResult:
    """End the subscriber's active subscriptions to ``list_ids`` and record why."""
    now = utcnow()
    active = session.scalars(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber.id,
            Subscription.list_id.in_(list_ids),
            Subscription.status == SubscriptionStatus.ACTIVE,
        )
    ).all()
    for subscription in active:
        subscription.status = SubscriptionStatus.UNSUBSCRIBED
        subscription.unsubscribed_at = now
    if active:
        session.add(
            Event(
                source=source,
                kind="unsubscribe",
                email=subscriber.email,
                edition_id=edition_id,
                payload={"list_ids": sorted(s.list_id for s in active)},
                occurred_at=now,
                received_at=now,
            )
        )
    return UnsubscribeResult(email=subscriber.email, changed=bool(active))
