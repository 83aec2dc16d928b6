"""Storing parsed briefings: insert new ones, update unsent ones, never touch sent ones.

A briefing's identity is its ``source_key`` (a file path, a feed guid, an API
external id), so pulling again is idempotent. Once a briefing has gone out in
an edition the sent copy is immutable: a changed source is kept as a
correction instead.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.briefings.parser import ParsedBriefing
from mailer.briefings.sanitize import clean_data, clean_text
from mailer.db.base import utcnow
from mailer.db.models import Briefing, BriefingStatus, Correction


class StoreOutcome(StrEnum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    CORRECTED = "corrected"  # changed at the source after it was sent: recorded, not applied


def as_dict(briefing: Briefing) -> dict[str, Any]:
    """A stored briefing as JSON-ready data: the one shape the CLI and the API show."""
    return {
        "id": briefing.id,
        "status": briefing.status,
        "source_key": briefing.source_key,
        "title": briefing.title,
        "lead": briefing.lead,
        "sections": [
            {"label": s.get("label"), "paragraphs": s.get("paragraphs", [])}
            for s in briefing.sections
        ],
        "tags": briefing.tags,
        "url": briefing.url,
        "author": briefing.author,
        "published": briefing.published_at.isoformat(),
        "dropped": briefing.dropped,
    }


def stored_sections(parsed: ParsedBriefing) -> list[dict[str, Any]]:
    return [
        {"label": s.label, "paragraphs": list(s.paragraphs), "html": list(s.html)}
        for s in parsed.sections
    ]


def store_briefing(
    session: Session,
    source_key: str,
    parsed: ParsedBriefing,
    *,
    source_id: int | None = None,
    author: str | None = None,
    initial_status: BriefingStatus = BriefingStatus.READY,
) -> tuple[Briefing, StoreOutcome]:
    # The parsers clean what they read; this holds for whatever else builds a briefing,
    # and for the key and author, which come from the source rather than the parser.
    source_key = clean_text(source_key)
    existing = session.scalar(select(Briefing).where(Briefing.source_key == source_key))
    fields: dict[str, Any] = {
        "content_hash": parsed.content_hash,
        "title": parsed.title,
        "lead": parsed.lead,
        "lead_html": parsed.lead_html,
        "sections": stored_sections(parsed),
        "tags": list(parsed.tags),
        "url": parsed.url,
        "dropped": list(parsed.dropped),
        "author": author,
    }
    fields = clean_data(fields)
    if existing is None:
        briefing = Briefing(
            source_key=source_key,
            source_id=source_id,
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
        if _record_correction(session, existing, parsed):
            return existing, StoreOutcome.CORRECTED
        return existing, StoreOutcome.UNCHANGED
    for name, value in fields.items():
        setattr(existing, name, value)
    if parsed.published_at is not None:
        existing.published_at = parsed.published_at
    return existing, StoreOutcome.UPDATED


def _record_correction(session: Session, briefing: Briefing, parsed: ParsedBriefing) -> bool:
    """Keep this version of a sent briefing, once; say whether it was new."""
    known = session.scalar(
        select(Correction.id).where(
            Correction.briefing_id == briefing.id,
            Correction.content_hash == parsed.content_hash,
        )
    )
    if known is not None:
        return False
    session.add(
        Correction(
            briefing_id=briefing.id,
            content_hash=parsed.content_hash,
            title=parsed.title,
            lead=parsed.lead,
            sections=stored_sections(parsed),
        )
    )
    return True
