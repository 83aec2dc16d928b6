"""The bounce policy: what each kind of feedback does to addresses and to the ledger.

It runs over stored events still pending (``processed_at`` unset), whatever brought
them: the signed webhook, the provider sync, bounce mail. Every step is idempotent,
so an event applied twice (two processes, a crash before the mark) changes nothing
more. Defaults, per the product's rules:

- hard bounce: suppress (hard bounce), the subscriber is ``bounced``;
- soft signals (``blocked`` bounces, ``deferred``, soft bounce mail): counted per
  address, one per message; ``soft_bounce_limit`` within the window suppress;
- spam report: suppress everywhere, the subscriber ``complained``;
- ``unsubscribe`` leaves every list, ``group_unsubscribe`` the edition's newsletter
  (every list if the edition is unknown: the reader asked to leave);
  ``group_resubscribe`` undoes the latter;
- ``dropped`` for a bounced, reported, invalid or unsubscribed address: suppress;
  other drops are only recorded;
- every provider event about a delivery proves the provider took it: an
  ``unknown`` ledger row becomes ``sent``; delivered, opened and clicked are
  stamped on the row the first time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Connection, DateTime, bindparam, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker

from mailer.bounces.reasons import BounceClass
from mailer.config import Settings
from mailer.db.base import utcnow
from mailer.db.models import Delivery, DeliveryStatus, Edition, Event
from mailer.db.session import transaction
from mailer.dispatch import tallies
from mailer.dispatch.ledger import DELIVERIES, ids_among
from mailer.dispatch.tallies import moved
from mailer.events.store import EVENTS
from subscribers.models import Subscriber, Subscription, SubscriptionStatus, Suppression
from subscribers.suppressions import NewSuppression, SuppressionReason, suppress_many
from subscribers.unsubscribe import unsubscribe

# SendGrid's drop reasons that mean "this address must not be mailed".
DROP_SUPPRESSES = {
    "bounced address": SuppressionReason.HARD_BOUNCE,
    "spam reporting address": SuppressionReason.COMPLAINT,
    "invalid": SuppressionReason.INVALID,
    "unsubscribed address": SuppressionReason.UNSUBSCRIBED,
}
SUBSCRIPTION_KINDS = frozenset({"unsubscribe", "group_unsubscribe", "group_resubscribe"})
# Events that are not about a provider's handling of a delivery.
NOT_PROVIDER = {"rejected", "suppression_lifted"}
_FIRST_SEEN = {"delivered": "delivered_at", "open": "opened_at", "click": "clicked_at"}


@dataclass(frozen=True)
class Policy:
    soft_bounce_limit: int = 3
    soft_bounce_window: timedelta = timedelta(days=30)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            soft_bounce_limit=settings.soft_bounce_limit,
            soft_bounce_window=timedelta(days=settings.soft_bounce_window_days),
        )


@dataclass
class PolicyReport:
    events: int = 0
    suppressed: int = 0
    unsubscribed: int = 0
    resubscribed: int = 0
    reconciled: int = 0

    def add(self, other: PolicyReport) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def apply_pending(
    factory: sessionmaker[Session],
    policy: Policy,
    *,
    chunk: int = 1000,
    clock: Callable[[], datetime] = utcnow,
) -> PolicyReport:
    """Apply the policy to every pending event, a chunk per transaction."""
    total = PolicyReport()
    while True:
        with transaction(factory) as session:
            report = _apply_chunk(session, policy, chunk, clock())
        total.add(report)
        if report.events < chunk:
            return total


def _apply_chunk(session: Session, policy: Policy, chunk: int, now: datetime) -> PolicyReport:
    report = PolicyReport()
    query = select(Event).where(Event.processed_at.is_(None)).order_by(Event.id).limit(chunk)
    if session.get_bind().dialect.name == "postgresql":
        # Two appliers (a web process, a worker) take different events.
        query = query.with_for_update(skip_locked=True)
    events = list(session.scalars(query))
    if not events:
        return report
    report.events = len(events)
    _ledger_facts(session, events, report)
    chunk_facts = _ChunkFacts.load(session, events, now - policy.soft_bounce_window)
    for event in events:
        _apply_one(session, policy, event, chunk_facts, now, report)
    suppress_many(session, chunk_facts.to_suppress)
    # One statement marks the chunk done. Setting the attribute on each loaded event made
    # every later query of the loop autoflush the events touched since the previous one.
    connection = session.connection()
    connection.execute(
        update(EVENTS)
        .where(ids_among(EVENTS.c.id, [e.id for e in events], connection.dialect.name))
        .values(processed_at=now)
    )
    return report


@dataclass
class _ChunkFacts:
    """What the loop over one chunk would otherwise ask the database event by event."""

    suppressed: set[str]  # addresses already on the suppression list
    soft_signals: dict[str, int]  # soft signals per address within the window
    subscribers: dict[str, Subscriber]  # of the chunk's (un)subscribe events, by address
    to_suppress: list[NewSuppression] = field(default_factory=list)
    edition_lists: dict[int, list[int] | None] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, events: list[Event], since: datetime) -> _ChunkFacts:
        emails = sorted({e.email.strip().lower() for e in events if e.email})
        suppressed: set[str] = set()
        for start in range(0, len(emails), 500):
            suppressed.update(
                session.scalars(
                    select(Suppression.email).where(
                        Suppression.email.in_(emails[start : start + 500])
                    )
                )
            )
        soft = sorted({e.email for e in events if e.email and e.bounce_class == BounceClass.SOFT})
        counts: dict[str, int] = {}
        if soft:
            # One per message: SendGrid reports a deferral at every retry of the same
            # message, and one slow message is not three. A message that was delivered
            # in the end does not count at all (large providers defer routinely), nor
            # does anything before an operator last lifted the address's suppression.
            # Every event of the chunk is already stored, so one read per chunk gives
            # what a count per event gave.
            one_per_message = func.coalesce(Event.delivery_id, -Event.id)
            messages: dict[str, set[int]] = {}
            for start in range(0, len(soft), 500):
                emails = soft[start : start + 500]
                lifted = dict(
                    session.execute(
                        select(Event.email, func.max(Event.occurred_at))
                        .where(Event.email.in_(emails), Event.kind == "suppression_lifted")
                        .group_by(Event.email)
                    ).all()
                )
                # Plain rows, counted here: a correlated subquery for the lifts made
                # PostgreSQL's estimate big enough to JIT-compile every chunk's query.
                for email, message, at in session.execute(
                    select(Event.email, one_per_message, Event.occurred_at)
                    .outerjoin(Delivery, Delivery.id == Event.delivery_id)
                    .where(
                        Event.email.in_(emails),
                        Event.bounce_class == BounceClass.SOFT.value,
                        Event.occurred_at >= since,
                        Delivery.delivered_at.is_(None),
                    )
                ):
                    if email not in lifted or at > lifted[email]:
                        messages.setdefault(email, set()).add(message)
            counts = {email: len(found) for email, found in messages.items()}
        leaving = sorted({e.email for e in events if e.email and e.kind in SUBSCRIPTION_KINDS})
        subscribers = {
            subscriber.email: subscriber
            for start in range(0, len(leaving), 500)
            for subscriber in session.scalars(
                select(Subscriber).where(Subscriber.email.in_(leaving[start : start + 500]))
            )
        }
        return cls(suppressed, counts, subscribers)


def _ledger_facts(session: Session, events: list[Event], report: PolicyReport) -> None:
    provider = [e for e in events if e.delivery_id is not None and e.kind not in NOT_PROVIDER]
    if not provider:
        return
    connection = session.connection()
    dialect = connection.dialect.name
    delivery_ids = sorted({e.delivery_id for e in provider if e.delivery_id})
    if dialect == "postgresql":
        # Row locks in id order, before any update: two appliers (a web process and a
        # worker) that touch the same deliveries in their events' order deadlock.
        connection.execute(
            select(DELIVERIES.c.id)
            .where(ids_among(DELIVERIES.c.id, delivery_ids, dialect))
            .order_by(DELIVERIES.c.id)
            .with_for_update()
        )
    reconciled = connection.execute(
        update(DELIVERIES)
        .where(
            ids_among(DELIVERIES.c.id, delivery_ids, dialect),
            DELIVERIES.c.status == DeliveryStatus.UNKNOWN,
        )
        .values(
            status=DeliveryStatus.SENT,
            error="outcome was unknown; the provider's events show it accepted the message",
        )
        .returning(DELIVERIES.c.edition_id)
    ).scalars()
    by_edition = Counter(reconciled)
    for edition_id, number in by_edition.items():
        tallies.add(
            connection, edition_id, moved(number, DeliveryStatus.UNKNOWN, DeliveryStatus.SENT)
        )
    report.reconciled += sum(by_edition.values())
    # The rows as they stand (locked above on PostgreSQL; SQLite has one writer): what
    # the stamps below change is counted from them, per edition, in the ledger's tallies.
    before = {
        row.id: row
        for row in connection.execute(
            select(
                DELIVERIES.c.id,
                DELIVERIES.c.edition_id,
                *(DELIVERIES.c[column] for column in _FIRST_SEEN.values()),
                DELIVERIES.c.bounce_class,
            ).where(ids_among(DELIVERIES.c.id, delivery_ids, dialect))
        )
    }
    stamped: Counter[tuple[int, str]] = Counter()
    for kind, column in _FIRST_SEEN.items():
        first: dict[int, datetime] = {}
        for e in provider:
            if e.kind == kind and e.delivery_id is not None:
                seen = first.get(e.delivery_id)
                first[e.delivery_id] = e.occurred_at if seen is None else min(seen, e.occurred_at)
        if first:
            _stamp_first(connection, column, first)
            stamped.update(
                (row.edition_id, _STAMPED_AS[column])
                for row in map(before.get, first)
                if row is not None and row._mapping[column] is None
            )
    bounced = [
        {"delivery": e.delivery_id, "class": e.bounce_class} for e in provider if e.bounce_class
    ]
    if bounced:
        stamped.update(_bounce_changes(before, bounced))
    changes: dict[int, dict[str, int]] = {}
    for (edition_id, column), number in stamped.items():
        changes.setdefault(edition_id, {})[column] = number
    for edition_id, change in sorted(changes.items()):
        tallies.add(connection, edition_id, change)
    if bounced:
        # Hard wins over soft; a soft signal never downgrades a hard bounce.
        connection.execute(
            update(DELIVERIES)
            .where(
                DELIVERIES.c.id == bindparam("delivery"),
                (DELIVERIES.c.bounce_class.is_(None))
                | (DELIVERIES.c.bounce_class != BounceClass.HARD.value),
            )
            .values(bounce_class=bindparam("class")),
            bounced,
        )


_STAMPED_AS = {"delivered_at": "delivered", "opened_at": "opened", "clicked_at": "clicked"}
_BOUNCED_AS = {BounceClass.HARD.value: "bounced_hard", BounceClass.SOFT.value: "bounced_soft"}


def _bounce_changes(
    before: dict[int, Any], bounced: list[dict[str, Any]]
) -> Counter[tuple[int, str]]:
    """How the bounce update below changes each edition's hard and soft counts: it runs
    over ``bounced`` in order, and a class is replaced unless it is hard."""
    classes = {delivery_id: row.bounce_class for delivery_id, row in before.items()}
    for item in bounced:
        delivery = item["delivery"]
        if delivery in classes and classes[delivery] != BounceClass.HARD.value:
            classes[delivery] = item["class"]
    changes: Counter[tuple[int, str]] = Counter()
    for delivery_id, row in before.items():
        old, new = row.bounce_class, classes[delivery_id]
        if old != new:
            if old in _BOUNCED_AS:
                changes[(row.edition_id, _BOUNCED_AS[old])] -= 1
            if new in _BOUNCED_AS:
                changes[(row.edition_id, _BOUNCED_AS[new])] += 1
    return changes


def _stamp_first(connection: Connection, column: str, first: dict[int, datetime]) -> None:
    """Set ``column`` to the given time on rows where it is still unset."""
    target = DELIVERIES.c[column]
    if connection.dialect.name == "postgresql":
        # One statement over two arrays: an UPDATE per row would be a round trip each.
        ids, times = zip(*sorted(first.items()), strict=True)
        given = select(
            func.unnest(bindparam("ids", list(ids), type_=postgresql.ARRAY(BigInteger))).label(
                "id"
            ),
            func.unnest(
                bindparam("times", list(times), type_=postgresql.ARRAY(DateTime(timezone=True)))
            ).label("at"),
        ).subquery()
        connection.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id == given.c.id, target.is_(None))
            .values({column: given.c.at})
        )
        return
    # SQLite runs in-process: executemany costs no round trips.
    connection.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == bindparam("delivery"), target.is_(None))
        .values({column: bindparam("at")}),
        [{"delivery": delivery, "at": at} for delivery, at in first.items()],
    )


def _apply_one(
    session: Session,
    policy: Policy,
    event: Event,
    facts: _ChunkFacts,
    now: datetime,
    report: PolicyReport,
) -> None:
    kind = event.kind
    if not event.email:
        return
    if event.bounce_class == BounceClass.HARD:
        report.suppressed += _suppress(event, SuppressionReason.HARD_BOUNCE, facts)
    elif event.bounce_class == BounceClass.SOFT:
        if facts.soft_signals.get(event.email, 0) >= policy.soft_bounce_limit:
            report.suppressed += _suppress(event, SuppressionReason.SOFT_BOUNCES, facts)
    elif kind == "spamreport":
        report.suppressed += _suppress(event, SuppressionReason.COMPLAINT, facts)
    elif kind == "dropped":
        reason = _drop_reason(event)
        if reason is not None:
            report.suppressed += _suppress(event, reason, facts)
    elif kind in ("unsubscribe", "group_unsubscribe"):
        report.unsubscribed += _unsubscribe(session, event, facts)
    elif kind == "group_resubscribe":
        report.resubscribed += _resubscribe(session, event, facts)


def _suppress(event: Event, reason: SuppressionReason, facts: _ChunkFacts) -> int:
    """Queue a suppression for the chunk's one set-based write (``suppress_many``)."""
    address = event.email.strip().lower()
    if address in facts.suppressed:
        return 0  # already on the list, or queued by an earlier event: the first reason stays
    facts.suppressed.add(address)
    facts.to_suppress.append(
        NewSuppression(
            address,
            reason,
            source=event.source,
            detail=event.detail or "",
            event_id=event.id,
            at=event.occurred_at,
            bounce_reason=event.bounce_reason,
        )
    )
    return 1


def _drop_reason(event: Event) -> SuppressionReason | None:
    stated = event.payload.get("reason") if isinstance(event.payload, dict) else None
    text = (stated if isinstance(stated, str) else event.detail or "").strip().lower()
    return DROP_SUPPRESSES.get(text)


def _newsletter_lists(session: Session, event: Event, facts: _ChunkFacts) -> list[int] | None:
    """The lists of the newsletter the event's edition belongs to, if known."""
    if event.kind == "unsubscribe" or event.edition_id is None:
        return None
    if event.edition_id not in facts.edition_lists:
        edition = session.get(Edition, event.edition_id)
        facts.edition_lists[event.edition_id] = (
            [mailing_list.id for mailing_list in edition.newsletter.lists] if edition else None
        )
    return facts.edition_lists[event.edition_id]


def _unsubscribe(session: Session, event: Event, facts: _ChunkFacts) -> int:
    subscriber = facts.subscribers.get(event.email)
    if subscriber is None:
        return 0
    list_ids = _newsletter_lists(session, event, facts)
    if list_ids is None:
        list_ids = list(
            session.scalars(
                select(Subscription.list_id).where(Subscription.subscriber_id == subscriber.id)
            )
        )
    changed = unsubscribe(
        session.connection(),
        subscriber.id,
        subscriber.email,
        list_ids,
        source=f"{event.source}:{event.kind}",
        edition_id=event.edition_id,
        record=False,  # the provider's event is the record
        at=event.occurred_at,
    )
    return int(changed)


def _resubscribe(session: Session, event: Event, facts: _ChunkFacts) -> int:
    subscriber = facts.subscribers.get(event.email)
    list_ids = _newsletter_lists(session, event, facts)
    if subscriber is None or not list_ids:
        return 0
    # Suppressions still hold: a resubscribed but bounced address stays unmailed.
    changed = session.execute(
        update(Subscription)
        .where(
            Subscription.subscriber_id == subscriber.id,
            Subscription.list_id.in_(list_ids),
            Subscription.status == SubscriptionStatus.UNSUBSCRIBED,
            # A late retry of an old resubscribe must not undo a newer unsubscribe.
            Subscription.unsubscribed_at < event.occurred_at,
        )
        .values(status=SubscriptionStatus.ACTIVE, unsubscribed_at=None)
    )
    return int(getattr(changed, "rowcount", 0) or 0)


def pending_count(session: Session) -> int:
    return int(
        session.scalar(select(func.count(Event.id)).where(Event.processed_at.is_(None))) or 0
    )
