"""The unsubscribe link from every email, and RFC 8058 one-click requests to it.

GET shows a page with one button and changes nothing, because link scanners
and previewers fetch URLs. POST unsubscribes, whether from that button or
from a mailbox provider's one-click request: no cookies needed, no redirect,
200, and repeating it is harmless.

A POST's token is checked before its body is read, and the body must say what RFC 8058
asks of a one-click request, ``List-Unsubscribe=One-Click`` (urlencoded or multipart,
no file parts, a few KB at most), or come from the page's own button (``via=page``).
Anything else (an empty body, JSON) is refused and changes nothing: a POST that did
not come from a mailbox provider's button or ours is not a reader's choice.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mailer.app import readers
from mailer.app.errors import NotFound
from mailer.runtime import Runtime
from mailer.web.limits import FormRefused, read_form
from subscribers.tokens import TokenError, verify_unsubscribe

router = APIRouter()


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _page(request: Request, name: str, status: int = 200, **context: object) -> HTMLResponse:
    response: HTMLResponse = request.app.state.pages.TemplateResponse(
        request, name, context, status_code=status
    )
    return response


def _invalid(request: Request, reason: str) -> HTMLResponse:
    return _page(request, "link_invalid.html", status=400, reason=reason)


@router.get("/u/{token}", response_class=HTMLResponse)
async def confirm_page(request: Request, token: str) -> HTMLResponse:
    # On the event loop, not a worker thread: one read by key on a connection of its
    # own that gives up within a second (Runtime.point_reads), which costs less here
    # than the hand-off to a thread and back did.
    try:
        view = readers.unsubscribe_link(_runtime(request), token)
    except TokenError as exc:
        return _invalid(request, str(exc))
    except NotFound as exc:
        return _page(request, "link_invalid.html", status=404, reason=exc.message)
    return _page(
        request,
        "unsubscribe.html",
        newsletter=view.newsletter,
        email=view.email,
        action=f"/u/{token}",
    )


@router.post("/u/{token}", response_class=HTMLResponse)
async def unsubscribe(request: Request, token: str) -> HTMLResponse:
    runtime = _runtime(request)
    try:
        # Before the body: an anonymous caller with a made-up link costs us nothing more.
        verify_unsubscribe(runtime.settings.require_secret_keys(), token)
    except TokenError as exc:
        return _invalid(request, str(exc))
    try:
        form = await read_form(request)
    except FormRefused:
        return _invalid(request, "the request was not a form we accept")
    # Our own button says so; a mailbox provider posts only List-Unsubscribe=One-Click.
    source = "link" if form.get("via") == "page" else "one-click"
    if source == "one-click" and form.get("List-Unsubscribe") != "One-Click":
        return _invalid(
            request, "the request did not ask to unsubscribe (List-Unsubscribe=One-Click)"
        )
    try:
        # Written with the other requests of this moment by the process's writer thread
        # (the loop never waits for a database lock), and answered once committed.
        view = await asyncio.wrap_future(readers.unsubscribe(runtime, token, source=source))
    except TokenError as exc:
        return _invalid(request, str(exc))
    except NotFound as exc:
        return _page(request, "link_invalid.html", status=404, reason=exc.message)
    return _page(
        request,
        "unsubscribed.html",
        newsletter=view.newsletter,
        email=view.email,
        changed=view.changed,
        # The same token opens the preference page, and undoes this from there.
        preferences=f"/p/{token}",
    )
