"""Storing parsed briefings: insert new ones, update unsent ones, never touch sent ones."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.briefings.parser import ParsedBriefing
from mailer.db.base import utcnow
from mailer.db.models import Briefing, BriefingStatus


class StoreOutcome(StrEnum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    LOCKED = "locked"  # changed at the source after it was sent: the sent copy stays


def store_briefing(
    session: Session,
    source_key: str,
    parsed: ParsedBriefing,
    *,
    initial_status: BriefingStatus = BriefingStatus.READY,
) -> tuple[Briefing, StoreOutcome]:
    existing = session.scalar(select(Briefing).where(Briefing.source_key == source_key))
    fields = {
        "content_hash": parsed.content_hash,
        "title": parsed.title,
        "lead": parsed.lead,
        "sections": [{"label": s.label, "paragraphs": list(s.paragraphs)} for s in parsed.sections],
        "tags": list(parsed.tags),
        "url": parsed.url,
        "dropped": list(parsed.dropped),
    }
    if existing is None:
        briefing = Briefing(
            source_key=source_key,
            status=initial_status,
            published_at=parsed.published_at or utcnow(),
            **fields,
        )
        session.add(briefing)
        session.flush()
        return briefing, StoreOutcome.NEW
    if existing.content_hash == parsed.content_hash:
        return existing, StoreOutcome.UNCHANGED
    if existing.status == BriefingStatus.SENT:
        return existing, StoreOutcome.LOCKED
    for name, value in fields.items():
        setattr(existing, name, value)
    if parsed.published_at is not None:
        existing.published_at = parsed.published_at
    return existing, StoreOutcome.UPDATED
