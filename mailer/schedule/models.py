"""Tables of the scheduler: each newsletter's schedule, each slot's run, the leader lease.

``schedule_runs`` is the exactly-once key: one row per (newsletter, slot date),
inserted before anything is composed or sent, so a repeated trigger, a restart
or a second scheduler finds the row and does nothing more.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailer.db.base import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    from mailer.db.models import Edition, Newsletter

__all__ = ["RunState", "Schedule", "ScheduleRun", "SchedulerLease"]

ALL_WEEKDAYS = "mon,tue,wed,thu,fri,sat,sun"
DEFAULT_STEPS = "pull,compose,send"


class Schedule(Base):
    """When and how a newsletter goes out by itself: one row per newsletter."""

    __tablename__ = "schedules"

    newsletter_id: Mapped[int] = mapped_column(
        ForeignKey("newsletters.id", ondelete="CASCADE"), primary_key=True
    )
    # Wall-clock time of the daily slot in ``timezone``: "HH:MM" (or "HH:MM:SS").
    slot: Mapped[str] = mapped_column(String(8), default="07:00")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")  # IANA name
    weekdays: Mapped[str] = mapped_column(String(27), default=ALL_WEEKDAYS)
    pull_interval_minutes: Mapped[int] = mapped_column(Integer, default=15)
    # What happens at the slot, in this order: "pull,compose,send" or a subset with compose.
    steps: Mapped[str] = mapped_column(String(40), default=DEFAULT_STEPS)
    requires_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    # A held edition not approved this long after its slot is skipped.
    approval_deadline_minutes: Mapped[int] = mapped_column(Integer, default=120)
    # Each subscriber gets the edition at the slot in their own timezone.
    local_time_delivery: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Slots before this instant are neither run nor recorded as missed: set when the
    # schedule is created and when its slot, timezone or weekdays change, so that an
    # edit never fires a slot that already passed.
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    newsletter: Mapped[Newsletter] = relationship("Newsletter")

    @property
    def step_list(self) -> tuple[str, ...]:
        return tuple(s for s in self.steps.split(",") if s)


class RunState(StrEnum):
    DUE = "due"  # claimed; pulling, composing or starting (resumed if interrupted)
    HELD = "held"  # composed, waiting for an editor's approval until its deadline
    COMPOSED = "composed"  # composed; the schedule's steps do not include sending
    SENT = "sent"  # handed to the workers: the edition is sending (or sent)
    MISSED = "missed"  # the slot passed longer ago than the grace: not sent (stale news)
    SKIPPED = "skipped"  # nothing new to send, not approved in time, or cancelled
    FAILED = "failed"  # could not compose or start (a template or segment error)


FINAL_STATES = (
    RunState.SENT,
    RunState.MISSED,
    RunState.SKIPPED,
    RunState.FAILED,
    RunState.COMPOSED,
)


class ScheduleRun(Base):
    """One slot of one newsletter, and what became of it."""

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("newsletter_id", "slot_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    # The slot's date in the newsletter's timezone; also the edition's date.
    slot_date: Mapped[date] = mapped_column(Date)
    slot_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(20), default=RunState.DUE)
    edition_id: Mapped[int | None] = mapped_column(ForeignKey("editions.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str] = mapped_column(String(200))
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    newsletter: Mapped[Newsletter] = relationship("Newsletter")
    edition: Mapped[Edition | None] = relationship("Edition")


class SchedulerLease(Base):
    """Who leads: one row per lease name, held until ``expires_at`` unless renewed."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
