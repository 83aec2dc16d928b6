"""The briefings inbox: what was pulled and pushed, its source and state, pull errors; one
briefing as parsed, and an editor's correction of its headline or lead."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mailer.app import briefings
from mailer.app.errors import Invalid
from mailer.web import auth
from mailer.web.views import is_htmx, page

router = APIRouter()
PAGE_SIZE = 50
STATES = ("draft", "ready", "sent", "archived")


def _cursor(text: str | None) -> tuple[datetime, int] | None:
    """``<published_at ISO>_<id>``: where the previous page ended."""
    if not text:
        return None
    when, _, ident = text.rpartition("_")
    try:
        return datetime.fromisoformat(when), int(ident)
    except ValueError as exc:
        raise Invalid("the page link is malformed", field="before") from exc


@router.get("/briefings", response_class=HTMLResponse)
def inbox(
    request: Request,
    info: auth.Editor,
    status: Annotated[str | None, Query(max_length=20)] = None,
    source: Annotated[str | None, Query(max_length=100)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    before: Annotated[str | None, Query(max_length=80)] = None,
) -> HTMLResponse:
    runtime = auth.runtime_of(request)
    state = status if status in STATES else None
    rows = briefings.list_briefings(
        runtime,
        info.actor,
        status=state,
        source=source or None,
        search=q or None,
        limit=PAGE_SIZE,
        before=_cursor(before),
    )
    last = rows[-1] if len(rows) == PAGE_SIZE else None
    context = {
        "rows": rows,
        "status": state or "",
        "source": source or "",
        "q": q or "",
        "states": STATES,
        "sources": briefings.list_sources(runtime, info.actor),
        "errors": briefings.recent_pull_errors(runtime, info.actor, limit=10),
        "next_before": f"{last.published_at.isoformat()}_{last.id}" if last else None,
    }
    return page(request, "workspace/briefings.html", context)


@router.get("/briefings/{briefing_id}", response_class=HTMLResponse)
def briefing_page(
    request: Request,
    info: auth.Editor,
    briefing_id: int,
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    detail = briefings.get_briefing(auth.runtime_of(request), info.actor, briefing_id)
    notice = "Correction saved; drafts that carry it were re-rendered." if done == "saved" else None
    return page(request, "workspace/briefing.html", {"b": detail, "notice": notice})


@router.post("/briefings/{briefing_id}/correct")
def correct(
    request: Request,
    info: auth.Editor,
    briefing_id: int,
    title: Annotated[str, Form(max_length=2000)] = "",
    lead: Annotated[str, Form(max_length=10000)] = "",
) -> Response:
    detail = briefings.correct_briefing(
        auth.runtime_of(request), info.actor, briefing_id, title=title, lead=lead
    )
    if is_htmx(request):
        return page(
            request,
            "workspace/briefing.html",
            {"b": detail, "notice": "Correction saved; drafts that carry it were re-rendered."},
        )
    return RedirectResponse(f"/briefings/{briefing_id}?done=saved", status_code=303)


@router.post("/briefings/{briefing_id}/status")
def set_status(
    request: Request,
    info: auth.Editor,
    briefing_id: int,
    status: Annotated[str, Form(max_length=20)],
) -> Response:
    briefings.set_status(auth.runtime_of(request), info.actor, briefing_id, status)
    return RedirectResponse(f"/briefings/{briefing_id}", status_code=303)
