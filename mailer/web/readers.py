"""Reader pages: subscribe, confirm, preferences, an edition on the web, the archive.

Thin routes over ``mailer.app.readers``: they parse the form, call one function and
render a page. Every page works as a plain HTML form without JavaScript (reader pages
allow no scripts at all, see ``security.py``). A GET never changes anything, since link
scanners fetch every URL of an email; the link's signed token is what lets a POST act,
so these forms need no session and set no cookie.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from mailer.app import readers
from mailer.app.errors import AppError, Invalid, NotFound, RateLimited
from mailer.runtime import Runtime
from mailer.web.auth import client_of
from mailer.web.limits import MAX_ID, FormRefused, read_form
from mailer.web.security import EDITION_WEB_HEADERS

log = logging.getLogger(__name__)
router = APIRouter()
T = TypeVar("T")

# The honeypot: a field people never see (hidden by the page's style and out of the tab
# order), named so that form-filling bots fill it in.
HONEYPOT = "website"


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    response: HTMLResponse = request.app.state.pages.TemplateResponse(
        request, name, context, status_code=status
    )
    return response


def _problem(request: Request, exc: AppError | readers.TokenError) -> HTMLResponse:
    if isinstance(exc, readers.TokenError):
        return _page(request, "link_invalid.html", 400, reason=str(exc))
    if isinstance(exc, NotFound):
        return _page(request, "reader_error.html", 404, heading="Not found", message=exc.message)
    if isinstance(exc, RateLimited):
        response = _page(
            request, "reader_error.html", 429, heading="Slow down", message=exc.message
        )
        response.headers["Retry-After"] = str(max(1, int(exc.retry_after)))
        return response
    status = 422 if isinstance(exc, Invalid) else 409
    return _page(
        request, "reader_error.html", status, heading="That did not work", message=exc.message
    )


def _field(form: FormData, key: str) -> str:
    value = form.get(key, "")
    return value if isinstance(value, str) else ""


def _is_id(value: str) -> bool:
    return value.isascii() and value.isdigit() and 0 < int(value) <= MAX_ID


def _attempt(request: Request, action: Callable[[], T]) -> T | HTMLResponse:
    try:
        return action()
    except (AppError, readers.TokenError) as exc:
        return _problem(request, exc)


# -- subscribe ------------------------------------------------------------------------


@router.get("/subscribe/{slug}", response_class=HTMLResponse)
def subscribe_form(request: Request, slug: str) -> Response:
    form = _attempt(request, lambda: readers.subscribe_form(_runtime(request), slug))
    if isinstance(form, Response):
        return form
    return _page(request, "subscribe.html", form=form, error=None, values={})


@router.post("/subscribe/{slug}", response_class=HTMLResponse)
async def subscribe(request: Request, slug: str) -> Response:
    # The form read here rather than by FastAPI's Form parameters, whose validation was
    # an eighth of a sign-up's CPU. A list value that is not an id names no list.
    runtime = _runtime(request)
    try:
        posted = await read_form(request)
    except FormRefused:
        return _page(
            request,
            "reader_error.html",
            400,
            heading="That did not work",
            message="the request was not a form we accept",
        )
    email, name, timezone, website = (
        _field(posted, key) for key in ("email", "name", "timezone", HONEYPOT)
    )
    lists = [int(v) for v in posted.getlist("lists") if isinstance(v, str) and _is_id(v)]
    signed = readers.subscribe(
        runtime,
        slug,
        email=email,
        name=name,
        list_ids=lists,
        timezone=timezone,
        client=client_of(request),
        honeypot=website,
    )
    try:
        # Written with the other sign-ups of this moment by the process's writer thread
        # (the loop never waits for the database), and answered once committed.
        answer = await asyncio.wrap_future(signed)
    except Invalid as exc:
        # The form again, with what was typed: a read, in a worker thread.
        form = await run_in_threadpool(
            _attempt, request, lambda: readers.subscribe_form(runtime, slug)
        )
        if isinstance(form, Response):
            return form
        values = {"email": email, "name": name, "lists": lists, "timezone": timezone}
        return _page(request, "subscribe.html", 422, form=form, error=exc.message, values=values)
    except AppError as exc:
        return _problem(request, exc)
    return _page(request, "subscribed.html", answer=answer)


# -- confirm --------------------------------------------------------------------------


@router.get("/confirm/email/{token}", response_class=HTMLResponse)
def email_change_page(request: Request, token: str) -> Response:
    view = _attempt(request, lambda: readers.email_change(_runtime(request), token))
    if isinstance(view, Response):
        return view
    return _page(request, "confirm_email.html", view=view, done=False, action=request.url.path)


@router.post("/confirm/email/{token}", response_class=HTMLResponse)
def email_change(request: Request, token: str) -> Response:
    runtime, client = _runtime(request), client_of(request)
    view = _attempt(request, lambda: readers.confirm_email_change(runtime, token, client=client))
    if isinstance(view, Response):
        return view
    return _page(request, "confirm_email.html", view=view, done=True, action=request.url.path)


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(request: Request, token: str) -> Response:
    view = _attempt(request, lambda: readers.confirmation(_runtime(request), token))
    if isinstance(view, Response):
        return view
    return _page(request, "confirm.html", view=view, action=request.url.path)


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(request: Request, token: str) -> Response:
    runtime, client = _runtime(request), client_of(request)
    view = _attempt(request, lambda: readers.confirm(runtime, token, client=client))
    if isinstance(view, Response):
        return view
    return _page(request, "confirmed.html", view=view)


# -- preferences ----------------------------------------------------------------------


def _preferences(
    request: Request, token: str, action: Callable[[], readers.PreferencesView], notice: str
) -> Response:
    view = _attempt(request, action)
    if isinstance(view, Response):
        return view
    return _page(request, "preferences.html", view=view, base=f"/p/{token}", notice=notice)


@router.get("/p/{token}", response_class=HTMLResponse)
def preferences_page(request: Request, token: str) -> Response:
    return _preferences(
        request, token, lambda: readers.preferences_page(_runtime(request), token), ""
    )


@router.post("/p/{token}", response_class=HTMLResponse)
def one_click(request: Request, token: str) -> Response:
    """RFC 8058: a mailbox provider's one-click POST to the List-Unsubscribe URL of a
    reader email (a confirmation) leaves everything."""
    runtime, client = _runtime(request), client_of(request)
    return _preferences(
        request,
        token,
        lambda: readers.leave(runtime, token, client=client),
        "You're unsubscribed from everything.",
    )


@router.post("/p/{token}/lists", response_class=HTMLResponse)
def set_lists(
    request: Request, token: str, lists: Annotated[list[int] | None, Form()] = None
) -> Response:
    runtime, client = _runtime(request), client_of(request)
    return _preferences(
        request,
        token,
        lambda: readers.set_lists(runtime, token, lists or [], client=client),
        "Your lists are saved.",
    )


@router.post("/p/{token}/pause", response_class=HTMLResponse)
def pause(request: Request, token: str, length: Annotated[str, Form()] = "") -> Response:
    runtime = _runtime(request)
    return _preferences(
        request, token, lambda: readers.pause(runtime, token, length), "Your emails are paused."
    )


@router.post("/p/{token}/resume", response_class=HTMLResponse)
def resume(request: Request, token: str) -> Response:
    runtime = _runtime(request)
    return _preferences(
        request, token, lambda: readers.resume(runtime, token), "Your emails are back on."
    )


@router.post("/p/{token}/timezone", response_class=HTMLResponse)
def set_timezone(request: Request, token: str, timezone: Annotated[str, Form()] = "") -> Response:
    runtime = _runtime(request)
    return _preferences(
        request,
        token,
        lambda: readers.set_timezone(runtime, token, timezone),
        "Your time zone is saved.",
    )


@router.post("/p/{token}/email", response_class=HTMLResponse)
def change_email(request: Request, token: str, new_email: Annotated[str, Form()] = "") -> Response:
    runtime = _runtime(request)
    return _preferences(
        request,
        token,
        lambda: readers.request_email_change(runtime, token, new_email),
        "We've sent a link to the new address. Your emails keep going to the current one "
        "until you press it.",
    )


@router.post("/p/{token}/leave", response_class=HTMLResponse)
def leave(request: Request, token: str) -> Response:
    runtime, client = _runtime(request), client_of(request)
    return _preferences(
        request,
        token,
        lambda: readers.leave(runtime, token, client=client),
        "You're unsubscribed from everything. Changed your mind? Come back below.",
    )


@router.post("/p/{token}/come-back", response_class=HTMLResponse)
def come_back(
    request: Request, token: str, lists: Annotated[list[int] | None, Form()] = None
) -> Response:
    runtime, client = _runtime(request), client_of(request)
    return _preferences(
        request,
        token,
        lambda: readers.come_back(runtime, token, lists or [], client=client),
        "Welcome back: we've emailed you a link to confirm.",
    )


@router.post("/p/{token}/undo", response_class=HTMLResponse)
def undo(request: Request, token: str) -> Response:
    runtime, client = _runtime(request), client_of(request)
    return _preferences(
        request,
        token,
        lambda: readers.undo_unsubscribe(runtime, token, client=client),
        "Done: you're still subscribed.",
    )


@router.post("/p/{token}/data")
def download(request: Request, token: str) -> Response:
    data = _attempt(request, lambda: readers.export_data(_runtime(request), token))
    if isinstance(data, Response):
        return data
    return Response(
        data,
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-newsletter-data.json"'},
    )


@router.get("/p/{token}/erase", response_class=HTMLResponse)
def erase_page(request: Request, token: str) -> Response:
    view = _attempt(request, lambda: readers.preferences_page(_runtime(request), token))
    if isinstance(view, Response):
        return view
    return _page(request, "erase.html", view=view, base=f"/p/{token}", done=False)


@router.post("/p/{token}/erase", response_class=HTMLResponse)
def erase(request: Request, token: str, confirm: Annotated[str, Form()] = "") -> Response:
    runtime = _runtime(request)
    if confirm != "erase":
        return erase_page(request, token)
    done = _attempt(request, lambda: readers.erase(runtime, token))
    if isinstance(done, Response):
        return done
    log.info("subscriber.erased_by_reader")
    return _page(request, "erase.html", view=None, base="", done=True)


# -- editions on the web --------------------------------------------------------------


@router.get("/e/{token}", response_class=HTMLResponse)
async def edition_web(request: Request, token: str) -> Response:
    # On the event loop: one read by key on Runtime.point_reads, as GET /u/<token>.
    edition = _attempt(request, lambda: readers.edition_web(_runtime(request), token))
    if isinstance(edition, Response):
        return edition
    return HTMLResponse(edition.html, headers=EDITION_WEB_HEADERS)


@router.get("/archive/{slug}", response_class=HTMLResponse)
def archive(request: Request, slug: str) -> Response:
    view = _attempt(request, lambda: readers.archive(_runtime(request), slug))
    if isinstance(view, Response):
        return view
    return _page(request, "archive.html", view=view)
