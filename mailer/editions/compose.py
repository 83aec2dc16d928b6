"""Compose a newsletter's edition from ready briefings, and render it once.

The rules: an edition takes the ready briefings published since the previous
edition of the same newsletter (and within ``max_age_hours``) that it has not
carried yet and that match its tag filter, newest first, at most
``max_briefings``. With nothing new the edition is recorded as ``skipped``
with its reason (unless the newsletter sends anyway), never sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
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
    Source,
)
from mailer.editions import titles
from mailer.rendering.render import BriefingView, EditionView, NewsletterView, render_edition

# Editions in these states may still change (briefings, order, subject, preheader).
EDITABLE = (EditionStatus.DRAFT, EditionStatus.READY, EditionStatus.SKIPPED)
NO_NEW_BRIEFINGS = "no new briefings since the previous edition"


@dataclass(frozen=True)
class Composed:
    edition: Edition
    created: bool

    @property
    def skipped(self) -> bool:
        """Nothing qualified: the edition is recorded, with its reason, and never sent."""
        return self.edition.status == EditionStatus.SKIPPED


def local_date(newsletter: Newsletter, now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(ZoneInfo(newsletter.timezone)).date()


def window_start(session: Session, newsletter: Newsletter, now: datetime) -> datetime:
    """Briefings published before this are old news for the newsletter."""
    oldest = now - timedelta(hours=newsletter.max_age_hours)
    previous = session.scalar(
        select(Edition.created_at)
        .where(
            Edition.newsletter_id == newsletter.id,
            Edition.status != EditionStatus.SKIPPED,
        )
        .order_by(Edition.created_at.desc())
        .limit(1)
    )
    return max(oldest, previous) if previous else oldest


def candidates(session: Session, newsletter: Newsletter, now: datetime) -> list[Briefing]:
    """Ready briefings this newsletter may carry next, in the order it will show them."""
    carried = exists(
        select(EditionBriefing.briefing_id)
        .join(Edition, Edition.id == EditionBriefing.edition_id)
        .where(
            EditionBriefing.briefing_id == Briefing.id,
            Edition.newsletter_id == newsletter.id,
        )
    )
    # A source set up for one newsletter feeds only that newsletter.
    elsewhere = exists(
        select(Source.id).where(
            Source.id == Briefing.source_id,
            Source.newsletter_id.is_not(None),
            Source.newsletter_id != newsletter.id,
        )
    )
    query = (
        select(Briefing)
        .where(
            # SENT too: a briefing another newsletter has sent is still new to this one
            # (what this newsletter carried is excluded just below).
            Briefing.status.in_((BriefingStatus.READY, BriefingStatus.SENT)),
            Briefing.published_at >= window_start(session, newsletter, now),
            ~carried,
            ~elsewhere,
        )
        .order_by(Briefing.published_at.desc(), Briefing.id.desc())
    )
    wanted = {t.casefold() for t in newsletter.tag_filter or []}
    chosen = []
    # Tags are JSON lists: matched here rather than in SQL, the same way on every database.
    for briefing in session.scalars(query):
        if not wanted or wanted & {t.casefold() for t in briefing.tags or []}:
            chosen.append(briefing)
            if len(chosen) == newsletter.max_briefings:
                break
    return chosen


def compose_edition(
    session: Session,
    newsletter: Newsletter,
    *,
    edition_date: date | None = None,
    now: datetime | None = None,
    templates_dir: Path | None = None,
) -> Composed:
    """The newsletter's edition for ``edition_date`` (its local today by default).

    Idempotent: an edition that exists for that date is returned as it is, so
    a repeated command or a second process never makes a second one. A
    skipped edition is composed afresh when briefings have arrived since.
    When nothing qualifies the edition is recorded as skipped, with its reason.
    """
    now = now or utcnow()
    edition_date = edition_date or local_date(newsletter, now)
    existing = _find(session, newsletter.id, edition_date)
    if existing is not None and existing.status != EditionStatus.SKIPPED:
        return Composed(existing, created=False)

    briefings = candidates(session, newsletter, now)
    # created_at is the cut-off for the next edition, so it follows the injected clock.
    edition = existing or Edition(
        newsletter=newsletter, edition_date=edition_date, subject="", created_at=now
    )
    if not briefings and not newsletter.send_when_empty:
        edition.status = EditionStatus.SKIPPED
        edition.status_reason = NO_NEW_BRIEFINGS
        edition.subject = edition.subject or "(skipped)"
        found = _insert(session, edition)
        return Composed(found, created=found is edition and existing is None)

    edition.items = [EditionBriefing(briefing=b, position=i) for i, b in enumerate(briefings)]
    edition.status_reason = None
    rerender(edition, templates_dir=templates_dir)
    if existing is None:
        found = _insert(session, edition)
        if found is not edition:
            return Composed(found, created=False)
    return Composed(edition, created=existing is None)


def _insert(session: Session, edition: Edition) -> Edition:
    if edition.id is not None:
        return edition
    try:
        with session.begin_nested():
            session.add(edition)
    except IntegrityError:
        # Another process composed the same date between our check and insert;
        # the savepoint's rollback has already taken our edition out of the session.
        found = _find(session, edition.newsletter_id, edition.edition_date)
        if found is None:
            raise
        return found
    return edition


def rerender(edition: Edition, *, templates_dir: Path | None = None) -> None:
    """Title and render the edition from its current briefings, once (Invariant 3)."""
    newsletter = edition.newsletter
    items = [item.briefing for item in sorted(edition.items, key=lambda i: i.position)]
    title_items = [titles.TitleItem(b.title, b.lead, tuple(b.tags or ())) for b in items]
    day = edition.edition_date
    edition.subject = edition.subject_override or (
        titles.render(
            newsletter.subject_template,
            title_items,
            newsletter=newsletter.name,
            day=day,
            field="subject",
        )
        if items
        else f"{newsletter.name}: nothing new today"
    )
    edition.preheader = edition.preheader_override or (
        titles.render(
            newsletter.preheader_template,
            title_items,
            newsletter=newsletter.name,
            day=day,
            field="preheader",
        )
        if items
        else "There are no new briefings today."
    )
    rendered = render_edition(
        newsletter.template,
        NewsletterView(
            name=newsletter.name,
            from_name=newsletter.from_name,
            postal_address=newsletter.postal_address,
            audience_note=newsletter.audience_note,
        ),
        EditionView(subject=edition.subject, preheader=edition.preheader, date=day),
        [BriefingView.from_stored(b) for b in items],
        directory=templates_dir,
    )
    edition.html, edition.text, edition.token_nonce = rendered.html, rendered.text, rendered.nonce
    edition.rendered_at = utcnow()
    edition.status = EditionStatus.READY


def _find(session: Session, newsletter_id: int, edition_date: date) -> Edition | None:
    return session.scalar(
        select(Edition).where(
            Edition.newsletter_id == newsletter_id, Edition.edition_date == edition_date
        )
    )
