"""Who may be mailed: the one definition used when the ledger is filled and
again when each batch is claimed (Invariant 1)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, not_, select

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


def mailable_among(subscriber_ids: Collection[int], list_ids: Sequence[int]) -> Select[int]:
    """The same rule as ``mailable``, as joins over a known set of subscribers.

    Used at claim time for a batch: written as joins so that PostgreSQL probes the
    indexes of these thousand subscribers rather than hashing every subscription.
    """
    return (
        select(Subscriber.id)
        .join(
            Subscription,
            and_(
                Subscription.subscriber_id == Subscriber.id,
                Subscription.status == SubscriptionStatus.ACTIVE,
                Subscription.list_id.in_(list_ids),
            ),
        )
        .outerjoin(Suppression, Suppression.email == Subscriber.email)
        .where(
            Subscriber.id.in_(subscriber_ids),
            Subscriber.status == SubscriberStatus.ACTIVE,
            Suppression.id.is_(None),
        )
        .distinct()
    )
