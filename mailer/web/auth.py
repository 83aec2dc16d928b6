"""Who is asking: the workspace's cookie sessions, CSRF tokens, and API tokens for machines.

A session is a row in the database (``mailer.app.accounts``); the cookie carries its
signed identifier only. Every request looks the session up again, so a disabled account
or an ended session stops working at its next request, and idle and absolute expiry are
the server's to enforce.

Every state-changing request of the workspace carries the session's CSRF token: as the
``csrf`` form field (plain forms) or the ``X-CSRF-Token`` header (htmx sends it from the
page's ``hx-headers``). The sign-in form, before any session exists, uses a double-submit
cookie instead. Cookies are HttpOnly and SameSite=Lax, and Secure when the site is https.

Machines (monitoring, scripts) read ``/status`` and the stats JSON with a push-API bearer
token instead of a session.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from mailer.accounts.models import Role
from mailer.app import accounts, credentials
from mailer.app.accounts import SessionInfo
from mailer.app.actors import Actor
from mailer.app.errors import AuthenticationFailed, Invalid, Throttled
from mailer.runtime import Runtime
from mailer.web.limits import FormRefused, read_form

# SessionInfo is re-exported: routes name it auth.SessionInfo.
__all__ = ["Admin", "Editor", "Reader", "Session", "SessionInfo", "SignInRequired"]

SESSION_COOKIE = "mailer_session"
SIGNIN_CSRF_COOKIE = "mailer_signin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SignInRequired(Exception):
    """No valid session: pages redirect to the sign-in page, fragments and JSON get 401."""


class Forbidden(Exception):
    """Signed in, but the role does not allow it, or the CSRF token is missing or wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def secure_cookies(runtime: Runtime) -> bool:
    return runtime.settings.base_url.startswith("https://")


def set_session_cookie(
    response: Response, runtime: Runtime, ticket: accounts.SessionTicket
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        ticket.cookie_value,
        max_age=runtime.settings.session_max_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(runtime),
        path="/",
    )


def clear_session_cookie(response: Response, runtime: Runtime) -> None:
    response.delete_cookie(
        SESSION_COOKIE, httponly=True, samesite="lax", secure=secure_cookies(runtime), path="/"
    )


def sign_in_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/signin?next={quote(target, safe='')}"


async def _session(request: Request) -> SessionInfo | None:
    cached = getattr(request.state, "session_info", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    info = await run_in_threadpool(accounts.resolve_session, runtime_of(request), cookie)
    request.state.session_info = info
    return info


async def _check_csrf(request: Request, expected: str) -> None:
    if request.method in SAFE_METHODS:
        return
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            try:
                form = await read_form(request)
            except FormRefused as exc:
                raise Invalid(str(exc)) from None
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("the form was out of date or not sent from this site: reload and retry")


async def signed_in(request: Request) -> SessionInfo:
    """Any account; state-changing requests must carry the session's CSRF token."""
    info = await _session(request)
    if info is None:
        raise SignInRequired
    await _check_csrf(request, info.csrf_token)
    return info


async def editor(info: Annotated[SessionInfo, Depends(signed_in)]) -> SessionInfo:
    return info


async def admin(info: Annotated[SessionInfo, Depends(signed_in)]) -> SessionInfo:
    if info.account.role != Role.ADMIN:
        raise Forbidden("this page is for administrators")
    return info


Session = Annotated[SessionInfo, Depends(signed_in)]
Editor = Annotated[SessionInfo, Depends(editor)]
Admin = Annotated[SessionInfo, Depends(admin)]


async def reader(request: Request) -> Actor:
    """A signed-in account, or a machine with a push-API bearer token (read-only views);
    tokens are throttled per client (``mailer.app.credentials``: 429 while one waits)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        try:
            await run_in_threadpool(
                credentials.api_token_source, runtime_of(request), token.strip(), client_of(request)
            )
        except Throttled:
            raise
        except AuthenticationFailed:
            raise SignInRequired from None
        return Actor.system("api-token")
    info = await _session(request)
    if info is None:
        raise SignInRequired
    return info.actor


Reader = Annotated[Actor, Depends(reader)]


def new_sign_in_token() -> str:
    return secrets.token_urlsafe(24)


def sign_in_csrf_ok(request: Request, given: str | None) -> bool:
    expected = request.cookies.get(SIGNIN_CSRF_COOKIE)
    return bool(expected and given and hmac.compare_digest(expected.encode(), given.encode()))
