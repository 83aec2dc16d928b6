"""Signing in and out, and the one-time links that let a new account choose a password."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mailer.app import accounts
from mailer.app.errors import AuthenticationFailed, Invalid, Throttled
from mailer.web import auth
from mailer.web.views import duration, page

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to another one."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _form_page(
    request: Request, name: str, context: dict[str, object], status: int = 200
) -> HTMLResponse:
    # A fresh double-submit token for the form: there is no session to hold one yet.
    token = request.cookies.get(auth.SIGNIN_CSRF_COOKIE) or auth.new_sign_in_token()
    response = page(request, name, {**context, "signin_csrf": token}, status)
    response.set_cookie(
        auth.SIGNIN_CSRF_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=auth.secure_cookies(auth.runtime_of(request)),
        path="/signin",
    )
    return response


def _signed_in(request: Request, account_id: int, target: str) -> Response:
    runtime = auth.runtime_of(request)
    ticket = accounts.open_session(
        runtime, account_id, auth.client_of(request), request.headers.get("user-agent", "")[:300]
    )
    response = RedirectResponse(_safe_next(target), status_code=303)
    auth.set_session_cookie(response, runtime, ticket)
    response.delete_cookie(auth.SIGNIN_CSRF_COOKIE, path="/signin")
    return response


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, next: str = "/") -> HTMLResponse:
    return _form_page(
        request, "workspace/signin.html", {"next": _safe_next(next), "email": "", "problem": None}
    )


@router.post("/signin")
def signin(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    context: dict[str, object] = {"next": _safe_next(next), "email": email}
    if not auth.sign_in_csrf_ok(request, csrf):
        context["problem"] = "The form had expired. Please sign in again."
        return _form_page(request, "workspace/signin.html", context, 400)
    try:
        account = accounts.authenticate(
            auth.runtime_of(request), email, password, auth.client_of(request)
        )
    except Throttled as exc:
        context["problem"] = (
            f"Too many failed attempts. Try again {('in ' + duration(exc.retry_after))}."
        )
        response = _form_page(request, "workspace/signin.html", context, 429)
        response.headers["Retry-After"] = str(max(1, int(exc.retry_after)))
        return response
    except AuthenticationFailed as exc:
        context["problem"] = exc.message
        return _form_page(request, "workspace/signin.html", context, 401)
    return _signed_in(request, account.id, next)


@router.post("/signout")
async def signout(request: Request, _info: auth.Session) -> Response:
    runtime = auth.runtime_of(request)
    cookie = request.cookies.get(auth.SESSION_COOKIE, "")
    await run_in_threadpool(accounts.close_session, runtime, cookie)
    response = RedirectResponse("/signin", status_code=303)
    auth.clear_session_cookie(response, runtime)
    return response


@router.get("/signin/link/{token}", response_class=HTMLResponse)
def link_page(request: Request, token: str) -> HTMLResponse:
    try:
        email: str | None = accounts.check_sign_in_link(auth.runtime_of(request), token)
        problem = None
    except AuthenticationFailed as exc:
        email, problem = None, exc.message
    return _form_page(
        request,
        "workspace/set_password.html",
        {"email": email, "token": token, "problem": problem},
        200 if email else 400,
    )


@router.post("/signin/link/{token}")
def redeem_link(
    request: Request,
    token: str,
    password: Annotated[str, Form(max_length=1024)] = "",
    confirm: Annotated[str, Form(max_length=1024)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    runtime = auth.runtime_of(request)
    context: dict[str, object] = {"token": token}
    try:
        context["email"] = accounts.check_sign_in_link(runtime, token)
    except AuthenticationFailed as exc:
        context.update(email=None, problem=exc.message)
        return _form_page(request, "workspace/set_password.html", context, 400)
    if not auth.sign_in_csrf_ok(request, csrf):
        context["problem"] = "The form had expired. Please try again."
        return _form_page(request, "workspace/set_password.html", context, 400)
    if password != confirm:
        context["problem"] = "The two passwords differ."
        return _form_page(request, "workspace/set_password.html", context, 422)
    try:
        account = accounts.redeem_sign_in_link(runtime, token, password, auth.client_of(request))
    except Invalid as exc:
        context["problem"] = exc.message
        return _form_page(request, "workspace/set_password.html", context, 422)
    except AuthenticationFailed as exc:
        context.update(email=None, problem=exc.message)
        return _form_page(request, "workspace/set_password.html", context, 400)
    return _signed_in(request, account.id, "/")
