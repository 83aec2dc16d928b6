"""The suppression list: addresses nobody may mail, why, and since when (Invariant 1).

Adding is idempotent (the first reason stands). Lifting is an operator's explicit
act: the row goes, and an event keeps who lifted what, why, and what it said.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.db.base import utcnow
from mailer.db.models import Event
from subscribers.addresses import normalize_email
from subscribers.models import (
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
)


class SuppressionReason(StrEnum):
    HARD_BOUNCE = "hard bounce"
    SOFT_BOUNCES = "repeated soft bounces"
    COMPLAINT = "spam complaint"
    INVALID = "invalid address"
    UNSUBSCRIBED = "unsubscribed at the provider"
    OPERATOR = "added by an operator"


# What a suppression does to the subscriber row, so lists and exports say it too.
_SUBSCRIBER_STATUS = {
    SuppressionReason.HARD_BOUNCE: SubscriberStatus.BOUNCED,
    SuppressionReason.SOFT_BOUNCES: SubscriberStatus.BOUNCED,
    SuppressionReason.INVALID: SubscriberStatus.BOUNCED,
    SuppressionReason.COMPLAINT: SubscriberStatus.COMPLAINED,
    SuppressionReason.UNSUBSCRIBED: SubscriberStatus.UNSUBSCRIBED,
}


class NotSuppressed(LookupError):
    """Lifting an address that is not on the list."""


@dataclass(frozen=True)
class SuppressionView:
    email: str
    reason: str
    source: str
    detail: str
    event_id: int | None
    created_at: datetime


def suppress(
    session: Session,
    email: str,
    reason: SuppressionReason,
    *,
    source: str,
    detail: str = "",
    event_id: int | None = None,
    at: datetime | None = None,
) -> bool:
    """Put ``email`` on the list; return False if it already was (its first reason stays)."""
    address = email.strip().lower()
    if session.scalar(select(Suppression.id).where(Suppression.email == address)) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(
                Suppression(
                    email=address,
                    reason=reason.value,
                    source=source,
                    detail=detail[:1000],
                    event_id=event_id,
                    created_at=at or utcnow(),
                )
            )
    except IntegrityError:
        return False  # suppressed at the same moment by another process
    status = _SUBSCRIBER_STATUS.get(reason)
    if status is not None:
        session.execute(
            update(Subscriber)
            .where(Subscriber.email == address, Subscriber.status == SubscriberStatus.ACTIVE)
            .values(status=status)
        )
    if reason is SuppressionReason.COMPLAINT:
        # A complaint ends every subscription, not just the one that was mailed.
        subscriber_ids = select(Subscriber.id).where(Subscriber.email == address)
        session.execute(
            update(Subscription)
            .where(
                Subscription.subscriber_id.in_(subscriber_ids),
                Subscription.status == SubscriptionStatus.ACTIVE,
            )
            .values(status=SubscriptionStatus.UNSUBSCRIBED, unsubscribed_at=at or utcnow())
        )
    return True


def lift(session: Session, email: str, *, operator: str, note: str) -> SuppressionView:
    """Remove ``email`` from the list, audited. Raises NotSuppressed if it is not on it.

    A bounced or complained subscriber becomes active again only through this; their
    subscriptions stay as they are (a complaint ended them: they must opt in again).
    """
    address = normalize_email(email)
    row = session.scalar(select(Suppression).where(Suppression.email == address))
    if row is None:
        raise NotSuppressed(f"{address} is not suppressed")
    view = _view(row)
    now = utcnow()
    session.add(
        Event(
            source="operator",
            kind="suppression_lifted",
            email=address,
            detail=note,
            payload={
                "operator": operator,
                "note": note,
                "reason": view.reason,
                "source": view.source,
                "detail": view.detail,
                "event_id": view.event_id,
                "suppressed_at": view.created_at.isoformat(),
            },
            occurred_at=now,
            received_at=now,
        )
    )
    session.delete(row)
    session.execute(
        update(Subscriber)
        .where(
            Subscriber.email == address,
            Subscriber.status.in_((SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)),
        )
        .values(status=SubscriberStatus.ACTIVE)
    )
    return view


def listing(
    session: Session, *, reason: str | None = None, limit: int = 100
) -> Sequence[SuppressionView]:
    query = select(Suppression).order_by(Suppression.created_at.desc(), Suppression.id.desc())
    if reason:
        query = query.where(Suppression.reason == reason)
    return [_view(row) for row in session.scalars(query.limit(limit))]


def _view(row: Suppression) -> SuppressionView:
    return SuppressionView(
        email=row.email,
        reason=row.reason,
        source=row.source,
        detail=row.detail,
        event_id=row.event_id,
        created_at=row.created_at,
    )
