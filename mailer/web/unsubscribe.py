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

import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from mailer.db.session import one_writer, transaction
from mailer.runtime import Runtime
from mailer.web.limits import FormRefused, read_form
from subscribers.tokens import Keys, TokenError, verify_unsubscribe
from subscribers.unsubscribe import (
    UnknownRecipient,
    UnsubscribeResult,
    resolve,
)
from subscribers.unsubscribe import unsubscribe as end_subscriptions

log = logging.getLogger(__name__)
router = APIRouter()


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _page(request: Request, name: str, status: int = 200, **context: object) -> HTMLResponse:
    response: HTMLResponse = request.app.state.pages.TemplateResponse(
        request, name, context, status_code=status
    )
    return response


def mask(email: str) -> str:
    """Enough of the address to recognise, not enough to harvest from a forwarded link."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'•' * min(max(len(local) - 1, 1), 6)}@{domain}"


def _invalid(request: Request, reason: str) -> HTMLResponse:
    return _page(request, "link_invalid.html", status=400, reason=reason)


@router.get("/u/{token}", response_class=HTMLResponse)
def confirm_page(request: Request, token: str) -> HTMLResponse:
    runtime = _runtime(request)
    key = runtime.settings.require_secret_keys()
    with runtime.sessions() as session:
        try:
            target = resolve(session, key, token)
        except TokenError as exc:
            return _invalid(request, str(exc))
        except UnknownRecipient as exc:
            return _page(request, "link_invalid.html", status=404, reason=str(exc))
        return _page(
            request,
            "unsubscribe.html",
            newsletter=target.newsletter_name,
            email=mask(target.subscriber.email),
            action=f"/u/{token}",
        )


def _leave(runtime: Runtime, key: Keys, token: str, source: str) -> tuple[UnsubscribeResult, str]:
    # One resolve (the link's reader, edition, newsletter and lists), then the change;
    # on SQLite this process's short writes take turns rather than sleep on the lock.
    with one_writer(runtime.engine), transaction(runtime.sessions) as session:
        target = resolve(session, key, token)
        result = end_subscriptions(
            session,
            target.subscriber,
            target.list_ids,
            source=source,
            edition_id=target.edition_id,
        )
        return result, target.newsletter_name


@router.post("/u/{token}", response_class=HTMLResponse)
async def unsubscribe(request: Request, token: str) -> HTMLResponse:
    runtime = _runtime(request)
    key = runtime.settings.require_secret_keys()
    try:
        # Before the body: an anonymous caller with a made-up link costs us nothing more.
        verify_unsubscribe(key, token)
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
        # Blocking database work goes to a worker thread: on the event loop, one request
        # waiting for SQLite's write lock (up to its 30 s timeout) would stall every other.
        result, newsletter = await run_in_threadpool(_leave, runtime, key, token, source)
    except TokenError as exc:
        return _invalid(request, str(exc))
    except UnknownRecipient as exc:
        return _page(request, "link_invalid.html", status=404, reason=str(exc))
    log.info("subscriber.unsubscribed", extra={"source": source, "changed": result.changed})
    return _page(
        request,
        "unsubscribed.html",
        newsletter=newsletter,
        email=mask(result.email),
        changed=result.changed,
        # The same token opens the preference page, and undoes this from there.
        preferences=f"/p/{token}",
    )
