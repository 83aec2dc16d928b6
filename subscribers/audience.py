"""Who may be mailed: the one definition used when the ledger is filled and
again when each batch is claimed (Invariant 1)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists, not_, select

from subscribers.models import (
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
)


def not_suppressed(email_column: Any) -> ColumnElement[bool]:
    return not_(exists(select(Suppression.id).where(Suppression.email == email_column)))


def mailable(list_ids: Any) -> ColumnElement[bool]:
    """Subscriber rows that are active, subscribed to one of ``list_ids`` (a
    subquery or a sequence) and not suppressed."""
    return and_(
        Subscriber.status == SubscriberStatus.ACTIVE,
        exists(
            select(Subscription.subscriber_id).where(
                Subscription.subscriber_id == Subscriber.id,
                Subscription.status == SubscriptionStatus.ACTIVE,
                Subscription.list_id.in_(list_ids),
            )
        ),
        not_suppressed(Subscriber.email),
    )
