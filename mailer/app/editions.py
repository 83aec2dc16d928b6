"""Editions, as editors work on them: compose, arrange, preview, check, test, approve, send.

Every function is one action: it opens its own transaction, locks the edition row
before it changes anything (the same lock the dispatcher's start takes, so an edit
never lands on an edition that has started sending), records the change in the
audit log, and returns plain frozen dataclasses. Edits re-render the edition once,
so what is previewed is what is sent.

Approval covers what was approved: an edit after it clears the approval (the audit
log keeps who approved what). A one-off send time (``schedule_send``) survives edits;
the leading scheduler runs the checks again when the time comes and starts the
edition only if none refuses (``mailer.schedule.runner``).

Locks are taken in one order everywhere: a schedule run holding the edition first,
then the edition row (as the scheduler does), so two actions never wait on each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from mailer.accounts.models import AuditEntry, Role
from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import (
    AppError,
    ChecksFailed,
    Conflict,
    Invalid,
    NotFound,
    RateLimited,
)
from mailer.briefings.feeds import user_agent
from mailer.config import ConfigError
from mailer.db.base import utcnow
from mailer.db.models import (
    Briefing,
    DeliveryStatus,
    Edition,
    EditionBriefing,
    EditionStatus,
    Newsletter,
    Source,
)
from mailer.db.session import transaction
from mailer.dispatch import dispatcher, ledger
from mailer.dispatch.dispatcher import DispatchError, envelope_for, send_edition
from mailer.editions import checks as edition_checks
from mailer.editions import compose as composing
from mailer.editions import editing, states
from mailer.editions.checks import Check
from mailer.editions.editing import EditionLocked
from mailer.editions.titles import TitleTemplateError
from mailer.events.policy import Policy, apply_pending
from mailer.events.reconcile import Decision, ReconcileError, ReconcileView
from mailer.events.reconcile import decide as reconcile_decide
from mailer.events.reconcile import review as reconcile_review
from mailer.events.stats import EditionStats, StatsError, edition_stats
from mailer.rendering.personalize import PersonalizationError, personalize
from mailer.rendering.render import RenderError, effective_lead, effective_title
from mailer.runtime import Runtime
from mailer.schedule import runner
from mailer.schedule.models import RunState, ScheduleRun
from mailer.transports import transport_for
from mailer.transports.base import Outcome, Recipient, TransportUnauthorized
from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.models import Subscriber
from subscribers.segments import SegmentRuleError

__all__ = [
    "BriefingChoice",
    "Check",
    "EditionDetail",
    "EditionItem",
    "EditionSummary",
    "Preview",
    "Progress",
    "Reconciled",
    "TestSendResult",
    "approve",
    "cancel",
    "checks",
    "compose",
    "delete_draft",
    "exclude",
    "get_edition",
    "include",
    "list_editions",
    "move",
    "pause",
    "preview",
    "progress",
    "recompose",
    "reconcile",
    "reorder",
    "resume",
    "retitle",
    "schedule_send",
    "send",
    "send_now",
    "set_headline",
    "stats",
    "test_send",
    "unschedule",
]

log = logging.getLogger(__name__)

Part = Literal["html", "text"]
# The web app answers here with a page saying it is a preview: a link in a preview or
# a test send never unsubscribes anybody.
PREVIEW_LINK_PATH = "/preview/link"
TEST_PREFIX = "[TEST] "
MAX_TEST_ADDRESSES = 10
TEST_SENDS_PER_WINDOW = 5
TEST_SEND_WINDOW = timedelta(minutes=10)
MAX_PAGE = 500
DONE = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED, DeliveryStatus.UNKNOWN)


@dataclass(frozen=True)
class EditionItem:
    briefing_id: int
    position: int  # 0 is first
    headline: str | None  # this edition's short headline, if an editor gave one
    title: str  # what readers see: the headline, else the corrected title, else the source's
    lead: str  # the corrected lead, else the source's
    source: str | None  # the source's name (None: pushed without one, or removed)
    published_at: datetime
    word_count_title: int


@dataclass(frozen=True)
class BriefingChoice:
    briefing_id: int
    title: str
    published_at: datetime
    source: str | None


@dataclass(frozen=True)
class EditionDetail:
    id: int
    newsletter_slug: str
    newsletter_name: str
    timezone: str  # the newsletter's: where its dates and send times are read
    edition_date: date
    status: str
    status_reason: str | None
    subject: str
    preheader: str
    subject_override: str | None
    preheader_override: str | None
    items: tuple[EditionItem, ...]
    excluded: tuple[BriefingChoice, ...]
    # In this edition's window, not in it, not excluded, not carried by another edition:
    # what arrived since it was composed (only for an edition that may still change).
    available: tuple[BriefingChoice, ...]
    editable: bool
    approved_by: str | None
    approved_at: datetime | None
    scheduled_for: datetime | None
    approval_deadline: datetime | None  # the holding schedule run's, if one holds it
    held: bool
    html_bytes: int
    rendered_at: datetime | None
    send_started_at: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True)
class EditionSummary:
    id: int
    newsletter_slug: str
    newsletter_name: str
    edition_date: date
    status: str
    subject: str
    briefings: int
    counts: dict[str, int]
    scheduled_for: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True)
class Progress:
    edition_id: int
    status: str
    status_reason: str | None
    counts: dict[str, int]
    total: int
    done: int
    rate_per_second: float
    eta_seconds: int | None
    # When the earliest queued delivery waiting out a temporary refusal may go again.
    next_retry_at: datetime | None = None


@dataclass(frozen=True)
class Preview:
    content: str
    part: Part
    as_email: str | None


@dataclass(frozen=True)
class TestSendResult:
    addresses: tuple[str, ...]
    subject: str


@dataclass(frozen=True)
class Reconciled:
    view: ReconcileView
    changed: int


# -- shared ---------------------------------------------------------------------------


@contextmanager
def _domain_errors(field: str | None = None) -> Iterator[None]:
    """The domain's exceptions as the application's, once for every action."""
    try:
        yield
    except AppError:
        raise
    except (RenderError, TitleTemplateError, PersonalizationError) as exc:
        raise Conflict(f"the edition cannot be rendered: {exc}") from exc
    except (
        EditionLocked,
        DispatchError,
        states.TransitionError,
        runner.ApprovalError,
        ReconcileError,
        SegmentRuleError,
        TransportUnauthorized,
        ConfigError,
    ) as exc:
        raise Conflict(str(exc)) from exc
    except KeyError:
        raise  # a missing key is a bug here, never "no such thing"
    except LookupError as exc:
        raise NotFound(str(exc)) from exc
    except ValueError as exc:
        raise Invalid(str(exc), field) from exc


def _load(session: Session, edition_id: int, *, lock: bool = False) -> Edition:
    if lock:
        edition = session.get(Edition, edition_id, with_for_update=True, populate_existing=True)
    else:
        edition = session.get(Edition, edition_id)
    if edition is None:
        raise NotFound(f"no edition with id {edition_id}")
    return edition


def _lock(session: Session, edition_id: int) -> tuple[Edition, ScheduleRun | None]:
    """The edition row, and the schedule run holding it for approval if there is one,
    locked in the scheduler's order (run, then edition)."""
    run_id = session.scalar(
        select(ScheduleRun.id)
        .where(ScheduleRun.edition_id == edition_id, ScheduleRun.state == RunState.HELD)
        .order_by(ScheduleRun.slot_date.desc())
        .limit(1)
    )
    run = None
    if run_id is not None:
        run = session.get(ScheduleRun, run_id, with_for_update=True, populate_existing=True)
        if run is not None and run.state != RunState.HELD:
            run = None
    return _load(session, edition_id, lock=True), run


def _held_run(session: Session, edition_id: int) -> ScheduleRun | None:
    return session.scalar(
        select(ScheduleRun)
        .where(ScheduleRun.edition_id == edition_id, ScheduleRun.state == RunState.HELD)
        .order_by(ScheduleRun.slot_date.desc())
        .limit(1)
    )


def _order(edition: Edition) -> list[int]:
    return [i.briefing_id for i in composing.ordered(edition)]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _source_names(session: Session, source_ids: set[int]) -> dict[int, str]:
    if not source_ids:
        return {}
    query = select(Source.id, Source.name).where(Source.id.in_(source_ids))
    return {source_id: name for source_id, name in session.execute(query)}


def _choice(briefing: Briefing, sources: dict[int, str]) -> BriefingChoice:
    return BriefingChoice(
        briefing_id=briefing.id,
        title=effective_title(briefing),
        published_at=briefing.published_at,
        source=sources.get(briefing.source_id) if briefing.source_id is not None else None,
    )


def _detail(session: Session, edition: Edition, now: datetime | None = None) -> EditionDetail:
    now = now or utcnow()
    newsletter = edition.newsletter
    items = composing.ordered(edition)
    excluded_ids = list(edition.excluded_briefing_ids or ())
    excluded = (
        list(
            session.scalars(
                select(Briefing)
                .where(Briefing.id.in_(excluded_ids))
                .order_by(Briefing.published_at.desc(), Briefing.id.desc())
            )
        )
        if excluded_ids
        else []
    )
    editable = edition.status in states.EDITABLE
    present = {i.briefing_id for i in items}
    available = (
        [
            b
            for b in composing.eligible(
                session,
                newsletter,
                edition.edition_date,
                now,
                edition_id=edition.id,
                excluded=excluded_ids,
            )
            if b.id not in present
        ]
        if editable
        else []
    )
    sources = _source_names(
        session,
        {
            b.source_id
            for b in [*(i.briefing for i in items), *excluded, *available]
            if b.source_id is not None
        },
    )
    run = _held_run(session, edition.id)
    shown = []
    for item in items:
        briefing = item.briefing
        title = effective_title(briefing, item.headline)
        shown.append(
            EditionItem(
                briefing_id=briefing.id,
                position=item.position,
                headline=item.headline,
                title=title,
                lead=effective_lead(briefing),
                source=sources.get(briefing.source_id) if briefing.source_id else None,
                published_at=briefing.published_at,
                word_count_title=len(title.split()),
            )
        )
    return EditionDetail(
        id=edition.id,
        newsletter_slug=newsletter.slug,
        newsletter_name=newsletter.name,
        timezone=newsletter.timezone,
        edition_date=edition.edition_date,
        status=edition.status,
        status_reason=edition.status_reason,
        subject=edition.subject,
        preheader=edition.preheader,
        subject_override=edition.subject_override,
        preheader_override=edition.preheader_override,
        items=tuple(shown),
        excluded=tuple(_choice(b, sources) for b in excluded),
        available=tuple(_choice(b, sources) for b in available),
        editable=editable,
        approved_by=edition.approved_by,
        approved_at=edition.approved_at,
        scheduled_for=edition.scheduled_for,
        approval_deadline=run.deadline_at if run is not None else None,
        held=run is not None,
        html_bytes=len(edition.html.encode("utf-8")) if edition.html else 0,
        rendered_at=edition.rendered_at,
        send_started_at=edition.send_started_at,
        sent_at=edition.sent_at,
    )


def _refusals(edition: Edition) -> None:
    """Raise ChecksFailed unless every check at least warns (no network: links are not
    fetched here, an editor asks for that with ``checks(check_links=True)``)."""
    rendition = composing.checkable(edition)
    if rendition is None:
        raise ChecksFailed(
            f"edition {edition.id} has not been rendered",
            [f"edition {edition.id} has not been rendered"],
        )
    failures = [c.message for c in edition_checks.evaluate(rendition) if c.level == "refuse"]
    if failures:
        raise ChecksFailed(f"edition {edition.id} cannot go out: {'; '.join(failures)}", failures)


def _approval(edition: Edition, actor: Actor, now: datetime) -> dict[str, Any]:
    """Record ``actor``'s approval unless there is one; what changed, for the audit log."""
    if edition.approved_at is not None:
        return {}
    edition.approved_by, edition.approved_at = actor.label, now
    return {"approved_by": actor.label, "approved_at": now.isoformat()}


def _preview_link(runtime: Runtime) -> str:
    return f"{runtime.settings.base_url}{PREVIEW_LINK_PATH}"


# -- reading --------------------------------------------------------------------------


def list_editions(
    runtime: Runtime,
    actor: Actor,
    *,
    statuses: Sequence[str] | None = None,
    limit: int = 50,
    before_id: int | None = None,
    with_counts: bool = True,
) -> list[EditionSummary]:
    """Newest first, a page at a time (``before_id``: the last id of the previous page).

    Counting a large ledger costs; a caller that shows no counts passes
    ``with_counts=False`` and gets empty ones.
    """
    actor.require(Role.EDITOR)
    query = (
        select(Edition)
        .options(selectinload(Edition.newsletter))
        .order_by(Edition.id.desc())
        .limit(max(1, min(limit, MAX_PAGE)))
    )
    if statuses:
        query = query.where(Edition.status.in_(list(statuses)))
    if before_id is not None:
        query = query.where(Edition.id < before_id)
    with runtime.sessions() as session:
        editions = list(session.scalars(query))
        ids = [e.id for e in editions]
        sizes: dict[int, int] = {}
        if ids:
            counted = (
                select(EditionBriefing.edition_id, func.count())
                .where(EditionBriefing.edition_id.in_(ids))
                .group_by(EditionBriefing.edition_id)
            )
            sizes = {edition_id: int(n) for edition_id, n in session.execute(counted)}
        return [
            EditionSummary(
                id=e.id,
                newsletter_slug=e.newsletter.slug,
                newsletter_name=e.newsletter.name,
                edition_date=e.edition_date,
                status=e.status,
                subject=e.subject,
                briefings=int(sizes.get(e.id, 0)),
                counts=ledger.counts(session, e.id) if with_counts else {},
                scheduled_for=e.scheduled_for,
                sent_at=e.sent_at,
            )
            for e in editions
        ]


def get_edition(runtime: Runtime, actor: Actor, edition_id: int) -> EditionDetail:
    actor.require(Role.EDITOR)
    with runtime.sessions() as session:
        return _detail(session, _load(session, edition_id))


def progress(runtime: Runtime, actor: Actor, edition_id: int) -> Progress:
    """Deliveries by status, the rate over the last minute and the time left at it."""
    actor.require(Role.EDITOR)
    with runtime.sessions() as session:
        edition = _load(session, edition_id)
        counts = ledger.counts(session, edition_id)
        rate = ledger.recent_rate(session, edition_id)
        next_retry = session.scalar(
            select(func.min(ledger.DELIVERIES.c.retry_after)).where(
                ledger.DELIVERIES.c.edition_id == edition_id,
                ledger.DELIVERIES.c.status == DeliveryStatus.QUEUED,
                # Rows whose time has come are claimable now, not waiting; from here the
                # partial index on retry_after finds the next one at its first entries.
                ledger.DELIVERIES.c.retry_after > utcnow(),
            )
        )
    remaining = counts[DeliveryStatus.QUEUED] + counts[DeliveryStatus.SENDING]
    return Progress(
        edition_id=edition_id,
        status=edition.status,
        status_reason=edition.status_reason,
        counts=counts,
        total=sum(counts.values()),
        done=sum(counts[s] for s in DONE),
        rate_per_second=round(rate, 1),
        eta_seconds=round(remaining / rate) if rate and remaining else None,
        next_retry_at=next_retry,
    )


def stats(
    runtime: Runtime, actor: Actor, edition_id: int, *, timeline: bool = True
) -> EditionStats:
    """What happened after the send: delivered, bounced, complaints, opens, clicks (and,
    unless ``timeline`` is off, events per hour for the chart)."""
    actor.require(Role.EDITOR)
    with _domain_errors(), runtime.sessions() as session:
        try:
            return edition_stats(session, edition_id, timeline=timeline)
        except StatsError as exc:
            raise NotFound(str(exc)) from exc


def preview(
    runtime: Runtime,
    actor: Actor,
    edition_id: int,
    *,
    as_email: str | None = None,
    part: Part = "html",
) -> Preview:
    """The edition as a reader gets it, personalized with a subscriber's name and address
    if ``as_email`` is given, but never with a working link: the unsubscribe link goes to
    a page that only says it is a preview."""
    actor.require(Role.EDITOR)
    if part not in ("html", "text"):
        raise Invalid(f"part {part!r}: html or text", "part")
    address = None
    if as_email is not None:
        try:
            address = normalize_email(as_email)
        except InvalidAddress as exc:
            raise Invalid(f"{as_email!r}: {exc}", "as_email") from exc
    with runtime.sessions() as session:
        edition = _load(session, edition_id)
        if edition.html is None or edition.text is None or not edition.token_nonce:
            raise Conflict(f"edition {edition_id} has not been rendered")
        values = {"unsubscribe_url": _preview_link(runtime), "name": "", "email": ""}
        if address is not None:
            subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
            if subscriber is None:
                raise NotFound(f"no subscriber {address}")
            values["name"], values["email"] = subscriber.name or "", subscriber.email
        content = edition.text if part == "text" else edition.html
        shown = personalize(content, edition.token_nonce, values, html=part == "html")
    return Preview(content=shown, part=part, as_email=address)


def checks(
    runtime: Runtime, actor: Actor, edition_id: int, *, check_links: bool = False
) -> list[Check]:
    """The pre-send checks (see ``mailer.editions.checks``); ``check_links`` also asks
    every link whether it answers."""
    actor.require(Role.EDITOR)
    with runtime.sessions() as session:
        edition = _load(session, edition_id)
        rendition = composing.checkable(edition)
    if rendition is None:
        return [Check("rendered", "refuse", f"edition {edition_id} has not been rendered")]
    # The network part runs after the session is given back: no connection waits on it.
    return edition_checks.evaluate(
        rendition, check_links=check_links, user_agent=user_agent(runtime.settings.base_url)
    )


# -- composing and editing ------------------------------------------------------------


def compose(
    runtime: Runtime, actor: Actor, newsletter_slug: str, day: date | None = None
) -> tuple[EditionDetail, bool]:
    """The newsletter's edition of ``day`` (its local today by default): composed and
    rendered now, or the one that exists. Returns it and whether it was made now."""
    actor.require(Role.EDITOR)
    now = utcnow()
    with _domain_errors(), transaction(runtime.sessions) as session:
        newsletter = session.scalar(select(Newsletter).where(Newsletter.slug == newsletter_slug))
        if newsletter is None:
            raise NotFound(f"no newsletter {newsletter_slug!r}")
        wanted = day or composing.local_date(newsletter, now)
        before = session.scalar(
            select(Edition.status).where(
                Edition.newsletter_id == newsletter.id, Edition.edition_date == wanted
            )
        )
        composed = composing.compose_edition(
            session,
            newsletter,
            edition_date=wanted,
            now=now,
            templates_dir=runtime.settings.templates_dir,
        )
        edition = composed.edition
        session.flush()
        if composed.created or before == EditionStatus.SKIPPED:
            audit.record(
                session,
                actor,
                "edition.compose",
                "edition",
                edition.id,
                before={"status": before} if before is not None else None,
                after={
                    "newsletter": newsletter.slug,
                    "date": edition.edition_date.isoformat(),
                    "status": edition.status,
                    "briefings": _order(edition),
                },
                note=edition.status_reason,
            )
        return _detail(session, edition, now), composed.created


Change = Callable[[Session, Edition], tuple[dict[str, Any], dict[str, Any]] | None]


def _edit(
    runtime: Runtime,
    actor: Actor,
    edition_id: int,
    action: str,
    change: Change,
    *,
    field: str | None = None,
    note: Callable[[], str | None] | None = None,
) -> EditionDetail:
    """Lock the edition, refuse unless it may still change, apply ``change`` (which
    renders, and returns what changed or None), clear a standing approval, audit."""
    actor.require(Role.EDITOR)
    now = utcnow()
    with _domain_errors(field), transaction(runtime.sessions) as session:
        # Locked like dispatcher.start: an edit never lands on a sending edition.
        edition = _load(session, edition_id, lock=True)
        if edition.status not in states.EDITABLE:
            raise Conflict(f"edition {edition.id} is {edition.status}; it can no longer change")
        changed = change(session, edition)
        if changed is not None:
            before, after = changed
            if edition.approved_at is not None:
                # What was approved is not what would go out any more.
                before["approved_by"], after["approved_by"] = edition.approved_by, None
                edition.approved_by = edition.approved_at = None
            audit.record(
                session,
                actor,
                action,
                "edition",
                edition.id,
                before=before,
                after=after,
                note=note() if note is not None else None,
            )
            session.flush()
        return _detail(session, edition, now)


def _arrangement(edition: Edition) -> dict[str, Any]:
    return {
        "briefings": _order(edition),
        "excluded": list(edition.excluded_briefing_ids or ()),
        "status": edition.status,
    }


def exclude(runtime: Runtime, actor: Actor, edition_id: int, briefing_id: int) -> EditionDetail:
    """Take a briefing out; it stays out when the edition is recomposed."""

    def change(session: Session, edition: Edition) -> tuple[dict[str, Any], dict[str, Any]]:
        before = _arrangement(edition)
        editing.exclude(session, edition, briefing_id, templates_dir=runtime.settings.templates_dir)
        return before, _arrangement(edition)

    return _edit(runtime, actor, edition_id, "edition.exclude", change, field="briefing_id")


def include(
    runtime: Runtime,
    actor: Actor,
    edition_id: int,
    briefing_id: int,
    position: int | None = None,
) -> EditionDetail:
    """Add back an excluded briefing, or one that arrived since (``available``), at
    ``position`` (0 is first; by default last)."""

    def change(session: Session, edition: Edition) -> tuple[dict[str, Any], dict[str, Any]]:
        before = _arrangement(edition)
        editing.include(
            session,
            edition,
            briefing_id,
            position,
            templates_dir=runtime.settings.templates_dir,
        )
        return before, _arrangement(edition)

    return _edit(runtime, actor, edition_id, "edition.include", change, field="briefing_id")


def reorder(
    runtime: Runtime, actor: Actor, edition_id: int, briefing_ids: Sequence[int]
) -> EditionDetail:
    """Put these briefings first, in this order; the others follow as they were."""

    def change(session: Session, edition: Edition) -> tuple[dict[str, Any], dict[str, Any]] | None:
        before = _order(edition)
        editing.reorder(
            session, edition, briefing_ids, templates_dir=runtime.settings.templates_dir
        )
        after = _order(edition)
        return ({"briefings": before}, {"briefings": after}) if after != before else None

    return _edit(runtime, actor, edition_id, "edition.reorder", change, field="briefing_ids")


def move(
    runtime: Runtime, actor: Actor, edition_id: int, briefing_id: int, offset: int
) -> EditionDetail:
    """Move a briefing up (-1) or down (+1); at either end it stays where it is."""

    def change(session: Session, edition: Edition) -> tuple[dict[str, Any], dict[str, Any]] | None:
        before = _order(edition)
        moved = editing.move(
            session, edition, briefing_id, offset, templates_dir=runtime.settings.templates_dir
        )
        return ({"briefings": before}, {"briefings": _order(edition)}) if moved else None

    return _edit(runtime, actor, edition_id, "edition.move", change, field="briefing_id")


def set_headline(
    runtime: Runtime, actor: Actor, edition_id: int, briefing_id: int, headline: str
) -> EditionDetail:
    """This edition's short headline for a briefing ('' clears it); whitespace collapsed,
    at most 300 characters. The default subject is made from the headlines too."""
    try:
        editing.clean_headline(headline)
    except ValueError as exc:
        raise Invalid(str(exc), "headline") from exc

    def change(session: Session, edition: Edition) -> tuple[dict[str, Any], dict[str, Any]] | None:
        before, after = editing.set_headline(
            session, edition, briefing_id, headline, templates_dir=runtime.settings.templates_dir
        )
        if before == after:
            return None
        return (
            {"briefing_id": briefing_id, "headline": before},
            {"briefing_id": briefing_id, "headline": after, "subject": edition.subject},
        )

    return _edit(runtime, actor, edition_id, "edition.headline", change, field="headline")


def retitle(
    runtime: Runtime,
    actor: Actor,
    edition_id: int,
    subject: str | None = None,
    preheader: str | None = None,
) -> EditionDetail:
    """Override the subject and/or preheader; '' goes back to the newsletter's template."""
    if subject is None and preheader is None:
        raise Invalid("give a subject or a preheader", "subject")
    for name, value in (("subject", subject), ("preheader", preheader)):
        if value is not None and len(" ".join(value.split())) > 300:
            raise Invalid(f"{name} is longer than 300 characters", name)

    def change(session: Session, edition: Edition) -> tuple[dict[str, Any], dict[str, Any]] | None:
        before = {
            "subject_override": edition.subject_override,
            "preheader_override": edition.preheader_override,
        }
        editing.retitle(
            edition,
            subject=subject,
            preheader=preheader,
            templates_dir=runtime.settings.templates_dir,
        )
        after = {
            "subject_override": edition.subject_override,
            "preheader_override": edition.preheader_override,
        }
        if after == before:
            return None
        return before, {**after, "subject": edition.subject, "preheader": edition.preheader}

    return _edit(runtime, actor, edition_id, "edition.retitle", change)


def recompose(runtime: Runtime, actor: Actor, edition_id: int) -> EditionDetail:
    """Take the candidates again (what arrived since, less what an editor excluded);
    briefings still in keep their order and headlines, newcomers follow them."""
    outcome: list[editing.Recomposed] = []

    def change(session: Session, edition: Edition) -> tuple[dict[str, Any], dict[str, Any]] | None:
        before = _arrangement(edition)
        outcome.append(
            editing.recompose(session, edition, templates_dir=runtime.settings.templates_dir)
        )
        after = _arrangement(edition)
        return (before, after) if after != before else None

    def note() -> str | None:
        done = outcome[0]
        return f"added {list(done.added)}, dropped {list(done.dropped)}"

    return _edit(runtime, actor, edition_id, "edition.recompose", change, note=note)


def delete_draft(runtime: Runtime, actor: Actor, edition_id: int) -> None:
    """Delete an edition that never started sending; its briefings become available to
    the next edition (and its date may be composed again)."""
    actor.require(Role.EDITOR)
    with transaction(runtime.sessions) as session:
        edition = _load(session, edition_id, lock=True)
        never_started = edition.send_started_at is None and (
            edition.status in states.EDITABLE or edition.status == EditionStatus.CANCELLED
        )
        if not never_started:
            raise Conflict(
                f"edition {edition.id} is {edition.status}: only editions that never started "
                "sending can be deleted"
            )
        before = {
            "newsletter": edition.newsletter.slug,
            "date": edition.edition_date.isoformat(),
            "status": edition.status,
            "subject": edition.subject,
            "briefings": _order(edition),
        }
        session.delete(edition)
        audit.record(session, actor, "edition.delete", "edition", edition_id, before=before)


# -- test sends -----------------------------------------------------------------------


def test_send(
    runtime: Runtime, actor: Actor, edition_id: int, addresses: Sequence[str]
) -> TestSendResult:
    """The rendered edition, subject marked "[TEST] ", to 1 to 10 addresses through the
    configured transport. Not in the ledger; marked so that nothing coming back counts
    for the edition; links that do nothing (as in a preview). At most 5 per edition in
    10 minutes (every attempt counts, from the audit log)."""
    actor.require(Role.EDITOR)
    cleaned: list[str] = []
    for given in addresses:
        try:
            cleaned.append(normalize_email(given))
        except InvalidAddress as exc:
            raise Invalid(f"{given!r}: {exc}", "addresses") from exc
    wanted = list(dict.fromkeys(cleaned))
    if not 1 <= len(wanted) <= MAX_TEST_ADDRESSES:
        raise Invalid(f"give 1 to {MAX_TEST_ADDRESSES} addresses", "addresses")
    now = utcnow()
    with transaction(runtime.sessions) as session:
        # Locked while counting and recording, so two requests cannot both take the
        # last test send of the window.
        edition = _load(session, edition_id, lock=True)
        if edition.html is None or edition.text is None or not edition.token_nonce:
            raise Conflict(f"edition {edition_id} has not been rendered")
        recent = list(
            session.scalars(
                select(AuditEntry.at)
                .where(
                    AuditEntry.action == "edition.test_send",
                    AuditEntry.target_kind == "edition",
                    AuditEntry.target_id == str(edition_id),
                    AuditEntry.at > now - TEST_SEND_WINDOW,
                )
                .order_by(AuditEntry.at)
            )
        )
        if len(recent) >= TEST_SENDS_PER_WINDOW:
            frees_at = recent[-TEST_SENDS_PER_WINDOW] + TEST_SEND_WINDOW
            wait = max(1.0, (frees_at - now).total_seconds())
            raise RateLimited(
                f"at most {TEST_SENDS_PER_WINDOW} test sends of an edition in "
                f"{int(TEST_SEND_WINDOW.total_seconds() // 60)} minutes: try again in "
                f"{int(wait)} s",
                retry_after=wait,
            )
        envelope = replace(
            envelope_for(edition), subject=TEST_PREFIX + edition.subject, test_send=True
        )
        known = select(Subscriber.email, Subscriber.name).where(Subscriber.email.in_(wanted))
        names = {address: name for address, name in session.execute(known)}
        audit.record(
            session,
            actor,
            "edition.test_send",
            "edition",
            edition_id,
            after={"addresses": wanted, "subject": envelope.subject},
        )
    link = _preview_link(runtime)
    recipients = [
        Recipient(number, address, names.get(address), link)
        for number, address in enumerate(wanted, start=1)
    ]
    with _domain_errors():
        transport = transport_for(runtime.settings)
        try:
            results = transport.send(envelope, recipients)
        finally:
            transport.close()
    by_number = {r.delivery_id: r for r in results}
    sent: list[str] = []
    failed: list[str] = []
    for recipient in recipients:
        result = by_number.get(recipient.delivery_id)
        if result is not None and result.outcome == Outcome.SENT:
            sent.append(recipient.email)
        else:
            why = (result.error or result.outcome) if result is not None else "no answer"
            failed.append(f"{recipient.email} ({why})")
    log.info(
        "edition.test_sent",
        extra={"edition_id": edition_id, "sent": len(sent), "failed": len(failed)},
    )
    if failed:
        shown = f"sent to {', '.join(sent)}; " if sent else ""
        raise Conflict(f"test send of edition {edition_id}: {shown}failed for {', '.join(failed)}")
    return TestSendResult(addresses=tuple(sent), subject=envelope.subject)


# -- approving and sending ------------------------------------------------------------


def _startable(edition: Edition) -> None:
    if edition.status != EditionStatus.READY:
        why = f" ({edition.status_reason})" if edition.status_reason else ""
        raise Conflict(f"edition {edition.id} is {edition.status}{why}: it cannot go out")


def approve(runtime: Runtime, actor: Actor, edition_id: int) -> EditionDetail:
    """Approve after the checks (any refusal: ChecksFailed). If a schedule run holds the
    edition for approval it goes to the workers now (refused after the run's deadline);
    otherwise it stays ready, approved."""
    actor.require(Role.EDITOR)
    now = utcnow()
    with _domain_errors(), transaction(runtime.sessions) as session:
        edition, run = _lock(session, edition_id)
        _startable(edition)
        _refusals(edition)
        before = {"status": edition.status, "approved_by": edition.approved_by}
        edition.approved_by, edition.approved_at = actor.label, now
        note = None
        if run is not None:
            runner.approve(session, run, now)
            note = run.reason
        audit.record(
            session,
            actor,
            "edition.approve",
            "edition",
            edition.id,
            before=before,
            after={"status": edition.status, "approved_by": actor.label},
            note=note,
        )
        session.flush()
        return _detail(session, edition, now)


def send_now(runtime: Runtime, actor: Actor, edition_id: int) -> EditionDetail:
    """Checks, approval if there is none, then the ledger is filled and the edition is
    handed to the workers (``mailer worker``, ``mailer serve``). Again on a sending
    edition: nothing more happens."""
    actor.require(Role.EDITOR)
    now = utcnow()
    with _domain_errors(), transaction(runtime.sessions) as session:
        edition, run = _lock(session, edition_id)
        if edition.status == EditionStatus.SENDING:
            return _detail(session, edition, now)
        _startable(edition)
        _refusals(edition)
        before = {"status": edition.status, "scheduled_for": _iso(edition.scheduled_for)}
        approval = _approval(edition, actor, now)
        queued = _start(session, edition, run, now)
        # Gone now: a time set for later no longer stands.
        edition.scheduled_for = None
        audit.record(
            session,
            actor,
            "edition.send_now",
            "edition",
            edition.id,
            before=before,
            after={"status": edition.status, "queued": queued, "scheduled_for": None, **approval},
        )
        session.flush()
        return _detail(session, edition, now)


def _start(session: Session, edition: Edition, run: ScheduleRun | None, now: datetime) -> int:
    """Start the send; through the holding run if there is one (it records the run as
    sent, or refuses after its deadline). Returns how many deliveries were queued."""
    if run is not None:
        runner.approve(session, run, now)
        return ledger.counts(session, edition.id)[DeliveryStatus.QUEUED]
    return dispatcher.start(session, edition)


def schedule_send(runtime: Runtime, actor: Actor, edition_id: int, at: datetime) -> EditionDetail:
    """Send at ``at`` (timezone-aware, in the future), once, started by the leading
    scheduler. Checks first; records the approval if there is none."""
    actor.require(Role.EDITOR)
    if at.tzinfo is None or at.utcoffset() is None:
        raise Invalid("give the send time with its timezone", "at")
    when = at.astimezone(UTC)
    now = utcnow()
    if when <= now:
        raise Invalid(f"{at.isoformat(timespec='minutes')} has passed: give a later time", "at")
    with _domain_errors(), transaction(runtime.sessions) as session:
        edition, run = _lock(session, edition_id)
        _startable(edition)
        _refusals(edition)
        if run is not None and run.deadline_at is not None and when >= run.deadline_at:
            raise Invalid(
                f"the edition is held for approval until "
                f"{run.deadline_at.isoformat(timespec='minutes')}, and skipped after: give "
                "an earlier time, or approve it now",
                "at",
            )
        before = {"scheduled_for": _iso(edition.scheduled_for)}
        edition.scheduled_for = when
        approval = _approval(edition, actor, now)
        audit.record(
            session,
            actor,
            "edition.schedule",
            "edition",
            edition.id,
            before=before,
            after={"scheduled_for": when.isoformat(), **approval},
        )
        session.flush()
        return _detail(session, edition, now)


def unschedule(runtime: Runtime, actor: Actor, edition_id: int) -> EditionDetail:
    """Drop the one-off send time (the approval stays)."""
    actor.require(Role.EDITOR)
    now = utcnow()
    with _domain_errors(), transaction(runtime.sessions) as session:
        edition = _load(session, edition_id, lock=True)
        if edition.scheduled_for is None:
            return _detail(session, edition, now)
        _startable(edition)
        before = {"scheduled_for": _iso(edition.scheduled_for)}
        edition.scheduled_for = None
        audit.record(
            session,
            actor,
            "edition.unschedule",
            "edition",
            edition.id,
            before=before,
            after={"scheduled_for": None},
        )
        session.flush()
        return _detail(session, edition, now)


def _lifecycle(
    runtime: Runtime,
    actor: Actor,
    edition_id: int,
    action: str,
    change: Callable[[Session, Edition], dict[str, Any]],
) -> EditionDetail:
    actor.require(Role.EDITOR)
    now = utcnow()
    with _domain_errors(), transaction(runtime.sessions) as session:
        edition, _run = _lock(session, edition_id)
        before = {"status": edition.status}
        extra = change(session, edition)
        audit.record(
            session,
            actor,
            action,
            "edition",
            edition.id,
            before=before,
            after={"status": edition.status, **extra},
        )
        session.flush()
        return _detail(session, edition, now)


def pause(runtime: Runtime, actor: Actor, edition_id: int) -> EditionDetail:
    """Stop claiming new batches (those in flight finish)."""

    def change(session: Session, edition: Edition) -> dict[str, Any]:
        dispatcher.pause(session, edition, f"paused by {actor.name}")
        return {}

    return _lifecycle(runtime, actor, edition_id, "edition.pause", change)


def resume(runtime: Runtime, actor: Actor, edition_id: int) -> EditionDetail:
    """Let a paused edition be sent again (by the workers, or ``send``)."""

    def change(session: Session, edition: Edition) -> dict[str, Any]:
        dispatcher.resume(session, edition)
        return {}

    return _lifecycle(runtime, actor, edition_id, "edition.resume", change)


def cancel(runtime: Runtime, actor: Actor, edition_id: int) -> EditionDetail:
    """Stop for good: nobody still queued gets it. Cancelled before it started, the
    edition gives its briefings back to the next one."""

    def change(session: Session, edition: Edition) -> dict[str, Any]:
        skipped = dispatcher.cancel(session, edition, f"cancelled by {actor.name}")
        scheduled = _iso(edition.scheduled_for)
        edition.scheduled_for = None
        return {"skipped": skipped, "scheduled_for_was": scheduled}

    return _lifecycle(runtime, actor, edition_id, "edition.cancel", change)


def send(
    runtime: Runtime,
    actor: Actor,
    edition_id: int,
    on_progress: Callable[[dict[str, int]], None] | None = None,
) -> dict[str, int]:
    """Send here and now, blocking until the ledger is drained (or the edition paused,
    or the transport down); resumes where any earlier send stopped, and never mails
    anyone twice. A ready edition is checked, approved and started first. Returns the
    deliveries by status."""
    actor.require(Role.EDITOR)
    now = utcnow()
    with _domain_errors(), transaction(runtime.sessions) as session:
        edition, run = _lock(session, edition_id)
        if edition.status == EditionStatus.READY:
            _refusals(edition)
            approval = _approval(edition, actor, now)
            queued = _start(session, edition, run, now)
            edition.scheduled_for = None
            audit.record(
                session,
                actor,
                "edition.send",
                "edition",
                edition.id,
                before={"status": EditionStatus.READY},
                after={"status": edition.status, "queued": queued, **approval},
            )
        elif edition.status in (EditionStatus.DRAFT, EditionStatus.SKIPPED):
            _startable(edition)
    with _domain_errors():
        settings = runtime.dispatch_settings()
        transport = transport_for(runtime.settings)
        try:
            return send_edition(
                runtime.sessions, edition_id, transport, settings, on_progress=on_progress
            )
        finally:
            transport.close()


def reconcile(
    runtime: Runtime,
    actor: Actor,
    edition_id: int,
    *,
    grace_hours: float | None = None,
    decision: Decision | None = None,
) -> Reconciled:
    """Deliveries still ``unknown`` past the grace period (provider events that arrived
    are applied first); ``decision`` resends them or gives them up, on every row."""
    actor.require(Role.EDITOR)
    hours = runtime.settings.reconcile_grace_hours if grace_hours is None else grace_hours
    if hours < 0:
        raise Invalid("the grace period cannot be negative", "grace_hours")
    grace = timedelta(hours=hours)
    apply_pending(runtime.sessions, Policy.from_settings(runtime.settings))
    with _domain_errors(), transaction(runtime.sessions) as session:
        try:
            view = reconcile_review(session, edition_id, grace)
        except ReconcileError as exc:
            raise NotFound(str(exc)) from exc
        changed = 0
        if decision is not None:
            edition = _load(session, edition_id, lock=True)
            before = {"status": edition.status, "unknown_due": len(view.due)}
            changed = reconcile_decide(session, edition_id, decision, grace, operator=actor.name)
            if changed:
                audit.record(
                    session,
                    actor,
                    "edition.reconcile",
                    "edition",
                    edition_id,
                    before=before,
                    after={"status": edition.status, "decision": decision, "changed": changed},
                )
    return Reconciled(view=view, changed=changed)
