"""What a reader changes on their preference page: lists, pauses, zone, address, leaving
and coming back. Each runs in the caller's transaction.

The page is reached with a link from the reader's own mailbox, which proves as much as a
confirmation click: a reader who is subscribed may add a list there without another
email. Coming back after leaving everything is different (the link may be an old one in
a forwarded email), so it asks for a fresh confirmation.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from subscribers.models import (
    Consent,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from subscribers.unsubscribe import unsubscribe

PAUSES = {"week": timedelta(days=7), "month": timedelta(days=30)}


@dataclass(frozen=True)
class ListChoice:
    id: int
    name: str
    description: str
    status: str | None  # active, pending, unsubscribed, or None (never subscribed)


def offered_lists(session: Session, subscriber_id: int) -> list[ListChoice]:
    """The public lists, and any other list the reader has a subscription to (so that
    they can leave a list an operator put them on)."""
    statuses: dict[int, str] = {
        list_id: status
        for list_id, status in session.execute(
            select(Subscription.list_id, Subscription.status).where(
                Subscription.subscriber_id == subscriber_id
            )
        )
    }
    rows = session.scalars(
        select(MailingList)
        .where(or_(MailingList.public.is_(True), MailingList.id.in_(list(statuses))))
        .order_by(MailingList.name)
    )
    return [ListChoice(m.id, m.name, m.description, statuses.get(m.id)) for m in rows]


def _consent(
    session: Session, subscriber_id: int, list_id: int | None, kind: str, now: datetime, **more: str
) -> None:
    session.add(
        Consent(
            subscriber_id=subscriber_id,
            list_id=list_id,
            kind=kind,
            source=more.get("source", "preferences"),
            wording=more.get("wording", ""),
            client=more.get("client", "")[:100],
            at=now,
        )
    )


@dataclass(frozen=True)
class ListChange:
    joined: tuple[int, ...]
    left: tuple[int, ...]


def set_lists(
    session: Session,
    subscriber: Subscriber,
    keep: Collection[int],
    *,
    wording: str,
    client: str,
    now: datetime,
) -> ListChange:
    """Keep exactly ``keep`` of the offered lists. Joining needs an active subscriber
    (one who left everything comes back through ``come_back``)."""
    offered = {c.id: c for c in offered_lists(session, subscriber.id)}
    wanted = {i for i in keep if i in offered}
    leaving = [
        i for i, c in offered.items() if i not in wanted and c.status == SubscriptionStatus.ACTIVE
    ]
    joined: list[int] = []
    if subscriber.status == SubscriberStatus.ACTIVE:
        for list_id in sorted(wanted):
            status = offered[list_id].status
            if status == SubscriptionStatus.ACTIVE:
                continue
            if status is None:
                session.add(
                    Subscription(
                        subscriber_id=subscriber.id,
                        list_id=list_id,
                        status=SubscriptionStatus.ACTIVE,
                        created_at=now,
                    )
                )
            else:
                session.execute(
                    update(Subscription)
                    .where(
                        Subscription.subscriber_id == subscriber.id,
                        Subscription.list_id == list_id,
                    )
                    .values(status=SubscriptionStatus.ACTIVE, unsubscribed_at=None)
                    .execution_options(synchronize_session=False)
                )
            joined.append(list_id)
            _consent(
                session, subscriber.id, list_id, "subscribe", now, wording=wording, client=client
            )
    left: list[int] = []
    if leaving and unsubscribe(
        session.connection(),
        subscriber.id,
        subscriber.email,
        leaving,
        source="preferences",
        at=now,
    ):
        left = sorted(leaving)
        for list_id in left:
            _consent(session, subscriber.id, list_id, "unsubscribe", now, client=client)
    return ListChange(tuple(joined), tuple(left))


def pause(subscriber: Subscriber, length: str, now: datetime) -> datetime:
    if length not in PAUSES:
        raise ValueError(f"pause for a week or a month, not {length!r}")
    subscriber.paused_until = now + PAUSES[length]
    return subscriber.paused_until


def resume(subscriber: Subscriber) -> None:
    subscriber.paused_until = None


def leave_everything(
    session: Session, subscriber: Subscriber, *, client: str, now: datetime
) -> bool:
    """Every subscription ends (pending ones too) and the subscriber is unsubscribed.
    Returns whether anything changed."""
    active = list(
        session.scalars(
            select(Subscription.list_id).where(
                Subscription.subscriber_id == subscriber.id,
                Subscription.status.in_([SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING]),
            )
        )
    )
    changed = subscriber.status != SubscriberStatus.UNSUBSCRIBED or bool(active)
    if active:
        unsubscribe(
            session.connection(),
            subscriber.id,
            subscriber.email,
            active,
            source="preferences",
            at=now,
        )
        session.execute(
            update(Subscription)
            .where(
                Subscription.subscriber_id == subscriber.id,
                Subscription.status == SubscriptionStatus.PENDING,
            )
            .values(status=SubscriptionStatus.UNSUBSCRIBED, unsubscribed_at=now)
            .execution_options(synchronize_session=False)
        )
        for list_id in sorted(active):
            _consent(session, subscriber.id, list_id, "unsubscribe", now, client=client)
    if subscriber.status == SubscriberStatus.ACTIVE:
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
    return changed


def come_back(
    session: Session,
    subscriber: Subscriber,
    list_ids: Collection[int],
    *,
    wording: str,
    client: str,
    now: datetime,
) -> tuple[int, ...]:
    """Ask to return to ``list_ids``: they become pending until a fresh confirmation
    link is clicked (recorded as consent, kind ``resubscribe``). Returns the lists."""
    offered = {c.id: c for c in offered_lists(session, subscriber.id)}
    wanted = sorted(i for i in list_ids if i in offered)
    for list_id in wanted:
        if offered[list_id].status is None:
            session.add(
                Subscription(
                    subscriber_id=subscriber.id,
                    list_id=list_id,
                    status=SubscriptionStatus.PENDING,
                    created_at=now,
                )
            )
        else:
            session.execute(
                update(Subscription)
                .where(
                    Subscription.subscriber_id == subscriber.id,
                    Subscription.list_id == list_id,
                    Subscription.status != SubscriptionStatus.ACTIVE,
                )
                .values(status=SubscriptionStatus.PENDING, unsubscribed_at=None)
                .execution_options(synchronize_session=False)
            )
        _consent(
            session, subscriber.id, list_id, "resubscribe", now, wording=wording, client=client
        )
    return tuple(wanted)


def address_taken(session: Session, email: str, subscriber_id: int) -> bool:
    other = session.scalar(
        select(Subscriber.id).where(Subscriber.email == email, Subscriber.id != subscriber_id)
    )
    return other is not None
