"""Rendering pages: one Jinja2 environment, the filters the pages share, the page helper.

Autoescaping is on for every template (Jinja2Templates turns it on for .html), so
anything a briefing, a subscriber or an editor wrote is escaped wherever it appears.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from mailer.db.base import utcnow

PAGES = Path(__file__).parent / "pages"
# What a page shows for a value that does not exist (yet): an en dash.
NONE = "\u2013"


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def thousands(value: int | float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,.0f}" if isinstance(value, float) else f"{value:,}"


def duration(seconds: float | None) -> str:
    """A span for people: "45 s", "12 min", "2 h 05 min", "3 days"."""
    if seconds is None:
        return NONE
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} days"


def until(moment: datetime | None, now: datetime | None = None) -> str:
    """How long from now to ``moment``: "in 1 h 20 min", or "5 min ago"."""
    if moment is None:
        return NONE
    delta = (moment - (now or utcnow())).total_seconds()
    return f"in {duration(delta)}" if delta >= 0 else f"{duration(-delta)} ago"


def at(moment: datetime | None, zone: str | None = None, fmt: str = "%a %d %b %H:%M") -> str:
    """A moment in a zone (UTC by default), e.g. "Tue 01 Dec 06:30"."""
    if moment is None:
        return NONE
    tz = ZoneInfo(zone) if zone else UTC
    return moment.astimezone(tz).strftime(fmt)


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else ""


def plural(count: int, singular: str, many: str | None = None) -> str:
    return f"{count:,} {singular if count == 1 else (many or singular + 's')}"


@lru_cache(maxsize=4)
def _rendered_options(choices: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, int]]:
    return tuple(f"<option>{escape(c)}</option>" for c in choices), {
        c: i for i, c in enumerate(choices)
    }


def options(choices: tuple[str, ...], selected: str | None = None) -> Markup:
    """The ``<option>``s of a long list that never changes (the time zones), escaped once
    per process: looping over 500 of them in a template was most of a page's work."""
    rendered, index = _rendered_options(choices)
    at = index.get(selected) if selected else None
    if at is None:
        return Markup("".join(rendered))  # noqa: S704 - every part escaped above
    parts = list(rendered)
    parts[at] = f"<option selected>{escape(choices[at])}</option>"
    return Markup("".join(parts))  # noqa: S704 - every part escaped


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=PAGES)
    env = templates.env
    # The pages ship in the package and change only with it: no stat() of each template
    # (and its parents) on every render to see whether it changed on disk.
    env.auto_reload = False
    env.filters.update(
        thousands=thousands, duration=duration, until=until, at=at, iso=iso, plural=plural
    )
    env.globals["now"] = utcnow
    env.globals["options"] = options
    return templates


def page(
    request: Request, name: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """Render ``name`` with what every workspace page needs: the account and its CSRF token."""
    info = getattr(request.state, "session_info", None)
    full: dict[str, Any] = {
        "account": info.account if info else None,
        "csrf": info.csrf_token if info else "",
        "htmx": is_htmx(request),
        "path": request.url.path,
    }
    full.update(context or {})
    response: HTMLResponse = request.app.state.pages.TemplateResponse(
        request, name, full, status_code=status
    )
    return response
