"""Compose today's edition of a newsletter and render it once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.db.base import utcnow
from mailer.db.models import (
    Briefing,
    BriefingStatus,
    Edition,
    EditionBriefing,
    EditionStatus,
    Newsletter,
)
from mailer.rendering.render import (
    BriefingView,
    EditionView,
    NewsletterView,
    RenderedEdition,
    render_edition,
)

MAX_BRIEFINGS = 10
SUBJECT_LENGTH = 78
PREHEADER_LENGTH = 140


class NothingToCompose(LookupError):
    """No ready briefing is waiting for this newsletter: no edition is made."""


@dataclass(frozen=True)
class Composed:
    edition: Edition
    created: bool


def local_date(newsletter: Newsletter, now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(ZoneInfo(newsletter.timezone)).date()


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:.-—")
    return cut + "…"


def subject_for(briefings: list[Briefing]) -> str:
    return _shorten(briefings[0].title, SUBJECT_LENGTH)


def preheader_for(briefings: list[Briefing]) -> str:
    if len(briefings) == 1:
        return _shorten(briefings[0].lead, PREHEADER_LENGTH)
    others = "; ".join(b.title for b in briefings[1:])
    return _shorten(f"Plus {len(briefings) - 1} more: {others}", PREHEADER_LENGTH)


def pending_briefings(session: Session, newsletter: Newsletter, limit: int) -> list[Briefing]:
    """Ready briefings this newsletter has not carried yet, newest first."""
    carried = exists(
        select(EditionBriefing.briefing_id)
        .join(Edition, Edition.id == EditionBriefing.edition_id)
        .where(
            EditionBriefing.briefing_id == Briefing.id,
            Edition.newsletter_id == newsletter.id,
        )
    )
    query = (
        select(Briefing)
        .where(Briefing.status == BriefingStatus.READY, ~carried)
        .order_by(Briefing.published_at.desc(), Briefing.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def render(edition: Edition, *, templates_dir: Path | None = None) -> RenderedEdition:
    newsletter = edition.newsletter
    return render_edition(
        newsletter.template,
        NewsletterView(
            name=newsletter.name,
            from_name=newsletter.from_name,
            postal_address=newsletter.postal_address,
            audience_note=newsletter.audience_note,
        ),
        EditionView(
            subject=edition.subject, preheader=edition.preheader, date=edition.edition_date
        ),
        [
            BriefingView.from_stored(b.title, b.lead, b.sections, b.url, b.tags)
            for b in (item.briefing for item in edition.items)
        ],
        directory=templates_dir,
    )


def compose_edition(
    session: Session,
    newsletter: Newsletter,
    *,
    edition_date: date | None = None,
    templates_dir: Path | None = None,
    max_briefings: int = MAX_BRIEFINGS,
) -> Composed:
    """The newsletter's edition for ``edition_date`` (its local today by default).

    Idempotent: an edition that exists for that date is returned as it is, so
    a repeated command or a second process never makes a second one.
    """
    edition_date = edition_date or local_date(newsletter)
    existing = _find(session, newsletter.id, edition_date)
    if existing is not None:
        return Composed(existing, created=False)

    briefings = pending_briefings(session, newsletter, max_briefings)
    if not briefings:
        raise NothingToCompose(
            f"newsletter {newsletter.slug!r} has no ready briefings that it has not sent yet"
        )
    edition = Edition(
        newsletter=newsletter,
        edition_date=edition_date,
        subject=subject_for(briefings),
        preheader=preheader_for(briefings),
        status=EditionStatus.DRAFT,
        items=[EditionBriefing(briefing=b, position=i) for i, b in enumerate(briefings)],
    )
    rendered = render(edition, templates_dir=templates_dir)
    edition.html, edition.text, edition.token_nonce = rendered.html, rendered.text, rendered.nonce
    edition.rendered_at = utcnow()
    edition.status = EditionStatus.READY
    try:
        with session.begin_nested():
            session.add(edition)
    except IntegrityError:
        # Another process composed the same date between our check and insert.
        session.expunge(edition)
        found = _find(session, newsletter.id, edition_date)
        if found is None:
            raise
        return Composed(found, created=False)
    return Composed(edition, created=True)


def _find(session: Session, newsletter_id: int, edition_date: date) -> Edition | None:
    return session.scalar(
        select(Edition).where(
            Edition.newsletter_id == newsletter_id, Edition.edition_date == edition_date
        )
    )
