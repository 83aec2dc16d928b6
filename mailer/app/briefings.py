"""Briefings for editors: browse, read, correct the headline or lead, move through states.

An editor's correction lives in its own columns (``edited_title``, ``edited_lead``) and
wins over what the source says; a re-pull updates the source's columns and never those,
so a correction survives any number of pulls. Once a briefing has gone out it is
immutable, correction included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from markupsafe import escape
from sqlalchemy import Row, or_, select
from sqlalchemy.orm import Session

from mailer.accounts.models import Role
from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import Conflict, Invalid, NotFound
from mailer.app.sources import SourceView, list_sources
from mailer.briefings.sanitize import clean_text, sanitize_html
from mailer.db.base import utcnow
from mailer.db.models import (
    Briefing,
    BriefingStatus,
    Correction,
    Edition,
    EditionBriefing,
    EditionStatus,
    PullError,
    Source,
    SourceKind,
)
from mailer.db.session import transaction
from mailer.editions.compose import rerender
from mailer.editions.titles import TitleTemplateError
from mailer.rendering.render import RenderError
from mailer.runtime import Runtime

# SourceView and list_sources are defined once, in mailer.app.sources, and offered here
# too: the briefing pages show where briefings come from.
__all__ = [
    "BriefingDetail",
    "BriefingSummary",
    "PullErrorView",
    "SourceView",
    "correct_briefing",
    "get_briefing",
    "list_briefings",
    "list_sources",
    "recent_pull_errors",
    "set_status",
]

MAX_TITLE = 300
MAX_LEAD = 2000
MAX_SEARCH = 200
MAX_PAGE = 500

# Editions a correction re-renders. Skipped ones are left alone: re-rendering makes an
# edition ready, and a correction must never turn a skipped edition into a sendable one.
_RERENDERED = (EditionStatus.DRAFT, EditionStatus.READY)

# What an editor may set by hand (sent is the dispatcher's to set), with the CLI's verbs.
_SETTABLE = {
    "ready": BriefingStatus.READY,
    "draft": BriefingStatus.DRAFT,
    "archived": BriefingStatus.ARCHIVED,
    "archive": BriefingStatus.ARCHIVED,
}


@dataclass(frozen=True)
class BriefingSummary:
    id: int
    title: str  # what readers get: the editor's correction, else the source's
    lead: str
    status: str
    source: str | None  # the source's name; None for a one-off folder pull or a removed source
    source_kind: str | None
    published_at: datetime
    edited: bool
    tags: tuple[str, ...]
    in_editions: tuple[int, ...]  # ids of the editions that carry it, oldest first
    source_key: str  # the item's identity at its source (file path, feed guid, API id)


@dataclass(frozen=True)
class BriefingDetail(BriefingSummary):
    original_title: str  # as the source has it now
    original_lead: str
    edited_by: str | None
    edited_at: datetime | None
    url: str | None
    author: str | None
    # label, paragraphs (plain text), text (paragraphs joined by blank lines),
    # html (one sanitized <p> per paragraph, safe to put into a page as it is)
    sections: list[dict[str, Any]]
    dropped: list[str]  # boilerplate the parser left out
    # Versions the source sent after the briefing went out: recorded_at, title, lead.
    corrections: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class PullErrorView:
    source: str | None
    item: str
    message: str
    at: datetime


def _kind_of(source_kind: str | None, source_key: str) -> str | None:
    if source_kind is not None:
        return source_kind
    # Keys start with their kind ("folder:/path", "feed:name:guid", "api:name:id"), so a
    # briefing pulled without a source row, or whose source was removed, still says it.
    prefix = source_key.partition(":")[0]
    return prefix if prefix in {k.value for k in SourceKind} else None


_SUMMARY_COLUMNS = (
    Briefing.id,
    Briefing.title,
    Briefing.lead,
    Briefing.edited_title,
    Briefing.edited_lead,
    Briefing.status,
    Briefing.published_at,
    Briefing.tags,
    Briefing.source_key,
    Source.name,
    Source.kind,
)


def _editions_of(session: Session, briefing_ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
    found: dict[int, list[int]] = {}
    if briefing_ids:
        for briefing_id, edition_id in session.execute(
            select(EditionBriefing.briefing_id, EditionBriefing.edition_id)
            .where(EditionBriefing.briefing_id.in_(briefing_ids))
            .order_by(EditionBriefing.edition_id)
        ):
            found.setdefault(briefing_id, []).append(edition_id)
    return {k: tuple(v) for k, v in found.items()}


def _summary(row: Row[*tuple[Any, ...]], in_editions: tuple[int, ...]) -> BriefingSummary:
    return BriefingSummary(
        id=row.id,
        title=row.edited_title or row.title,
        lead=row.edited_lead or row.lead,
        status=row.status,
        source=row.name,
        source_kind=_kind_of(row.kind, row.source_key),
        published_at=row.published_at,
        edited=row.edited_title is not None or row.edited_lead is not None,
        tags=tuple(row.tags or ()),
        in_editions=in_editions,
        source_key=row.source_key,
    )


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_briefings(
    runtime: Runtime,
    actor: Actor,
    *,
    status: str | None = None,
    source: str | None = None,
    search: str | None = None,
    limit: int = 50,
    before: tuple[datetime, int] | None = None,
) -> list[BriefingSummary]:
    """Newest first by (published_at, id), a page at a time: pass the last item's
    ``(published_at, id)`` as ``before`` for the next page. ``search`` matches the title
    or lead (the source's or the editor's), case-insensitively."""
    actor.require(Role.EDITOR)
    if status is not None and status not in {s.value for s in BriefingStatus}:
        choices = ", ".join(s.value for s in BriefingStatus)
        raise Invalid(f"status {status!r}: choose one of {choices}", field="status")
    if limit < 1:
        raise Invalid("limit must be at least 1", field="limit")
    if before is not None and before[0].tzinfo is None:
        raise Invalid("before: give a timezone-aware time", field="before")
    needle = " ".join((search or "").split())
    if len(needle) > MAX_SEARCH:
        raise Invalid(f"search is {len(needle)} characters; at most {MAX_SEARCH}", field="search")
    query = (
        select(*_SUMMARY_COLUMNS)
        .outerjoin(Source, Source.id == Briefing.source_id)
        .order_by(Briefing.published_at.desc(), Briefing.id.desc())
        .limit(min(limit, MAX_PAGE))
    )
    if status is not None:
        query = query.where(Briefing.status == status)
    if source is not None:
        query = query.where(Source.name == source)
    if needle:
        pattern = _like(needle)
        query = query.where(
            or_(
                *(
                    column.ilike(pattern, escape="\\")
                    for column in (
                        Briefing.title,
                        Briefing.lead,
                        Briefing.edited_title,
                        Briefing.edited_lead,
                    )
                )
            )
        )
    if before is not None:
        at, last_id = before
        # The range on published_at alone lets its index bound the scan; ties on the
        # same instant are then ordered by id.
        query = query.where(
            Briefing.published_at <= at,
            or_(Briefing.published_at < at, Briefing.id < last_id),
        )
    with runtime.sessions() as session:
        rows = session.execute(query).all()
        editions = _editions_of(session, [r.id for r in rows])
    return [_summary(r, editions.get(r.id, ())) for r in rows]


def _sections(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sections = []
    for section in stored:
        paragraphs = [str(p) for p in section.get("paragraphs") or ()]
        fragments = list(section.get("html") or ())
        if len(fragments) != len(paragraphs):
            fragments = [""] * len(paragraphs)
        # Sanitized again on the way out, as rendering does: a row written by anything
        # else still cannot put markup into the workspace's pages.
        html = "".join(
            f"<p>{sanitize_html(f) if f else escape(p)}</p>"
            for f, p in zip(fragments, paragraphs, strict=True)
        )
        sections.append(
            {
                "label": section.get("label"),
                "paragraphs": paragraphs,
                "text": "\n\n".join(paragraphs),
                "html": html,
            }
        )
    return sections


def _detail(session: Session, briefing: Briefing) -> BriefingDetail:
    source = session.get(Source, briefing.source_id) if briefing.source_id else None
    corrections = session.scalars(
        select(Correction).where(Correction.briefing_id == briefing.id).order_by(Correction.id)
    ).all()
    return BriefingDetail(
        id=briefing.id,
        title=briefing.edited_title or briefing.title,
        lead=briefing.edited_lead or briefing.lead,
        status=briefing.status,
        source=source.name if source else None,
        source_kind=_kind_of(source.kind if source else None, briefing.source_key),
        published_at=briefing.published_at,
        edited=briefing.edited_title is not None or briefing.edited_lead is not None,
        tags=tuple(briefing.tags or ()),
        in_editions=_editions_of(session, [briefing.id]).get(briefing.id, ()),
        source_key=briefing.source_key,
        original_title=briefing.title,
        original_lead=briefing.lead,
        edited_by=briefing.edited_by,
        edited_at=briefing.edited_at,
        url=briefing.url,
        author=briefing.author,
        sections=_sections(briefing.sections or []),
        dropped=list(briefing.dropped or ()),
        corrections=[
            {"recorded_at": c.recorded_at, "title": c.title, "lead": c.lead} for c in corrections
        ],
        created_at=briefing.created_at,
        updated_at=briefing.updated_at,
    )


def _get(session: Session, briefing_id: int, *, lock: bool = False) -> Briefing:
    briefing = session.get(Briefing, briefing_id, with_for_update=lock, populate_existing=lock)
    if briefing is None:
        raise NotFound(f"no briefing with id {briefing_id}")
    return briefing


def get_briefing(runtime: Runtime, actor: Actor, briefing_id: int) -> BriefingDetail:
    """One briefing as stored, with its correction and those received after it was sent."""
    actor.require(Role.EDITOR)
    with runtime.sessions() as session:
        return _detail(session, _get(session, briefing_id))


def _correction(field: str, value: str, limit: int) -> str:
    # Control characters go as at every way in; what is still unprintable after that
    # (bidi overrides and other format characters) is refused, never shown in a subject.
    cleaned = " ".join(clean_text(value).split())
    if len(cleaned) > limit:
        raise Invalid(f"{field} is {len(cleaned)} characters; at most {limit}", field=field)
    if not cleaned.isprintable():
        raise Invalid(f"{field} contains unprintable characters", field=field)
    return cleaned


def _sent(briefing_id: int) -> Conflict:
    return Conflict(
        f"briefing {briefing_id} was sent; a sent briefing stays as it went out "
        "(changes at the source are kept as corrections)"
    )


def correct_briefing(
    runtime: Runtime,
    actor: Actor,
    briefing_id: int,
    *,
    title: str | None = None,
    lead: str | None = None,
) -> BriefingDetail:
    """Correct the headline and/or lead (``None`` leaves it, ``""`` goes back to the
    source's), then re-render every composed, unsent edition that carries the briefing,
    so its preview shows the correction. Refused once the briefing has been sent."""
    actor.require(Role.EDITOR)
    new_title = _correction("title", title, MAX_TITLE) if title is not None else None
    new_lead = _correction("lead", lead, MAX_LEAD) if lead is not None else None
    with transaction(runtime.sessions) as session:
        if _get(session, briefing_id).status == BriefingStatus.SENT:
            raise _sent(briefing_id)
        # The editions first, then the briefing: the order in which starting a send takes
        # them (the edition row, then its briefings become sent), so the two never
        # deadlock, and a send that started first is seen below as a sent briefing.
        editions = session.scalars(
            select(Edition)
            .where(
                Edition.id.in_(
                    select(EditionBriefing.edition_id).where(
                        EditionBriefing.briefing_id == briefing_id
                    )
                ),
                Edition.status.in_(_RERENDERED),
            )
            .order_by(Edition.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()
        briefing = _get(session, briefing_id, lock=True)
        if briefing.status == BriefingStatus.SENT:
            raise _sent(briefing_id)
        before = {"title": briefing.edited_title, "lead": briefing.edited_lead}
        # A value equal to the source's is no correction: storing it would freeze the
        # source's current words against its later changes.
        if new_title is not None:
            briefing.edited_title = new_title if new_title not in ("", briefing.title) else None
        if new_lead is not None:
            briefing.edited_lead = new_lead if new_lead not in ("", briefing.lead) else None
        after = {"title": briefing.edited_title, "lead": briefing.edited_lead}
        if after == before:
            return _detail(session, briefing)
        if after["title"] is None and after["lead"] is None:
            # Back to the source's words: nobody's correction stands (the log keeps who).
            briefing.edited_by = briefing.edited_at = None
        else:
            briefing.edited_by, briefing.edited_at = actor.label, utcnow()
        rerendered = [e for e in editions if e.status in _RERENDERED]
        for edition in rerendered:
            try:
                rerender(edition, templates_dir=runtime.settings.templates_dir)
            except (RenderError, TitleTemplateError) as exc:
                raise Conflict(
                    f"edition {edition.id} cannot be rendered with this correction: {exc}"
                ) from exc
        audit.record(
            session,
            actor,
            "briefing.correct",
            "briefing",
            briefing.id,
            before=before,
            after=after,
            note=(
                f"re-rendered edition(s) {', '.join(str(e.id) for e in rerendered)}"
                if rerendered
                else None
            ),
        )
        session.flush()
        return _detail(session, briefing)


def set_status(runtime: Runtime, actor: Actor, briefing_id: int, status: str) -> BriefingSummary:
    """Move a briefing to ``ready`` (the next edition may take it), ``draft`` (held for an
    editor) or ``archived`` (kept out of editions). Refused once it has been sent."""
    actor.require(Role.EDITOR)
    wanted = _SETTABLE.get(status)
    if wanted is None:
        raise Invalid(f"status {status!r}: choose ready, draft or archived", field="status")
    with transaction(runtime.sessions) as session:
        briefing = _get(session, briefing_id, lock=True)
        if briefing.status == BriefingStatus.SENT:
            raise _sent(briefing_id)
        if briefing.status != wanted:
            audit.record(
                session,
                actor,
                "briefing.status",
                "briefing",
                briefing.id,
                before={"status": briefing.status},
                after={"status": wanted.value},
            )
            briefing.status = wanted
            session.flush()
        detail = _detail(session, briefing)
    return BriefingSummary(**{f.name: getattr(detail, f.name) for f in fields(BriefingSummary)})


def recent_pull_errors(runtime: Runtime, actor: Actor, limit: int = 50) -> list[PullErrorView]:
    """Items that could not be ingested, newest first, with their source and reason."""
    actor.require(Role.EDITOR)
    if limit < 1:
        raise Invalid("limit must be at least 1", field="limit")
    with runtime.sessions() as session:
        rows = session.execute(
            select(Source.name, PullError.item, PullError.message, PullError.created_at)
            .outerjoin(Source, Source.id == PullError.source_id)
            # Ids follow insertion, so this is newest first without sorting the table.
            .order_by(PullError.id.desc())
            .limit(min(limit, MAX_PAGE))
        ).all()
    return [PullErrorView(name, item, message, at) for name, item, message, at in rows]
