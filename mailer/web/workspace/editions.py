"""The edition editor: briefings in order, headlines, subject and preheader, the preview at
both widths and as a subscriber, the checks, test sends, approval and sending.

Every action is one call of ``mailer.app.editions``. A plain form post answers with a
redirect back to the editor (so it works without JavaScript); an htmx post answers with
the editor's body, re-rendered, so the preview follows every change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from mailer.app import editions, newsletters, subscribers
from mailer.app.actors import Actor
from mailer.app.errors import Invalid, NotFound
from mailer.rendering.render import GMAIL_CLIP_BYTES, HTML_BUDGET_BYTES
from mailer.runtime import Runtime
from mailer.schedule.slots import parse_timezone
from mailer.web import auth
from mailer.web.security import PREVIEW_HEADERS
from mailer.web.views import is_htmx, page, until

router = APIRouter()

# What a finished action says, by key: the redirect carries the key, never free text.
NOTICES = {
    "saved": "Saved. The preview shows the change.",
    "recomposed": "Recomposed from the briefings available now.",
    "test-sent": "Test sent.",
    "approved": "Approved.",
    "started": "Handed to the workers: sending has started.",
    "scheduled": "Scheduled.",
    "unscheduled": "No longer scheduled.",
    "paused": "Paused: batches in flight finish, nothing new is claimed.",
    "resumed": "Resumed.",
    "cancelled": "Cancelled: nobody still queued will get it.",
    "composed": "Composed.",
}
SUBJECT_LIMIT = 90
PREHEADER_HINT = 100
LIST_STATUSES = ("draft", "ready", "sending", "paused", "sent", "cancelled", "skipped")
_ADDRESS_SPLIT = re.compile(r"[\s,;]+")


def _context(
    request: Request,
    info: auth.SessionInfo,
    edition_id: int,
    *,
    view: str = "both",
    as_email: str | None = None,
    notice: str | None = None,
    sent_to: tuple[str, ...] = (),
) -> dict[str, Any]:
    runtime = auth.runtime_of(request)
    detail = editions.get_edition(runtime, info.actor, edition_id)
    checks = editions.checks(runtime, info.actor, edition_id) if detail.html_bytes else []
    text = None
    if view == "text" and detail.html_bytes:
        text = editions.preview(runtime, info.actor, edition_id, as_email=as_email, part="text")
    return {
        "e": detail,
        "checks": checks,
        "refusals": [c for c in checks if c.level == "refuse"],
        "view": view if view in ("both", "desktop", "phone", "text") else "both",
        "as_email": as_email or "",
        "text": text,
        "notice": notice,
        "sent_to": sent_to,
        "subject_limit": SUBJECT_LIMIT,
        "preheader_hint": PREHEADER_HINT,
        "budget": HTML_BUDGET_BYTES,
        "clip": GMAIL_CLIP_BYTES,
        "version": detail.rendered_at.timestamp() if detail.rendered_at else 0,
        "progress": editions.progress(runtime, info.actor, edition_id)
        if detail.status in ("sending", "paused", "sent", "cancelled")
        else None,
    }


def _after(
    request: Request, info: auth.SessionInfo, edition_id: int, done: str, **extra: Any
) -> Response:
    """Where an action lands: the editor's body for htmx, a redirect for a plain form."""
    if is_htmx(request):
        context = _context(request, info, edition_id, notice=NOTICES[done], **extra)
        return page(request, "workspace/_edition.html", context)
    return RedirectResponse(f"/editions/{edition_id}?done={done}", status_code=303)


@router.get("/editions", response_class=HTMLResponse)
def edition_list(
    request: Request,
    info: auth.Editor,
    status: Annotated[str | None, Query(max_length=20)] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    runtime = auth.runtime_of(request)
    statuses = [status] if status in LIST_STATUSES else None
    rows = editions.list_editions(
        runtime, info.actor, statuses=statuses, limit=50, before_id=before
    )
    return page(
        request,
        "workspace/editions.html",
        {
            "rows": rows,
            "status": status if statuses else "",
            "statuses": LIST_STATUSES,
            "next_before": rows[-1].id if len(rows) == 50 else None,
            "newsletters": newsletters.list_newsletters(runtime, info.actor),
        },
    )


@router.post("/editions/compose")
def compose(
    request: Request,
    info: auth.Editor,
    newsletter: Annotated[str, Form(max_length=64)],
    day: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    when = None
    if day:
        try:
            when = datetime.strptime(day, "%Y-%m-%d").date()
        except ValueError as exc:
            raise Invalid(f"date {day!r}: use YYYY-MM-DD", field="day") from exc
    detail, _created = editions.compose(auth.runtime_of(request), info.actor, newsletter, when)
    return RedirectResponse(f"/editions/{detail.id}?done=composed", status_code=303)


@router.get("/editions/{edition_id}", response_class=HTMLResponse)
def editor(
    request: Request,
    info: auth.Editor,
    edition_id: int,
    view: Annotated[str, Query(max_length=10)] = "both",
    as_email: Annotated[str | None, Query(alias="as", max_length=320)] = None,
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    context = _context(
        request,
        info,
        edition_id,
        view=view,
        as_email=as_email or None,
        notice=NOTICES.get(done or ""),
    )
    name = "workspace/_edition.html" if is_htmx(request) else "workspace/edition.html"
    return page(request, name, context)


@router.get("/editions/{edition_id}/preview", response_class=HTMLResponse)
def preview_frame(
    request: Request,
    info: auth.Editor,
    edition_id: int,
    as_email: Annotated[str | None, Query(alias="as", max_length=320)] = None,
) -> HTMLResponse:
    """The email's HTML for the editor's iframe: never a working token (see app.editions)."""
    shown = editions.preview(
        auth.runtime_of(request), info.actor, edition_id, as_email=as_email or None, part="html"
    )
    return HTMLResponse(shown.content, headers=PREVIEW_HEADERS)


@router.get("/editions/{edition_id}/preview.txt", response_class=PlainTextResponse)
def preview_text(
    request: Request,
    info: auth.Editor,
    edition_id: int,
    as_email: Annotated[str | None, Query(alias="as", max_length=320)] = None,
) -> PlainTextResponse:
    shown = editions.preview(
        auth.runtime_of(request), info.actor, edition_id, as_email=as_email or None, part="text"
    )
    return PlainTextResponse(shown.content)


@router.get("/editions/{edition_id}/inbox", response_class=HTMLResponse)
def inbox_mock(
    request: Request,
    info: auth.Editor,
    edition_id: int,
    subject: Annotated[str, Query(max_length=1000)] = "",
    preheader: Annotated[str, Query(max_length=1000)] = "",
) -> HTMLResponse:
    """How a subject and preheader being typed would read in an inbox (nothing is saved)."""
    detail = editions.get_edition(auth.runtime_of(request), info.actor, edition_id)
    return page(
        request,
        "workspace/_inbox.html",
        {
            "e": detail,
            "subject": " ".join(subject.split()),
            "preheader": " ".join(preheader.split()),
            "subject_limit": SUBJECT_LIMIT,
            "preheader_hint": PREHEADER_HINT,
        },
    )


@router.get("/editions/{edition_id}/checks", response_class=HTMLResponse)
def checks_panel(
    request: Request, info: auth.Editor, edition_id: int, links: bool = False
) -> HTMLResponse:
    runtime = auth.runtime_of(request)
    found = editions.checks(runtime, info.actor, edition_id, check_links=links)
    return page(
        request,
        "workspace/_checks.html",
        {
            "checks": found,
            "e": editions.get_edition(runtime, info.actor, edition_id),
            "linked": links,
        },
    )


@router.get("/editions/{edition_id}/progress", response_class=HTMLResponse)
def progress_panel(
    request: Request, info: auth.Editor, edition_id: int, compact: bool = False
) -> HTMLResponse:
    runtime = auth.runtime_of(request)
    return page(
        request,
        "workspace/_progress.html",
        {"p": editions.progress(runtime, info.actor, edition_id), "compact": compact},
    )


@router.get("/editions/{edition_id}/deadline", response_class=PlainTextResponse)
def deadline(request: Request, info: auth.Editor, edition_id: int) -> PlainTextResponse:
    """The approval countdown, refreshed by the page every half minute."""
    detail = editions.get_edition(auth.runtime_of(request), info.actor, edition_id)
    return PlainTextResponse(until(detail.approval_deadline) if detail.held else "no longer held")


@router.get("/editions/{edition_id}/subscribers", response_class=HTMLResponse)
def address_suggestions(
    request: Request,
    info: auth.Editor,
    edition_id: int,
    as_email: Annotated[str, Query(alias="as", max_length=320)] = "",
) -> HTMLResponse:
    """Addresses that begin with what is typed, for the "as a subscriber" field."""
    found = subscribers.suggest_addresses(auth.runtime_of(request), info.actor, as_email, limit=8)
    return page(request, "workspace/_suggestions.html", {"addresses": found})


@router.post("/editions/{edition_id}/retitle")
def retitle(
    request: Request,
    info: auth.Editor,
    edition_id: int,
    subject: Annotated[str, Form(max_length=1000)] = "",
    preheader: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    editions.retitle(
        auth.runtime_of(request), info.actor, edition_id, subject=subject, preheader=preheader
    )
    return _after(request, info, edition_id, "saved")


@router.post("/editions/{edition_id}/items/{briefing_id}/move")
def move(
    request: Request,
    info: auth.Editor,
    edition_id: int,
    briefing_id: int,
    offset: Annotated[int, Form(ge=-100, le=100)],
) -> Response:
    editions.move(auth.runtime_of(request), info.actor, edition_id, briefing_id, offset)
    return _after(request, info, edition_id, "saved")


@router.post("/editions/{edition_id}/items/{briefing_id}/exclude")
def exclude(request: Request, info: auth.Editor, edition_id: int, briefing_id: int) -> Response:
    editions.exclude(auth.runtime_of(request), info.actor, edition_id, briefing_id)
    return _after(request, info, edition_id, "saved")


@router.post("/editions/{edition_id}/items/{briefing_id}/include")
def include(request: Request, info: auth.Editor, edition_id: int, briefing_id: int) -> Response:
    editions.include(auth.runtime_of(request), info.actor, edition_id, briefing_id)
    return _after(request, info, edition_id, "saved")


@router.post("/editions/{edition_id}/items/{briefing_id}/headline")
def headline(
    request: Request,
    info: auth.Editor,
    edition_id: int,
    briefing_id: int,
    headline: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    editions.set_headline(auth.runtime_of(request), info.actor, edition_id, briefing_id, headline)
    return _after(request, info, edition_id, "saved")


@router.post("/editions/{edition_id}/delete")
def delete(request: Request, info: auth.Editor, edition_id: int) -> Response:
    editions.delete_draft(auth.runtime_of(request), info.actor, edition_id)
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": "/editions"})
    return RedirectResponse("/editions", status_code=303)


@router.post("/editions/{edition_id}/test-send")
def test_send(
    request: Request,
    info: auth.Editor,
    edition_id: int,
    addresses: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    wanted = [a for a in _ADDRESS_SPLIT.split(addresses) if a]
    result = editions.test_send(auth.runtime_of(request), info.actor, edition_id, wanted)
    return _after(request, info, edition_id, "test-sent", sent_to=result.addresses)


@router.post("/editions/{edition_id}/schedule")
def schedule(
    request: Request,
    info: auth.Editor,
    edition_id: int,
    at: Annotated[str, Form(max_length=40)],
    zone: Annotated[str, Form(max_length=64)] = "UTC",
) -> Response:
    """``at`` is a wall-clock time (datetime-local) in ``zone``, the newsletter's by default."""
    try:
        tz = parse_timezone(zone)  # a ScheduleError is a ValueError
        when = datetime.fromisoformat(at).replace(tzinfo=tz)
    except (ValueError, KeyError) as exc:
        raise Invalid(
            f"send time {at!r}: give a date and time, e.g. 2026-12-03 06:30", "at"
        ) from exc
    editions.schedule_send(auth.runtime_of(request), info.actor, edition_id, when)
    return _after(request, info, edition_id, "scheduled")


# Actions that take no fields: what each calls, and what it says when done. Registered
# last, so that the routes above with fields of their own match first.
_ACTIONS: dict[str, tuple[Callable[[Runtime, Actor, int], object], str]] = {
    "recompose": (editions.recompose, "recomposed"),
    "approve": (editions.approve, "approved"),
    "send": (editions.send_now, "started"),
    "unschedule": (editions.unschedule, "unscheduled"),
    "pause": (editions.pause, "paused"),
    "resume": (editions.resume, "resumed"),
    "cancel": (editions.cancel, "cancelled"),
}


@router.post("/editions/{edition_id}/{action}")
def act(request: Request, info: auth.Editor, edition_id: int, action: str) -> Response:
    if action not in _ACTIONS:
        raise NotFound(f"there is no {action!r} for an edition")
    run, done = _ACTIONS[action]
    run(auth.runtime_of(request), info.actor, edition_id)
    return _lifecycle_answer(request, info, edition_id, done)


def _lifecycle_answer(
    request: Request, info: auth.SessionInfo, edition_id: int, done: str
) -> Response:
    # From the Today page the buttons live in a progress card: answer with that card.
    if is_htmx(request) and request.headers.get("HX-Target", "").startswith("progress-"):
        runtime = auth.runtime_of(request)
        return page(
            request,
            "workspace/_progress.html",
            {"p": editions.progress(runtime, info.actor, edition_id), "compact": True},
        )
    return _after(request, info, edition_id, done)
