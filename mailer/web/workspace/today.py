"""``GET /``: the Today page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mailer.app.today import today
from mailer.web import auth
from mailer.web.views import page

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def today_page(request: Request, info: auth.Editor) -> HTMLResponse:
    return page(request, "workspace/today.html", {"t": today(auth.runtime_of(request), info.actor)})
