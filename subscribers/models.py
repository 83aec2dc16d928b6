"""Tables for the audience: subscribers, lists, subscriptions and their kept counts,
segments, suppressions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailer.db.base import Base, JSONType, UTCDateTime, utcnow


class SubscriberStatus(StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"  # left everything
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    PENDING = "pending"  # signed up to a double opt-in list, not confirmed yet


class OptIn(StrEnum):
    DOUBLE = "double"  # a confirmation email first (the default)
    SINGLE = "single"  # subscribed at once


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored normalised (see subscribers.addresses.normalize_email) so that the
    # unique index and suppression lookups compare like with like.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=SubscriberStatus.ACTIVE)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    timezone: Mapped[str | None] = mapped_column(String(64))
    # A reader's pause (a week, a month): not mailed before this.
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last confirmation email sent to this address (one per address per 10 minutes).
    confirmation_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    # The database cascades deletes; the ORM must not try to null the key first.
    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", passive_deletes=True
    )

    # A name substring search (``ILIKE '%…%'``) reads this index on PostgreSQL (pg_trgm's
    # trigrams); SQLite has none and scans the names.
    __table_args__ = (
        Index(
            "ix_subscribers_name_trgm",
            "name",
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
    )


class MailingList(Base):
    __tablename__ = "lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    opt_in: Mapped[str] = mapped_column(String(10), default=OptIn.DOUBLE, server_default="double")
    # Offered on the public subscribe form and the preference page.
    public: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_list_status", "list_id", "status"),)

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    list_id: Mapped[int] = mapped_column(
        ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(20), default=SubscriptionStatus.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    mailing_list: Mapped[MailingList] = relationship()


class ListTally(Base):
    """A change in a list's memberships by status: a list's sums are what ``GROUP BY
    status`` over its subscriptions would say (``subscribers.tallies``).

    Written by the database's triggers on ``subscriptions`` (migration 0015), so that
    every way a membership changes (a form, an import, a cascade) is counted; rows are
    only ever inserted, so writers never wait for each other here, and folded into one
    row per list from time to time. No foreign key: a list's cascade would otherwise
    write differences for a list that is going; ``delete_list`` removes them.
    """

    __tablename__ = "list_tallies"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    # No index: folded, the table holds about a row per list, and on SQLite every
    # membership written pays for each index here.
    list_id: Mapped[int] = mapped_column(Integer)
    active: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pending: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unsubscribed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Consent(Base):
    """Proof of consent: who agreed to what, when, through which form and wording, and the
    confirming click. Kept for as long as the subscriber exists (erasure removes it)."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    list_id: Mapped[int | None] = mapped_column(ForeignKey("lists.id", ondelete="SET NULL"))
    # subscribe, confirm, resubscribe, unsubscribe, import, api, operator
    kind: Mapped[str] = mapped_column(String(30))
    # Where: "form:<newsletter>", "api:<token name>", "import:<file>", "preferences", "cli:<user>"
    source: Mapped[str] = mapped_column(String(200))
    wording: Mapped[str] = mapped_column(Text, default="")
    client: Mapped[str] = mapped_column(String(100), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Segment(Base):
    """A saved rule over subscribers; see subscribers.segments for the rule language."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    rule: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Suppression(Base):
    """An address that must not be mailed, whatever list or newsletter asks."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(50))
    source: Mapped[str] = mapped_column(String(50))
    detail: Mapped[str] = mapped_column(Text, default="")
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    # The failure behind a bounce suppression (mailer.bounces.reasons.BounceReason).
    bounce_reason: Mapped[str | None] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
