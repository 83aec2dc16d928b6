"""Leaving: what an unsubscribe link or a one-click request does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, bindparam, insert, select, update
from sqlalchemy.sql.dml import ReturningUpdate

from mailer.db.base import utcnow
from mailer.db.models import Edition, Event, Newsletter, newsletter_lists
from mailer.events import tallies as event_tallies
from subscribers.models import Subscriber, Subscription, SubscriptionStatus
from subscribers.tokens import Keys, verify_unsubscribe


@dataclass(frozen=True)
class NewsletterLists:
    """The lists a newsletter sends to, as the database knows them at that moment."""

    newsletter_id: int


ListIds = Sequence[int] | NewsletterLists

_ACTIVE_IN = (
    Subscription.subscriber_id == bindparam("leaving_id"),
    Subscription.status == SubscriptionStatus.ACTIVE,
)


def _ending(lists: ColumnElement[bool]) -> ReturningUpdate[tuple[int]]:
    return (
        update(Subscription)
        .where(*_ACTIVE_IN, lists)
        .values(status=SubscriptionStatus.UNSUBSCRIBED, unsubscribed_at=bindparam("left_at"))
        .returning(Subscription.list_id)
    )


# Built once, bound per call: on a one-click request, building these statements (and
# their cache keys, which walk every value) cost more than running them. (A bound
# parameter of an UPDATE may not take a column's name.)
_END_LISTS = _ending(Subscription.list_id.in_(bindparam("leaving_lists", expanding=True)))
_END_NEWSLETTER = _ending(
    Subscription.list_id.in_(
        select(newsletter_lists.c.list_id).where(
            newsletter_lists.c.newsletter_id == bindparam("newsletter_id")
        )
    )
)
_RECORD = insert(Event)


def unsubscribe(
    connection: Connection,
    subscriber_id: int,
    email: str,
    list_ids: ListIds,
    *,
    source: str,
    edition_id: int | None = None,
    record: bool = True,
    at: datetime | None = None,
) -> bool:
    """End the subscriber's active subscriptions to ``list_ids`` and record why; whether
    anything ended (a repeat is harmless and changes nothing).

    ``record=False`` when the cause is already an event of its own (a provider's
    unsubscribe event): one reader leaving is one event, not two. Core statements on the
    caller's connection: a one-click request is the busiest write readers make, and
    nothing here needs the ORM's objects (callers holding some do not read these columns
    back).
    """
    now = at or utcnow()
    # One conditional UPDATE: of two requests at once (two one-click POSTs), only the
    # one that actually moved rows from active records an event, on every database.
    if isinstance(list_ids, NewsletterLists):
        statement = _END_NEWSLETTER
        lists: dict[str, object] = {"newsletter_id": list_ids.newsletter_id}
    else:
        statement, lists = _END_LISTS, {"leaving_lists": list(list_ids)}
    ended = (
        connection.execute(statement, {"leaving_id": subscriber_id, "left_at": now, **lists})
        .scalars()
        .all()
    )
    if ended and record:
        connection.execute(
            _RECORD,
            {
                "source": source,
                "kind": "unsubscribe",
                "email": email,
                "edition_id": edition_id,
                "payload": {"list_ids": sorted(ended)},
                "occurred_at": now,
                "received_at": now,
            },
        )
        event_tallies.add(connection, [(edition_id, "unsubscribe", now)])
    return bool(ended)


class UnknownRecipient(LookupError):
    """The token is genuine but names a subscriber or edition that no longer exists."""


@dataclass(frozen=True)
class LinkTarget:
    subscriber_id: int
    email: str
    newsletter_id: int
    newsletter_name: str
    edition_id: int

    def lists(self) -> NewsletterLists:
        return NewsletterLists(self.newsletter_id)


# Built once: building the statement cost more than running it, on the most-opened page.
_LINK_TARGET = (
    select(Subscriber.email, Newsletter.id, Newsletter.name)
    .select_from(Subscriber)
    .join(Edition, Edition.id == bindparam("edition_id"))
    .join(Newsletter, Newsletter.id == Edition.newsletter_id)
    .where(
        Subscriber.id == bindparam("subscriber_id"),
        Edition.send_started_at >= Subscriber.created_at,
    )
)


def resolve(connection: Connection, keys: Keys, token: str) -> LinkTarget:
    """Who an unsubscribe link speaks for, in one query; raises TokenError or
    UnknownRecipient.

    An edition that started before the subscriber existed cannot have mailed them: the
    link was another person's, whose row was erased and whose id SQLite gave again (it
    reuses the highest rowid), and it must not speak for the newcomer.
    """
    claims = verify_unsubscribe(keys, token)
    row = connection.execute(
        _LINK_TARGET, {"subscriber_id": claims.subscriber_id, "edition_id": claims.edition_id}
    ).first()
    if row is None:
        raise UnknownRecipient("this link belongs to a subscription that no longer exists")
    email, newsletter_id, newsletter_name = row
    return LinkTarget(
        claims.subscriber_id, email, newsletter_id, newsletter_name, claims.edition_id
    )
