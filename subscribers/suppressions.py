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
from sqlalchemy.orm import Session

from mailer.db.base import utcnow
from mailer.db.dialect import conflict_insert
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
    # Why the delivery failed, for a bounce (mailer.bounces.reasons.BounceReason value).
    bounce_reason: str | None = None


@dataclass(frozen=True)
class NewSuppression:
    email: str
    reason: SuppressionReason
    source: str
    detail: str = ""
    event_id: int | None = None
    at: datetime | None = None
    bounce_reason: str | None = None


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
    return bool(
        suppress_many(session, [NewSuppression(email, reason, source, detail, event_id, at)])
    )


def suppress_many(session: Session, items: Sequence[NewSuppression]) -> int:
    """Put addresses on the list, set-based; return how many were not on it before.

    An address already suppressed keeps its first reason; of several for one address
    here, the first wins. Subscribers take the matching status, and a complaint
    ends every subscription.
    """
    now = utcnow()
    first: dict[str, NewSuppression] = {}
    for item in items:
        first.setdefault(item.email.strip().lower(), item)
    if not first:
        return 0
    connection = session.connection()
    insert_fn = conflict_insert(connection.dialect.name)
    # ON CONFLICT: an address suppressed at the same moment by another process stays as is.
    added = set(
        session.scalars(
            insert_fn(Suppression)
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(Suppression.email),
            [
                {
                    "email": address,
                    "reason": item.reason.value,
                    "source": item.source,
                    "detail": item.detail[:1000],
                    "event_id": item.event_id,
                    "bounce_reason": item.bounce_reason,
                    "created_at": item.at or now,
                }
                for address, item in first.items()
            ],
        )
    )
    by_status: dict[SubscriberStatus, list[str]] = {}
    for address in added:
        status = _SUBSCRIBER_STATUS.get(first[address].reason)
        if status is not None:
            by_status.setdefault(status, []).append(address)
    for status, addresses in by_status.items():
        session.execute(
            update(Subscriber)
            .where(Subscriber.email.in_(addresses), Subscriber.status == SubscriberStatus.ACTIVE)
            .values(status=status)
            .execution_options(synchronize_session=False)
        )
    complained = [a for a in added if first[a].reason is SuppressionReason.COMPLAINT]
    if complained:
        # A complaint ends every subscription, not just the one that was mailed.
        session.execute(
            update(Subscription)
            .where(
                Subscription.subscriber_id.in_(
                    select(Subscriber.id).where(Subscriber.email.in_(complained))
                ),
                Subscription.status == SubscriptionStatus.ACTIVE,
            )
            .values(status=SubscriptionStatus.UNSUBSCRIBED, unsubscribed_at=now)
            .execution_options(synchronize_session=False)
        )
    return len(added)


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
        bounce_reason=row.bounce_reason,
    )
