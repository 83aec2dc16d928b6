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
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailer.db.base import Base, JSONType, UTCDateTime, utcnow
from subscribers.models import (
    Consent,
    MailingList,
    Segment,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
)

__all__ = [
    "ApiToken",
    "Base",
    "Batch",
    "Briefing",
    "BriefingStatus",
    "Consent",
    "Correction",
    "Delivery",
    "DeliveryStatus",
    "Edition",
    "EditionBriefing",
    "EditionStatus",
    "Event",
    "MailingList",
    "Newsletter",
    "ProviderSync",
    "PullError",
    "Segment",
    "Source",
    "SourceKind",
    "Subscriber",
    "SubscriberStatus",
    "Subscription",
    "SubscriptionStatus",
    "Suppression",
]

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a bigint for
# the tables that grow by a row per recipient.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# The batches whose id ranges no claim may enter: open ones, and those sent whole (their
# rows still read ``queued``). Spelled once, as SQL text, so that both databases see the
# claims' condition is the partial index's own and use it.
HOLDING_BATCH = "finished_at IS NULL OR sent_whole"

DEFAULT_SUBJECT_TEMPLATE = "{{ top.title | truncate_words(78) }}"
DEFAULT_PREHEADER_TEMPLATE = (
    "{% if count > 1 %}Plus {{ count - 1 }} more: {{ others | map(attribute='title') "
    "| join('; ') | truncate_words(140) }}{% else %}{{ top.lead | truncate_words(140) }}{% endif %}"
)

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
    # Composition rules: which briefings an edition takes, and how it is titled.
    tag_filter: Mapped[list[str]] = mapped_column(JSONType, default=list)  # empty: every tag
    max_briefings: Mapped[int] = mapped_column(Integer, default=10)
    max_age_hours: Mapped[int] = mapped_column(Integer, default=48)
    subject_template: Mapped[str] = mapped_column(Text, default=DEFAULT_SUBJECT_TEMPLATE)
    preheader_template: Mapped[str] = mapped_column(Text, default=DEFAULT_PREHEADER_TEMPLATE)
    send_when_empty: Mapped[bool] = mapped_column(Boolean, default=False)
    # Past editions readable by anyone at /archive/<slug> (each email's web view is always on).
    public_archive: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # What the newsletter is written in (a BCP 47 tag): the HTML's lang and the
    # messages' Content-Language.
    language: Mapped[str] = mapped_column(String(35), default="en", server_default="en")
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
    source_id: Mapped[int | None] = mapped_column(
        ForeignKey("sources.id", ondelete="SET NULL"), index=True
    )
    content_hash: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    lead: Mapped[str] = mapped_column(Text)
    lead_html: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str | None] = mapped_column(String(200))
    sections: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    url: Mapped[str | None] = mapped_column(String(2000))
    dropped: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # An editor's correction of the headline or lead: it wins over what the source says,
    # and a re-pull of the source never overwrites it.
    edited_title: Mapped[str | None] = mapped_column(Text)
    edited_lead: Mapped[str | None] = mapped_column(Text)
    edited_by: Mapped[str | None] = mapped_column(String(400))
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(20), default=BriefingStatus.READY, index=True)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Correction(Base):
    """A source changed after its briefing was sent: the sent copy stays, the change is kept."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(primary_key=True)
    briefing_id: Mapped[int] = mapped_column(ForeignKey("briefings.id", ondelete="CASCADE"))
    content_hash: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    lead: Mapped[str] = mapped_column(Text)
    sections: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    __table_args__ = (UniqueConstraint("briefing_id", "content_hash"),)


class SourceKind(StrEnum):
    FOLDER = "folder"
    FEED = "feed"
    API = "api"


class Source(Base):
    """Where briefings come from: a folder, an RSS/Atom feed, or the push API."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    location: Mapped[str] = mapped_column(String(2000))
    # A source for one newsletter, or for all of them when empty.
    newsletter_id: Mapped[int | None] = mapped_column(
        ForeignKey("newsletters.id", ondelete="CASCADE")
    )
    mark_ready: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    last_pulled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_outcome: Mapped[str | None] = mapped_column(String(200))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PullError(Base):
    """One source item that could not be ingested, and why (shown by `mailer pull`)."""

    __tablename__ = "pull_errors"
    __table_args__ = (Index("ix_pull_errors_source_created", "source_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    item: Mapped[str] = mapped_column(String(2000))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(Base):
    """A CMS's key to the push API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class EditionStatus(StrEnum):
    DRAFT = "draft"  # composed, not rendered
    READY = "ready"  # rendered, ledger not yet filled
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # nothing new to send: recorded, never sent


class Edition(Base):
    __tablename__ = "editions"
    # One edition per newsletter and local date: composing twice finds the first.
    __table_args__ = (UniqueConstraint("newsletter_id", "edition_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    edition_date: Mapped[date] = mapped_column(Date)
    subject: Mapped[str] = mapped_column(String(300))
    preheader: Mapped[str] = mapped_column(String(300), default="")
    # Set by an editor; composing and re-rendering keep them.
    subject_override: Mapped[str | None] = mapped_column(String(300))
    preheader_override: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default=EditionStatus.DRAFT, index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    # Rendered once (Invariant 3); personalized per recipient by token substitution.
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    token_nonce: Mapped[str | None] = mapped_column(String(32))
    rendered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    send_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Briefings an editor took out: recomposing leaves them out until added back.
    excluded_briefing_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    # Who approved it and when; a one-off send at a set time, started once by the scheduler.
    approved_by: Mapped[str | None] = mapped_column(String(400))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)

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
    # A short headline for this edition only (plain-text briefings have no title).
    headline: Mapped[str | None] = mapped_column(String(300))

    briefing: Mapped[Briefing] = relationship()


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    # In flight: a queued row held by an open batch. Counted, never stored: the batch
    # row, committed before the transport call, is what holds it (Invariant 2).
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # suppressed or unsubscribed by the time its batch was claimed
    UNKNOWN = "unknown"  # outcome ambiguous: never resent blindly


class Batch(Base):
    """One claim of up to 1000 deliveries by one worker, and how its send ended.

    Claiming writes this one row, not a thousand: while the batch is open (no
    ``finished_at``) its deliveries stay ``queued`` and nobody else may take a row
    between ``first_id`` and ``last_id``. Recording the outcome writes the rows,
    except when the batch is ``sent_whole`` (see ``mailer.dispatch.ledger``): then its
    rows stay as claimed and this row says they were sent, so its range stays held.
    """

    __tablename__ = "batches"
    __table_args__ = (
        # Claims look only between the ranges of the batches that hold their rows.
        Index(
            "ix_batches_holding",
            "edition_id",
            "last_id",
            postgresql_where=sql_text(HOLDING_BATCH),
            sqlite_where=sql_text(HOLDING_BATCH),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    worker: Mapped[str] = mapped_column(String(200))
    transport: Mapped[str] = mapped_column(String(20))
    size: Mapped[int] = mapped_column(Integer)
    first_id: Mapped[int | None] = mapped_column(BigInteger)
    last_id: Mapped[int | None] = mapped_column(BigInteger)
    # The ids it holds (a JSON array) while open; cleared when it is recorded.
    delivery_ids: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(200))
    # SendGrid's X-Message-Id for the batch: events carry it as the prefix of
    # sg_message_id, the fallback when their custom args are missing.
    provider_message_id: Mapped[str | None] = mapped_column(String(200), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Written, and committed, just before the batch is handed to the transport: a
    # batch whose worker died without it never reached the wire, and its rows go back
    # to the queue instead of becoming unknown.
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Every row it held went out under provider_message_id, and that is written here
    # alone: its rows (the queued, never-before-claimed rows of its range) are sent.
    sent_whole: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class LedgerTally(Base):
    """A change in the ledger's counts by status: the sums of an edition's rows are
    what ``GROUP BY status`` over its deliveries would say (``mailer.dispatch.ledger``).

    Every statement that fills the ledger or moves rows between states adds one row of
    differences in its own transaction; rows are only ever inserted, so writers never
    wait for each other here. An edition has about one per batch.
    """

    __tablename__ = "ledger_tallies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    edition_id: Mapped[int] = mapped_column(
        ForeignKey("editions.id", ondelete="CASCADE"), index=True
    )
    queued: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unknown: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What the policy stamps on a row once (the first delivered, open and click; the
    # bounce class, where hard overrides soft): the per-recipient figures of the stats.
    delivered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    opened: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    clicked: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    bounced_hard: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    bounced_soft: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class EventTally(Base):
    """How many events of a kind an edition received in an hour, added as they are
    stored (``mailer.events.tallies``): the stats' totals and timeline read these few
    rows, not every event, and they outlive the events' pruning."""

    __tablename__ = "event_tallies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    edition_id: Mapped[int] = mapped_column(
        ForeignKey("editions.id", ondelete="CASCADE"), index=True
    )
    hour: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(30))
    events: Mapped[int] = mapped_column(Integer)


class Delivery(Base):
    """The ledger: one row per (edition, subscriber), the truth of who was sent what."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id"),
        # Only queued rows are indexed for claiming: a row leaves this index once, when
        # it is claimed, instead of being moved within it at every change of state.
        Index(
            "ix_deliveries_queued",
            "edition_id",
            "id",
            postgresql_where=sql_text("status = 'queued'"),
            sqlite_where=sql_text("status = 'queued'"),
        ),
        # The few unknown rows: an operator reconciles them, and a claim that spans one
        # cannot close its range for good (see mailer.dispatch.ledger).
        Index(
            "ix_deliveries_unknown",
            "edition_id",
            "id",
            postgresql_where=sql_text("status = 'unknown'"),
            sqlite_where=sql_text("status = 'unknown'"),
        ),
        # Rows waiting for a retry or their wave: the next one is an index probe.
        Index(
            "ix_deliveries_retry_after",
            "edition_id",
            "retry_after",
            postgresql_where=sql_text("retry_after IS NOT NULL"),
            sqlite_where=sql_text("retry_after IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No foreign keys on the ledger: every row is written by one INSERT … SELECT over
    # subscribers and editions (valid by construction), and PostgreSQL's per-row
    # referential checks (a KEY SHARE lock on each subscriber row) made filling a
    # million-row ledger about four times slower. Nothing deletes subscribers, editions
    # or ledger rows today; whatever comes to erase them must delete the ledger rows
    # itself, and shrink the size of a batch sent whole that held one (the batch row is
    # what counts its rows as sent).
    edition_id: Mapped[int] = mapped_column(Integer)
    subscriber_id: Mapped[int] = mapped_column(Integer)
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.QUEUED)
    batch_id: Mapped[int | None] = mapped_column(BigId)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    message_id: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A temporary refusal is tried again after this, with backoff, not in a tight loop.
    retry_after: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What the provider reported afterwards (the first time each happened).
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    bounce_class: Mapped[str | None] = mapped_column(String(10))  # hard, soft


class Event(Base):
    """Something that happened to an address: provider feedback, a reader's click."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_email", "email"),
        Index("ix_events_edition_kind", "edition_id", "kind"),
        # Events whose policy has not been applied yet: the queue of the policy step.
        Index(
            "ix_events_pending",
            "id",
            postgresql_where=sql_text("processed_at IS NULL"),
            sqlite_where=sql_text("processed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(30))  # sendgrid, sendgrid-sync, dsn, one-click…
    # The provider's own id (SendGrid's sg_event_id) makes a retried webhook harmless.
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(30))
    email: Mapped[str] = mapped_column(String(320))
    edition_id: Mapped[int | None] = mapped_column(ForeignKey("editions.id", ondelete="SET NULL"))
    delivery_id: Mapped[int | None] = mapped_column(BigId)
    bounce_class: Mapped[str | None] = mapped_column(String(10))  # hard, soft
    # Why it failed (mailer.bounces.reasons.BounceReason), for bounces read since 0011.
    bounce_reason: Mapped[str | None] = mapped_column(String(30))
    detail: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Set once the bounce policy has looked at the event; events recorded by the
    # policy itself (an unsubscribe it made, a lifted suppression) are born processed.
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow)


class ProviderSync(Base):
    """Where the last pull of a provider's suppression lists ended."""

    __tablename__ = "provider_syncs"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    # Unix seconds: the next sync asks for what the provider recorded since then.
    synced_until: Mapped[int | None] = mapped_column(BigInteger)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    last_count: Mapped[int] = mapped_column(Integer, default=0)


# The workspace's tables (accounts, sessions, throttles, audit log), the scheduler's
# (mailer/schedule/models.py) and the webhook intake's, so that Base.metadata and
# Alembic see them.
from mailer.accounts import models as account_models  # noqa: E402,F401
from mailer.events import models as event_models  # noqa: E402,F401
from mailer.schedule import models as schedule_models  # noqa: E402,F401
