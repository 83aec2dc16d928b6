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
    # When it is: every list of theirs waiting for the click, A to Z, for the email, and
    # the slot's time (``release_confirmation_slot`` if the email cannot be sent).
    pending_names: tuple[str, ...] = ()
    slot_taken_at: datetime | None = None


_RESTART = (
    update(Subscription)
    .where(
        Subscription.subscriber_id == bindparam("reader"),
        Subscription.list_id == bindparam("list"),
    )
    .values(status=bindparam("new_status"), unsubscribed_at=None)
)


_SUPPRESSED = select(Suppression.email).where(
    Suppression.email.in_(bindparam("addresses", expanding=True))
)
_KNOWN = select(
    Subscriber.id, Subscriber.email, Subscriber.status, Subscriber.name, Subscriber.timezone
).where(Subscriber.email.in_(bindparam("addresses", expanding=True)))
_CURRENT = select(Subscription.subscriber_id, Subscription.list_id, Subscription.status).where(
    Subscription.subscriber_id.in_(bindparam("readers", expanding=True)),
    Subscription.list_id.in_(bindparam("lists", expanding=True)),
)
_CLAIM_SLOTS = (
    update(Subscriber)
    .where(
        Subscriber.id.in_(bindparam("readers", expanding=True)),
        or_(
            Subscriber.confirmation_sent_at.is_(None),
            Subscriber.confirmation_sent_at <= bindparam("paced_until"),
        ),
    )
    .values(confirmation_sent_at=bindparam("now"))
    .returning(Subscriber.id)
)
_PENDING_NAMES = (
    select(Subscription.subscriber_id, MailingList.name)
    .join(MailingList, MailingList.id == Subscription.list_id)
    .where(
        Subscription.subscriber_id.in_(bindparam("readers", expanding=True)),
        Subscription.status == SubscriptionStatus.PENDING,
    )
    .order_by(Subscription.subscriber_id, MailingList.name)
)


@functools.cache
def _add_readers(dialect: str) -> Any:
    """The insert of new addresses (one row per parameter set), built once per database."""
    return (
        conflict_insert(dialect)(Subscriber)
        .on_conflict_do_nothing(index_elements=[Subscriber.email])
        .returning(
            Subscriber.id, Subscriber.email, Subscriber.status, Subscriber.name, Subscriber.timezone
        )
    )


@functools.cache
def _join(dialect: str) -> Any:
    return conflict_insert(dialect)(Subscription).on_conflict_do_nothing()


_AGREE = insert(Consent)


def is_suppressed(session: Session, email: str) -> bool:
    session.flush()  # as the ORM would before a query: a suppression just added counts
    found = session.connection().execute(_SUPPRESSED, {"addresses": [email]})
    return found.first() is not None


@dataclass(frozen=True)
class Signup:
    """One sign-up to make: a normalised, validated address and the lists it asked for."""

    email: str
    name: str | None
    timezone: str | None
    lists: Sequence[MailingList]
    source: str
    wording: str
    client: str
    now: datetime


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
    """Sign ``email`` (normalised, validated) up to ``lists``."""
    one = Signup(email, name, timezone, lists, source, wording, client, now)
    return sign_up_all(session, key, [one])[0]


def sign_up_all(session: Session, key: Keys, signups: Sequence[Signup]) -> list[SignupOutcome]:
    """Make ``signups`` in the caller's transaction, in order; an outcome each.

    A group of sign-ups (the web's, written together) costs a few statements whatever
    its size: Core statements on the session's connection, each over the whole group,
    since the public form is the busiest write readers make. An address twice in the
    group is signed up twice, the second time seeing what the first did: the group is
    made in rounds with each address at most once.
    """
    outcomes: list[SignupOutcome | None] = [None] * len(signups)
    rounds: list[list[int]] = []
    times: dict[str, int] = {}
    for index, wanted in enumerate(signups):
        earlier = times.get(wanted.email, 0)
        times[wanted.email] = earlier + 1
        if earlier == len(rounds):
            rounds.append([])
        rounds[earlier].append(index)
    for indexes in rounds:
        made = _round(session, key, [signups[i] for i in indexes])
        for index, outcome in zip(indexes, made, strict=True):
            outcomes[index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


_NOBODY = SignupOutcome(None, (), (), False)


def _round(session: Session, key: Keys, signups: Sequence[Signup]) -> list[SignupOutcome]:
    """``sign_up_all`` for sign-ups of distinct addresses."""
    session.flush()  # as the ORM would before these statements
    connection = session.connection()
    suppressed = set(
        connection.execute(_SUPPRESSED, {"addresses": [s.email for s in signups]}).scalars()
    )
    # By address: the rows this locks (new and known readers) in one order in every
    # transaction, so that two web processes' groups never wait for each other in a ring.
    live = sorted((s for s in signups if s.email not in suppressed), key=lambda s: s.email)
    readers: dict[str, Row[int, str, str, str | None, str | None]] = {}
    if live:
        # New addresses first, in one INSERT: most sign-ups are of new addresses. Two
        # sign-ups of one new address at once (two web processes) both try it: the
        # loser's does nothing (on PostgreSQL, once the winner has committed) and it
        # reads the winner's row instead of failing.
        for row in connection.execute(
            _add_readers(connection.dialect.name),
            [
                {
                    "email": s.email,
                    "name": s.name,
                    "timezone": s.timezone,
                    "attributes": {},
                    "status": SubscriberStatus.ACTIVE,
                    "created_at": s.now,
                    "updated_at": s.now,
                }
                for s in live
            ],
        ):
            readers[row.email] = row
    new = set(readers)
    known = [s.email for s in live if s.email not in new]
    if known:
        for row in connection.execute(_KNOWN, {"addresses": known}):
            readers[row.email] = row
    current: dict[tuple[int, int], str] = {}
    ids_known = [readers[e].id for e in known if e in readers]
    if ids_known:
        asked = sorted({m.id for s in live for m in s.lists})
        for reader_id, list_id, status in connection.execute(
            _CURRENT, {"readers": ids_known, "lists": asked}
        ):
            current[(reader_id, list_id)] = status
    outcomes: dict[str, SignupOutcome] = {}
    joined: list[dict[str, Any]] = []
    restarted: list[dict[str, Any]] = []
    consents: list[dict[str, Any]] = []
    for wanted in live:
        reader = readers.get(wanted.email)
        if reader is None:  # the winner's row was deleted in between: nobody to sign up
            raise LookupError(f"the subscriber of {wanted.email} vanished during a sign-up")
        if reader.status in BLOCKED:
            continue
        if wanted.email not in new:
            _fill(connection, reader, wanted)
        activated: list[int] = []
        pending: list[int] = []
        for mailing_list in wanted.lists:
            had = current.get((reader.id, mailing_list.id))
            if had == SubscriptionStatus.ACTIVE and reader.status == SubscriberStatus.ACTIVE:
                continue  # already in: nothing to do, nothing to say
            # Someone who left everything comes back only through a confirmation, even
            # to a single opt-in list: the form cannot tell them from a stranger.
            single = mailing_list.opt_in == OptIn.SINGLE and reader.status != (
                SubscriberStatus.UNSUBSCRIBED
            )
            status = SubscriptionStatus.ACTIVE if single else SubscriptionStatus.PENDING
            if had is None:
                joined.append(
                    {
                        "subscriber_id": reader.id,
                        "list_id": mailing_list.id,
                        "status": status,
                        "created_at": wanted.now,
                    }
                )
            else:
                restarted.append(
                    {"reader": reader.id, "list": mailing_list.id, "new_status": status}
                )
            (activated if single else pending).append(mailing_list.id)
            consents.append(
                {
                    "subscriber_id": reader.id,
                    "list_id": mailing_list.id,
                    "kind": "subscribe",
                    "source": wanted.source,
                    "wording": wanted.wording,
                    "client": wanted.client[:100],
                    "at": wanted.now,
                }
            )
        outcomes[wanted.email] = SignupOutcome(reader.id, tuple(activated), tuple(pending), False)
    if joined:
        # A sign-up of the same address at once may have just added one: theirs stands.
        joined.sort(key=lambda row: (row["subscriber_id"], row["list_id"]))
        connection.execute(_join(connection.dialect.name), joined)
    if restarted:
        restarted.sort(key=lambda row: (row["reader"], row["list"]))
        connection.execute(_RESTART, restarted)
    if consents:
        connection.execute(_AGREE, consents)
    if any(o.activated for o in outcomes.values()):
        for wanted in live:
            outcome = outcomes.get(wanted.email)
            if outcome is not None and outcome.activated:
                # Subscribing anew is what lets an erased address back in (single
                # opt-in: the sign-up is the consent).
                forget_erasure(session, key, wanted.email)
        session.flush()
    _claim_slots(connection, live, outcomes, new)
    return [outcomes.get(s.email, _NOBODY) for s in signups]


def _fill(
    connection: Connection, reader: Row[int, str, str, str | None, str | None], wanted: Signup
) -> None:
    """A form does not overwrite what a confirmed reader set: name and zone are only
    filled where they were empty."""
    filled: dict[str, Any] = {}
    if wanted.name and not reader.name:
        filled["name"] = wanted.name
    if wanted.timezone and not reader.timezone:
        filled["timezone"] = wanted.timezone
    if filled:
        connection.execute(
            update(Subscriber)
            .where(Subscriber.id == reader.id)
            .values(**filled, updated_at=wanted.now)
        )


def _claim_slots(
    connection: Connection,
    live: Sequence[Signup],
    outcomes: dict[str, SignupOutcome],
    new: set[str],
) -> None:
    """Take the confirmation slot (``claim_confirmation_slot``) of every reader left
    pending, in one UPDATE, and name their pending lists for the email."""
    waiting = {e: o for e, o in outcomes.items() if o.pending and o.subscriber_id is not None}
    if not waiting:
        return
    now = max(s.now for s in live if s.email in waiting)
    taken = set(
        connection.execute(
            _CLAIM_SLOTS,
            {
                "readers": sorted(o.subscriber_id for o in waiting.values() if o.subscriber_id),
                "paced_until": now - CONFIRMATION_INTERVAL,
                "now": now,
            },
        ).scalars()
    )
    names: dict[int, list[str]] = {}
    known = sorted(o.subscriber_id for e, o in waiting.items() if e not in new and o.subscriber_id)
    if known and taken:
        for reader_id, name in connection.execute(_PENDING_NAMES, {"readers": known}):
            names.setdefault(reader_id, []).append(name)
    by_id = {m.id: m.name for s in live for m in s.lists}
    for email, outcome in waiting.items():
        if outcome.subscriber_id not in taken:
            continue
        # A new reader's pending lists are the ones just asked for.
        pending_names = (
            sorted(by_id[i] for i in outcome.pending)
            if email in new
            else names.get(outcome.subscriber_id, [])
        )
        outcomes[email] = SignupOutcome(
            outcome.subscriber_id,
            outcome.activated,
            outcome.pending,
            True,
            tuple(pending_names),
            now,
        )


def claim_confirmation_slot(session: Session, subscriber_id: int, now: datetime) -> bool:
    """Whether a confirmation email may go to this subscriber now, taking the slot.

    One conditional UPDATE, so of many sign-ups of one address at once exactly one
    sends, on either database."""
    session.flush()
    taken = session.connection().execute(
        _CLAIM_SLOTS,
        {"readers": [subscriber_id], "paced_until": now - CONFIRMATION_INTERVAL, "now": now},
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
    rows = session.connection().execute(_PENDING_NAMES, {"readers": [subscriber_id]})
    return [name for _, name in rows]


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
