"""Tables for the publishing side: newsletters, briefings, editions, the ledger, events.

Importing this module also registers the audience tables (subscribers.models),
so ``Base.metadata`` is complete wherever this is imported.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailer.db.base import Base, JSONType, UTCDateTime, utcnow
from subscribers.models import (
    MailingList,
    Segment,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
)

__all__ = [
    "Base",
    "Batch",
    "Briefing",
    "BriefingStatus",
    "Delivery",
    "DeliveryStatus",
    "Edition",
    "EditionBriefing",
    "EditionStatus",
    "Event",
    "MailingList",
    "Newsletter",
    "Segment",
    "Subscriber",
    "SubscriberStatus",
    "Subscription",
    "SubscriptionStatus",
    "Suppression",
]

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a bigint for
# the tables that grow by a row per recipient.
BigId = BigInteger().with_variant(Integer(), "sqlite")

newsletter_lists = Table(
    "newsletter_lists",
    Base.metadata,
    Column("newsletter_id", ForeignKey("newsletters.id", ondelete="CASCADE"), primary_key=True),
    Column("list_id", ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
)


class Newsletter(Base):
    __tablename__ = "newsletters"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    from_name: Mapped[str] = mapped_column(String(200))
    from_email: Mapped[str] = mapped_column(String(320))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    postal_address: Mapped[str] = mapped_column(Text)
    # Why the reader gets this; shown in the footer (CAN-SPAM, reader trust).
    audience_note: Mapped[str] = mapped_column(Text, default="")
    template: Mapped[str] = mapped_column(String(100), default="stuff-you-should-know")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    send_time: Mapped[str] = mapped_column(String(5), default="07:00")
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    lists: Mapped[list[MailingList]] = relationship(secondary=newsletter_lists)
    segment: Mapped[Segment | None] = relationship()


class BriefingStatus(StrEnum):
    DRAFT = "draft"
    READY = "ready"
    SENT = "sent"
    ARCHIVED = "archived"


class Briefing(Base):
    __tablename__ = "briefings"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stable identity of the item at its source ("folder:/abs/path", a feed guid…),
    # so that pulling again updates rather than duplicates.
    source_key: Mapped[str] = mapped_column(String(1000), unique=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    lead: Mapped[str] = mapped_column(Text)
    sections: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    url: Mapped[str | None] = mapped_column(String(2000))
    dropped: Mapped[list[str]] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(String(20), default=BriefingStatus.READY, index=True)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class EditionStatus(StrEnum):
    DRAFT = "draft"  # composed, not rendered
    READY = "ready"  # rendered, ledger not yet filled
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"


class Edition(Base):
    __tablename__ = "editions"
    # One edition per newsletter and local date: composing twice finds the first.
    __table_args__ = (UniqueConstraint("newsletter_id", "edition_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    edition_date: Mapped[date] = mapped_column(Date)
    subject: Mapped[str] = mapped_column(String(300))
    preheader: Mapped[str] = mapped_column(String(300), default="")
    status: Mapped[str] = mapped_column(String(20), default=EditionStatus.DRAFT, index=True)
    # Rendered once (Invariant 3); personalized per recipient by token substitution.
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    token_nonce: Mapped[str | None] = mapped_column(String(32))
    rendered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    send_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    newsletter: Mapped[Newsletter] = relationship()
    items: Mapped[list[EditionBriefing]] = relationship(
        order_by="EditionBriefing.position", cascade="all, delete-orphan"
    )


class EditionBriefing(Base):
    __tablename__ = "edition_briefings"

    edition_id: Mapped[int] = mapped_column(
        ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True
    )
    briefing_id: Mapped[int] = mapped_column(
        ForeignKey("briefings.id", ondelete="RESTRICT"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer)

    briefing: Mapped[Briefing] = relationship()


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # committed before the transport call (Invariant 2)
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # suppressed or unsubscribed by the time its batch was claimed
    UNKNOWN = "unknown"  # outcome ambiguous: never resent blindly


class Batch(Base):
    """One claim of up to 1000 deliveries by one worker, and how its send ended."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    worker: Mapped[str] = mapped_column(String(200))
    transport: Mapped[str] = mapped_column(String(20))
    size: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(200))
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Delivery(Base):
    """The ledger: one row per (edition, subscriber), the truth of who was sent what."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id"),
        Index("ix_deliveries_edition_status", "edition_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.QUEUED)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    message_id: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Event(Base):
    """Something that happened to an address: provider feedback, a reader's click."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_email", "email"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(30))  # sendgrid, link, one-click, dsn…
    # The provider's own id (SendGrid's sg_event_id) makes a retried webhook harmless.
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(30))
    email: Mapped[str] = mapped_column(String(320))
    edition_id: Mapped[int | None] = mapped_column(ForeignKey("editions.id", ondelete="SET NULL"))
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL")
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
