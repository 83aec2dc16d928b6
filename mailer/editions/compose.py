"""Compose a newsletter's edition from ready briefings, and render it once.

Which briefings an edition of local date D takes: the ready ones (or ones another
newsletter has sent) published within D's window, not carried by another edition
of this newsletter, matching its tag filter, from a shared source or its own,
newest first, at most ``max_briefings``, leaving out those an editor excluded.

D's window, in the newsletter's timezone and send time (its "slot"):

* it ends at the later of D's slot and now, but never after the end of local day D,
  so composing yesterday's edition late never takes today's news;
* it starts at the latest of: the end less ``max_age_hours``; the creation of the
  previous edition (the one of the latest date before D that was neither skipped
  nor cancelled), which took everything up to then, or the end of that edition's
  day if it was composed later still; and, when D is after today's local date
  (composed early) and that previous edition is not D-1's, D-1's slot, so that
  composing tomorrow's edition early leaves today's briefings to today's.

"Carried" means in another edition of this newsletter, except one cancelled
before it started: cancelling (or deleting) an edition that never went out gives
its briefings back. A briefing an editor excluded is not in the edition, so it is
not carried by it either.

With nothing to take the edition is recorded as ``skipped`` with its reason
(unless the newsletter sends anyway), never sent; it is composed afresh when
composed again and briefings have arrived.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, exists, or_, select
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
from mailer.editions import checks, states, titles
from mailer.rendering.render import (
    BriefingView,
    EditionView,
    NewsletterView,
    effective_lead,
    effective_title,
    render_edition,
)
from mailer.schedule.slots import local_slot, parse_slot

# Editions in these states may still change (briefings, order, subject, preheader).
EDITABLE = states.EDITABLE
NO_NEW_BRIEFINGS = "no new briefings since the previous edition"


@dataclass(frozen=True)
class Composed:
    edition: Edition
    created: bool

    @property
    def skipped(self) -> bool:
        """Nothing qualified: the edition is recorded, with its reason, and never sent."""
        return self.edition.status == EditionStatus.SKIPPED


@dataclass(frozen=True)
class Window:
    """Briefings published in [start, end] belong to one edition's date."""

    start: datetime
    end: datetime


def local_date(newsletter: Newsletter, now: datetime | None = None) -> date:
    return (now or utcnow()).astimezone(ZoneInfo(newsletter.timezone)).date()


def slot_of(newsletter: Newsletter, day: date) -> datetime:
    """The newsletter's send time on local ``day``, in UTC (daylight saving as the
    scheduler reads it)."""
    return local_slot(day, parse_slot(newsletter.send_time), ZoneInfo(newsletter.timezone))


def _end_of_day(newsletter: Newsletter, day: date) -> datetime:
    return local_slot(day + timedelta(days=1), time(0), ZoneInfo(newsletter.timezone))


def window(session: Session, newsletter: Newsletter, edition_date: date, now: datetime) -> Window:
    """Edition ``edition_date``'s window, by the rules in the module docstring."""
    end = min(max(slot_of(newsletter, edition_date), now), _end_of_day(newsletter, edition_date))
    start = end - timedelta(hours=newsletter.max_age_hours)
    previous = session.execute(
        select(Edition.edition_date, Edition.created_at)
        .where(
            Edition.newsletter_id == newsletter.id,
            Edition.edition_date < edition_date,
            Edition.status.not_in((EditionStatus.SKIPPED, EditionStatus.CANCELLED)),
        )
        .order_by(Edition.edition_date.desc())
        .limit(1)
    ).first()
    if previous is not None:
        # It took what was published up to its composition, and nothing after its day.
        cut = min(previous.created_at, _end_of_day(newsletter, previous.edition_date))
        start = max(start, cut)
    day_before = edition_date - timedelta(days=1)
    early = edition_date > local_date(newsletter, now)
    if early and (previous is None or previous.edition_date != day_before):
        start = max(start, slot_of(newsletter, day_before))
    return Window(start, end)


def carried(newsletter_id: int, but: int | None = None) -> ColumnElement[bool]:
    """The briefing is in another edition of the newsletter (``but`` this one) that
    has not been cancelled before it started."""
    condition = and_(
        EditionBriefing.briefing_id == Briefing.id,
        Edition.newsletter_id == newsletter_id,
        or_(Edition.status != EditionStatus.CANCELLED, Edition.send_started_at.is_not(None)),
    )
    if but is not None:
        condition = and_(condition, Edition.id != but)
    return exists(
        select(EditionBriefing.briefing_id)
        .join(Edition, Edition.id == EditionBriefing.edition_id)
        .where(condition)
    )


def _eligible(
    session: Session,
    newsletter: Newsletter,
    edition_date: date,
    now: datetime,
    *,
    edition_id: int | None,
    excluded: Collection[int],
) -> Iterator[Briefing]:
    span = window(session, newsletter, edition_date, now)
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
            Briefing.published_at >= span.start,
            Briefing.published_at <= span.end,
            ~carried(newsletter.id, but=edition_id),
            ~elsewhere,
        )
        .order_by(Briefing.published_at.desc(), Briefing.id.desc())
    )
    wanted = {t.casefold() for t in newsletter.tag_filter or []}
    left_out = set(excluded)
    # Tags are JSON lists: matched here rather than in SQL, the same way on every database.
    for briefing in session.scalars(query):
        if briefing.id in left_out:
            continue
        if not wanted or wanted & {t.casefold() for t in briefing.tags or []}:
            yield briefing


def eligible(
    session: Session,
    newsletter: Newsletter,
    edition_date: date,
    now: datetime,
    *,
    edition_id: int | None = None,
    excluded: Collection[int] = (),
) -> list[Briefing]:
    """Every briefing edition ``edition_date`` may carry, newest first (no limit)."""
    return list(
        _eligible(session, newsletter, edition_date, now, edition_id=edition_id, excluded=excluded)
    )


def candidates(
    session: Session,
    newsletter: Newsletter,
    edition_date: date,
    now: datetime,
    *,
    edition_id: int | None = None,
    excluded: Collection[int] = (),
) -> list[Briefing]:
    """What the edition takes when composed now, in the order it shows them."""
    chosen = []
    for briefing in _eligible(
        session, newsletter, edition_date, now, edition_id=edition_id, excluded=excluded
    ):
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

    if existing is not None:
        briefings = candidates(
            session,
            newsletter,
            edition_date,
            now,
            edition_id=existing.id,
            excluded=existing.excluded_briefing_ids or (),
        )
    else:
        briefings = candidates(session, newsletter, edition_date, now)
    # created_at is the cut-off for the next edition, so it follows the injected clock.
    edition = existing or Edition(
        newsletter=newsletter,
        edition_date=edition_date,
        subject="",
        status=EditionStatus.DRAFT,
        excluded_briefing_ids=[],
        created_at=now,
    )
    items = [EditionBriefing(briefing=b, position=i) for i, b in enumerate(briefings)]
    fill(edition, items, templates_dir=templates_dir)
    if existing is None:
        found = _insert(session, edition)
        if found is not edition:
            return Composed(found, created=False)
    return Composed(edition, created=existing is None)


def fill(
    edition: Edition, items: list[EditionBriefing], *, templates_dir: Path | None = None
) -> None:
    """Give the edition these items, in this order, and render it once; with none (and
    a newsletter that does not send empty editions) record it skipped instead."""
    for position, item in enumerate(items):
        item.position = position
        if item.briefing_id is None:
            # Known before the flush, so that what this transaction reads back (the order,
            # the audit log) names every briefing.
            item.briefing_id = item.briefing.id
    edition.items = items
    if not items and not edition.newsletter.send_when_empty:
        # Nothing stale stays behind to be previewed or sent.
        edition.html = edition.text = edition.token_nonce = None
        edition.rendered_at = None
        edition.subject = edition.subject_override or edition.subject or "(skipped)"
        states.move(edition, EditionStatus.SKIPPED, NO_NEW_BRIEFINGS)
        return
    rerender(edition, templates_dir=templates_dir)


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


def ordered(edition: Edition) -> list[EditionBriefing]:
    return sorted(edition.items, key=lambda i: i.position)


def rerender(edition: Edition, *, templates_dir: Path | None = None) -> None:
    """Title and render the edition from its current briefings, once (Invariant 3).

    Titles are the effective ones (the edition's headline, else an editor's
    correction, else the source's), in the subject and preheader as in the body.
    """
    newsletter = edition.newsletter
    items = ordered(edition)
    title_items = [
        titles.TitleItem(
            effective_title(i.briefing, i.headline),
            effective_lead(i.briefing),
            tuple(i.briefing.tags or ()),
        )
        for i in items
    ]
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
            language=newsletter.language,
        ),
        EditionView(subject=edition.subject, preheader=edition.preheader, date=day),
        [BriefingView.from_stored(i.briefing, i.headline) for i in items],
        directory=templates_dir,
    )
    edition.html, edition.text, edition.token_nonce = rendered.html, rendered.text, rendered.nonce
    edition.rendered_at = utcnow()
    states.move(edition, EditionStatus.READY)


def checkable(edition: Edition) -> checks.Rendition | None:
    """What the pre-send checks look at, or None if the edition is not rendered."""
    if edition.html is None or edition.text is None or not edition.token_nonce:
        return None
    return checks.Rendition(
        html=edition.html,
        text=edition.text,
        nonce=edition.token_nonce,
        subject=edition.subject,
        preheader=edition.preheader,
        postal_address=edition.newsletter.postal_address,
        headlines=tuple(effective_title(i.briefing, i.headline) for i in ordered(edition)),
    )


def _find(session: Session, newsletter_id: int, edition_date: date) -> Edition | None:
    return session.scalar(
        select(Edition).where(
            Edition.newsletter_id == newsletter_id, Edition.edition_date == edition_date
        )
    )
