"""Leaving: what an unsubscribe link or a one-click request does."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update

from mailer.db.base import utcnow
from mailer.db.models import Edition, Event, Newsletter, newsletter_lists
from mailer.events import tallies as event_tallies
from subscribers.models import Subscriber, Subscription, SubscriptionStatus
from subscribers.tokens import Keys, verify_unsubscribe

_LEFT = {"status": SubscriptionStatus.UNSUBSCRIBED, "unsubscribed_at": bindparam("left_at")}

# Built once, bound per call: on a one-click request, building these statements (and
# their cache keys, which walk every value) cost more than running them. (A bound
# parameter of an UPDATE may not take a column's name.)
_END_LISTS = (
    update(Subscription)
    .where(
        Subscription.subscriber_id == bindparam("leaving_id"),
        Subscription.status == SubscriptionStatus.ACTIVE,
        Subscription.list_id.in_(bindparam("leaving_lists", expanding=True)),
    )
    .values(**_LEFT)
    .returning(Subscription.list_id)
)
_RECORD = insert(Event)


def unsubscribe(
    connection: Connection,
    subscriber_id: int,
    email: str,
    list_ids: Sequence[int],
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
    ended: Sequence[int] = (
        connection.execute(
            _END_LISTS,
            {"leaving_id": subscriber_id, "left_at": now, "leaving_lists": list(list_ids)},
        )
        .scalars()
        .all()
    )
    if ended and record:
        connection.execute(_RECORD, _event(source, email, edition_id, ended, now))
        event_tallies.add(connection, [(edition_id, "unsubscribe", now)])
    return bool(ended)


def _event(
    source: str, email: str, edition_id: int | None, ended: Sequence[int], now: datetime
) -> dict[str, Any]:
    return {
        "source": source,
        "kind": "unsubscribe",
        "email": email,
        "edition_id": edition_id,
        "payload": {"list_ids": sorted(ended)},
        "occurred_at": now,
        "received_at": now,
    }


@dataclass(frozen=True)
class LinkRequest:
    """A verified unsubscribe link's claims, and what posted it (``link``, ``one-click``)."""

    subscriber_id: int
    edition_id: int
    source: str


@dataclass(frozen=True)
class LinkOutcome:
    target: LinkTarget
    changed: bool


# Core tables, not the ORM's entities: executing an ORM select costs its own set-up on
# every call, more than these reads by key.
_EDITIONS = cast(Table, Edition.__table__)
_NEWSLETTERS = cast(Table, Newsletter.__table__)
_SUBSCRIBERS = cast(Table, Subscriber.__table__)
_SUBSCRIPTIONS = cast(Table, Subscription.__table__)
_NEWSLETTER_OF_EDITIONS = (
    select(_EDITIONS.c.id, _EDITIONS.c.send_started_at, _NEWSLETTERS.c.id, _NEWSLETTERS.c.name)
    .join(_NEWSLETTERS, _NEWSLETTERS.c.id == _EDITIONS.c.newsletter_id)
    .where(_EDITIONS.c.id.in_(bindparam("edition_ids", expanding=True)))
)
_READERS = select(_SUBSCRIBERS.c.id, _SUBSCRIBERS.c.email, _SUBSCRIBERS.c.created_at).where(
    _SUBSCRIBERS.c.id.in_(bindparam("subscriber_ids", expanding=True))
)
_END_READERS_OF_NEWSLETTER = (
    update(_SUBSCRIPTIONS)
    .where(
        _SUBSCRIPTIONS.c.subscriber_id.in_(bindparam("leaving_ids", expanding=True)),
        _SUBSCRIPTIONS.c.status == SubscriptionStatus.ACTIVE,
        _SUBSCRIPTIONS.c.list_id.in_(
            select(newsletter_lists.c.list_id).where(
                newsletter_lists.c.newsletter_id == bindparam("newsletter_id")
            )
        ),
    )
    .values(**_LEFT)
    .returning(_SUBSCRIPTIONS.c.subscriber_id, _SUBSCRIPTIONS.c.list_id)
)


def unsubscribe_links(
    connection: Connection, requests: Sequence[LinkRequest], *, at: datetime | None = None
) -> list[LinkOutcome | UnknownRecipient]:
    """What ``resolve`` and ``unsubscribe`` do for one link, for many links at once (a
    group of one-click requests): two reads and one UPDATE per newsletter, whatever the
    number of links, and the events in one INSERT. Per request, in order, its outcome or
    the UnknownRecipient it stands for. A reader twice in the group (a double click)
    leaves once: the first request changed something, the second did not.
    """
    now = at or utcnow()
    editions = {
        edition_id: (started, newsletter_id, name)
        for edition_id, started, newsletter_id, name in connection.execute(
            _NEWSLETTER_OF_EDITIONS, {"edition_ids": sorted({r.edition_id for r in requests})}
        )
    }
    readers = {
        subscriber_id: (email, created)
        for subscriber_id, email, created in connection.execute(
            _READERS, {"subscriber_ids": sorted({r.subscriber_id for r in requests})}
        )
    }
    targets: list[LinkTarget | None] = []
    leaving: dict[int, set[int]] = defaultdict(set)  # newsletter id: subscriber ids
    for request in requests:
        edition = editions.get(request.edition_id)
        reader = readers.get(request.subscriber_id)
        # As in resolve: an edition that started before the reader existed never mailed them.
        if edition is None or reader is None or edition[0] is None or edition[0] < reader[1]:
            targets.append(None)
            continue
        _, newsletter_id, name = edition
        targets.append(
            LinkTarget(request.subscriber_id, reader[0], newsletter_id, name, request.edition_id)
        )
        leaving[newsletter_id].add(request.subscriber_id)
    ended: dict[tuple[int, int], list[int]] = defaultdict(list)  # (newsletter, reader): lists
    for newsletter_id, subscriber_ids in sorted(leaving.items()):
        for subscriber_id, list_id in connection.execute(
            _END_READERS_OF_NEWSLETTER,
            {"leaving_ids": sorted(subscriber_ids), "newsletter_id": newsletter_id, "left_at": now},
        ):
            ended[(newsletter_id, subscriber_id)].append(list_id)
    outcomes: list[LinkOutcome | UnknownRecipient] = []
    events = []
    for request, target in zip(requests, targets, strict=True):
        if target is None:
            outcomes.append(UnknownRecipient(NO_LONGER))
            continue
        lists = ended.pop((target.newsletter_id, target.subscriber_id), None)
        if lists:
            events.append(_event(request.source, target.email, target.edition_id, lists, now))
        outcomes.append(LinkOutcome(target, changed=bool(lists)))
    if events:
        connection.execute(_RECORD, events)
        event_tallies.add(connection, [(e["edition_id"], "unsubscribe", now) for e in events])
    return outcomes


class UnknownRecipient(LookupError):
    """The token is genuine but names a subscriber or edition that no longer exists."""


NO_LONGER = "this link belongs to a subscription that no longer exists"


@dataclass(frozen=True)
class LinkTarget:
    subscriber_id: int
    email: str
    newsletter_id: int
    newsletter_name: str
    edition_id: int


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
        raise UnknownRecipient(NO_LONGER)
    email, newsletter_id, newsletter_name = row
    return LinkTarget(
        claims.subscriber_id, email, newsletter_id, newsletter_name, claims.edition_id
    )
