"""Webhook batches as they arrived: what the intake (``mailer.events.intake``) applies."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from mailer.db.base import Base, UTCDateTime, utcnow

__all__ = ["WebhookBatch"]


class WebhookBatch(Base):
    """One signed, parsed SendGrid POST, kept whole until its events are stored.

    The answer to SendGrid waits for this row only; matching the events to the ledger,
    storing them and the bounce policy come after, and the row goes in the transaction
    that stores its events, so each batch is applied exactly once.
    """

    __tablename__ = "webhook_batches"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    source: Mapped[str] = mapped_column(String(40))
    # The body exactly as signed (bytes: whatever it holds, it is stored as it came).
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Failed applications (a database error, say): retried, and left for an operator
    # after ``intake.MAX_ATTEMPTS``, with the last error.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(1000))
