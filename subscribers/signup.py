"""Signing up and confirming: the domain rules of a reader joining lists.

A sign-up names lists; each list's opt-in mode decides what happens: ``single`` makes
the subscription active at once, ``double`` leaves it ``pending`` until the link of a
confirmation email is clicked. Whoever types an address into a form proves nothing, so
a sign-up never reactivates someone who was suppressed (a bounce, a spam report), and a
confirmation email goes to an address at most once per ``CONFIRMATION_INTERVAL``: a form
cannot be used to bomb a mailbox. Every agreement is kept as a ``Consent`` row (when,
which form and wording, from which client).

These functions run inside the caller's transaction and decide; sending the email is
the caller's (after the commit, so that no link is ever sent for a row that is not
there).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from mailer.db.dialect import conflict_insert
from subscribers.erased import forget_erasure, was_erased
from subscribers.models import (
    Consent,
    MailingList,
    OptIn,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from subscribers.tokens import Keys

CONFIRMATION_INTERVAL = timedelta(minutes=10)
CONFIRMATION_VALIDITY = timedelta(days=7)
# A subscriber in one of these states left through the provider's feedback, not a
# form: only an operator's lift brings them back.
BLOCKED = frozenset({SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED})


@dataclass(frozen=True)
class SignupOutcome:
    """What a sign-up did. The reader's answer never depends on it (no enumeration)."""

    subscriber_id: int | None  # None: nothing stored (suppressed)
    activated: tuple[int, ...]  # single opt-in lists now active
    pending: tuple[int, ...]  # double opt-in lists waiting for the click
    send_confirmation: bool  # a confirmation email is due now (not paced out)


_SUPPRESSED = select(Suppression.id).where(Suppression.email == bindparam("address"))
_KNOWN = select(Subscriber.id, Subscriber.status, Subscriber.name, Subscriber.timezone).where(
    Subscriber.email == bindparam("address")
)
_CURRENT = select(Subscription.list_id, Subscription.status).where(
    Subscription.subscriber_id == bindparam("reader"),
    Subscription.list_id.in_(bindparam("lists", expanding=True)),
)
_RESTART = (
    update(Subscription)
    .where(
        Subscription.subscriber_id == bindparam("reader"),
        Subscription.list_id == bindparam("list"),
    )
    .values(status=bindparam("new_status"), unsubscribed_at=None)
)


_CLAIM_SLOT = (
    update(Subscriber)
    .where(
        Subscriber.id == bindparam("reader"),
        or_(
            Subscriber.confirmation_sent_at.is_(None),
            Subscriber.confirmation_sent_at <= bindparam("paced_until"),
        ),
    )
    .values(confirmation_sent_at=bindparam("now"))
    .returning(Subscriber.id)
)
_PENDING_NAMES = (
    select(MailingList.name)
    .join(Subscription, Subscription.list_id == MailingList.id)
    .where(
        Subscription.subscriber_id == bindparam("reader"),
        Subscription.status == SubscriptionStatus.PENDING,
    )
    .order_by(MailingList.name)
)


@functools.cache
def _add_reader(dialect: str) -> Any:
    """The insert of a new address, built once per database."""
    return (
        conflict_insert(dialect)(Subscriber)
        .values(
            email=bindparam("address"),
            name=bindparam("name"),
            timezone=bindparam("timezone"),
            attributes={},
            status=SubscriberStatus.ACTIVE,
            created_at=bindparam("now"),
            updated_at=bindparam("now"),
        )
        .on_conflict_do_nothing(index_elements=[Subscriber.email])
        .returning(Subscriber.id, Subscriber.status, Subscriber.name, Subscriber.timezone)
    )


@functools.cache
def _join(dialect: str) -> Any:
    return conflict_insert(dialect)(Subscription).on_conflict_do_nothing()


_AGREE = insert(Consent)


def is_suppressed(session: Session, email: str) -> bool:
    session.flush()  # as the ORM would before a query: a suppression just added counts
    return session.connection().execute(_SUPPRESSED, {"address": email}).first() is not None


def _subscriber(
    connection: Connection, email: str, name: str | None, timezone: str | None, now: datetime
) -> tuple[Row[int, str, str | None, str | None], bool]:
    """(id, status, name, timezone) of the subscriber of ``email``, inserted if new, and
    whether it was."""
    # The insert first: most sign-ups are of new addresses, for which this is the one
    # statement. Two sign-ups of one new address at once both try it: the loser's does
    # nothing (on PostgreSQL, once the winner has committed) and it reads the winner's
    # row instead of failing the request.
    created = connection.execute(
        _add_reader(connection.dialect.name),
        {"address": email, "name": name, "timezone": timezone, "now": now},
    ).first()
    if created is not None:
        return created, True
    known = connection.execute(_KNOWN, {"address": email}).first()
    if known is None:  # the winner's row was deleted in between: nobody to sign up
        raise LookupError(f"the subscriber of {email} vanished during a sign-up")
    return known, False


def signup(
    session: Session,
    key: Keys,
    *,
    email: str,
    name: str | None,
    timezone: str | None,
    lists: Sequence[MailingList],
    source: str,
    wording: str,
    client: str,
    now: datetime,
) -> SignupOutcome:
    """Sign ``email`` (normalised, validated) up to ``lists``.

    Core statements on the session's connection: the public form is the busiest write
    readers make, and nothing here needs the ORM's objects.
    """
    if is_suppressed(session, email):
        return SignupOutcome(None, (), (), False)
    connection = session.connection()
    subscriber, new = _subscriber(connection, email, name, timezone, now)
    if subscriber.status in BLOCKED:
        return SignupOutcome(None, (), (), False)
    # A form does not overwrite what a confirmed reader set: name and zone are only
    # filled where they were empty.
    filled: dict[str, Any] = {}
    if name and not subscriber.name:
        filled["name"] = name
    if timezone and not subscriber.timezone:
        filled["timezone"] = timezone
    if filled:
        connection.execute(
            update(Subscriber)
            .where(Subscriber.id == subscriber.id)
            .values(**filled, updated_at=now)
        )
    current: dict[int, str] = (
        {}  # a new reader is in no list yet
        if new
        else {
            list_id: status
            for list_id, status in connection.execute(
                _CURRENT, {"reader": subscriber.id, "lists": [m.id for m in lists]}
            )
        }
    )
    activated: list[int] = []
    pending: list[int] = []
    joined: list[dict[str, Any]] = []
    restarted: list[dict[str, Any]] = []
    consents: list[dict[str, Any]] = []
    for mailing_list in lists:
        had = current.get(mailing_list.id)
        if had == SubscriptionStatus.ACTIVE and subscriber.status == SubscriberStatus.ACTIVE:
            continue  # already in: nothing to do, nothing to say
        # Someone who left everything comes back only through a confirmation, even to
        # a single opt-in list: the form cannot tell them from a stranger.
        single = mailing_list.opt_in == OptIn.SINGLE and subscriber.status != (
            SubscriberStatus.UNSUBSCRIBED
        )
        status = SubscriptionStatus.ACTIVE if single else SubscriptionStatus.PENDING
        if had is None:
            joined.append(
                {
                    "subscriber_id": subscriber.id,
                    "list_id": mailing_list.id,
                    "status": status,
                    "created_at": now,
                }
            )
        else:
            restarted.append(
                {"reader": subscriber.id, "list": mailing_list.id, "new_status": status}
            )
        (activated if single else pending).append(mailing_list.id)
        consents.append(
            {
                "subscriber_id": subscriber.id,
                "list_id": mailing_list.id,
                "kind": "subscribe",
                "source": source,
                "wording": wording,
                "client": client[:100],
                "at": now,
            }
        )
    if joined:
        # A sign-up of the same address at once may have just added one: theirs stands.
        connection.execute(_join(connection.dialect.name), joined)
    if restarted:
        connection.execute(_RESTART, restarted)
    if consents:
        connection.execute(_AGREE, consents)
    if activated:
        # Subscribing anew is what lets an erased address back in (single opt-in: the
        # sign-up is the consent).
        forget_erasure(session, key, email)
        session.flush()
    due = bool(pending) and claim_confirmation_slot(session, subscriber.id, now)
    return SignupOutcome(subscriber.id, tuple(activated), tuple(pending), due)


def claim_confirmation_slot(session: Session, subscriber_id: int, now: datetime) -> bool:
    """Whether a confirmation email may go to this subscriber now, taking the slot.

    One conditional UPDATE, so of many sign-ups of one address at once exactly one
    sends, on either database."""
    session.flush()
    taken = session.connection().execute(
        _CLAIM_SLOT,
        {"reader": subscriber_id, "paced_until": now - CONFIRMATION_INTERVAL, "now": now},
    )
    return taken.first() is not None


def release_confirmation_slot(session: Session, subscriber_id: int, at: datetime) -> None:
    """The email could not be sent: the next request may try again at once."""
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id, Subscriber.confirmation_sent_at == at)
        .values(confirmation_sent_at=None)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class Confirmed:
    subscriber_id: int
    email: str
    list_ids: tuple[int, ...]  # what this click confirmed (empty: nothing was pending)


def pending_list_names(session: Session, subscriber_id: int) -> list[str]:
    """The names of the lists waiting for this reader's confirming click, A to Z."""
    return list(session.connection().execute(_PENDING_NAMES, {"reader": subscriber_id}).scalars())


def pending_lists(session: Session, subscriber_id: int) -> list[MailingList]:
    return list(
        session.scalars(
            select(MailingList)
            .join(Subscription, Subscription.list_id == MailingList.id)
            .where(
                Subscription.subscriber_id == subscriber_id,
                Subscription.status == SubscriptionStatus.PENDING,
            )
            .order_by(MailingList.name)
        )
    )


def confirm(
    session: Session, key: Keys, subscriber: Subscriber, *, client: str, now: datetime
) -> Confirmed:
    """The confirming click: pending subscriptions become active, and it is recorded."""
    if subscriber.status in BLOCKED or is_suppressed(session, subscriber.email):
        return Confirmed(subscriber.id, subscriber.email, ())
    ended = session.scalars(
        update(Subscription)
        .where(
            Subscription.subscriber_id == subscriber.id,
            Subscription.status == SubscriptionStatus.PENDING,
        )
        .values(status=SubscriptionStatus.ACTIVE, unsubscribed_at=None, created_at=now)
        .returning(Subscription.list_id)
        .execution_options(synchronize_session="fetch")
    ).all()
    if not ended:
        return Confirmed(subscriber.id, subscriber.email, ())
    subscriber.status = SubscriberStatus.ACTIVE
    for list_id in sorted(ended):
        session.add(
            Consent(
                subscriber_id=subscriber.id,
                list_id=list_id,
                kind="confirm",
                source="confirmation link",
                wording="",
                client=client[:100],
                at=now,
            )
        )
    # They subscribed anew and confirmed: what was left of an erasure goes.
    if was_erased(session, key, subscriber.email):
        forget_erasure(session, key, subscriber.email)
    return Confirmed(subscriber.id, subscriber.email, tuple(sorted(ended)))
