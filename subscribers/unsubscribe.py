"""Leaving: what an unsubscribe link or a one-click request does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from mailer.db.base import utcnow
from mailer.db.models import Event
from mailer.events import tallies as event_tallies
from subscribers.models import Subscriber, Subscription, SubscriptionStatus
from subscribers.tokens import Keys, verify_unsubscribe


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
    record: bool = True,
    at: datetime | None = None,
) -> UnsubscribeResult:
    """End the subscriber's active subscriptions to ``list_ids`` and record why.

    ``record=False`` when the cause is already an event of its own (a provider's
    unsubscribe event): one reader leaving is one event, not two.
    """
    now = at or utcnow()
    # One conditional UPDATE: of two requests at once (two one-click POSTs), only the
    # one that actually moved rows from active records an event, on every database.
    ended = session.scalars(
        update(Subscription)
        .where(
            Subscription.subscriber_id == subscriber.id,
            Subscription.list_id.in_(list_ids),
            Subscription.status == SubscriptionStatus.ACTIVE,
        )
        .values(status=SubscriptionStatus.UNSUBSCRIBED, unsubscribed_at=now)
        .returning(Subscription.list_id)
        .execution_options(synchronize_session="fetch")
    ).all()
    if ended and record:
        session.add(
            Event(
                source=source,
                kind="unsubscribe",
                email=subscriber.email,
                edition_id=edition_id,
                payload={"list_ids": sorted(ended)},
                occurred_at=now,
                received_at=now,
            )
        )
        event_tallies.add(session.connection(), [(edition_id, "unsubscribe", now)])
    return UnsubscribeResult(email=subscriber.email, changed=bool(ended))


class UnknownRecipient(LookupError):
    """The token is genuine but names a subscriber or edition that no longer exists."""


@dataclass(frozen=True)
class LinkTarget:
    subscriber: Subscriber
    newsletter_name: str
    list_ids: list[int]
    edition_id: int


def resolve(session: Session, key: Keys, token: str) -> LinkTarget:
    """Who an unsubscribe link speaks for; raises TokenError or UnknownRecipient."""
    from mailer.db.models import Edition

    claims = verify_unsubscribe(key, token)
    subscriber = session.get(Subscriber, claims.subscriber_id)
    edition = session.get(Edition, claims.edition_id)
    if subscriber is None or edition is None:
        raise UnknownRecipient("this link belongs to a subscription that no longer exists")
    newsletter = edition.newsletter
    return LinkTarget(
        subscriber=subscriber,
        newsletter_name=newsletter.name,
        list_ids=[mailing_list.id for mailing_list in newsletter.lists],
        edition_id=edition.id,
    )


def unsubscribe_by_token(
    session: Session, key: Keys, token: str, *, source: str
) -> UnsubscribeResult:
    target = resolve(session, key, token)
    return unsubscribe(
        session, target.subscriber, target.list_ids, source=source, edition_id=target.edition_id
    )
